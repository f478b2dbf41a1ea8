"""Whole-config checks for a verl run, done on the driver before Ray starts.

:func:`check_launch` takes the composed OmegaConf config of ``verl.trainer.main_ppo`` (FSDP or
Megatron) and raises :class:`LaunchError` with one line that says what to change when

* the ``grpo_lambda`` estimator and the ``grpo_lambda`` loss are not switched on together, or the
  loss lacks its config class (``policy_loss._target_``);
* ``algorithm.rollout_correction.bypass_mode`` is on (it replaces the policy loss / old log-probs);
* a GRPO-λ value is out of range (checked by :class:`~verl_lambda.config.GRPOLambdaLossConfig` and
  :func:`~verl_lambda.config.estimator_settings`), or ``rollout.n`` < 2;
* a setting verl would only reject on the GPUs: a dynamic-batch token budget below the longest
  sequence, Megatron/rollout parallel sizes that do not divide the GPUs, a reward function that
  cannot be found, a local model whose context is shorter than prompt + response, or (outside a
  dry run) missing local data files.

:func:`summary_lines` renders the resolved GRPO-λ settings and the effective batch and length
numbers.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from verl_lambda.config import (
    ESTIMATOR_NAME,
    LOSS_CONFIG_PATH,
    LOSS_NAME,
    TARGET,
    EstimatorSettings,
    GRPOLambdaLossConfig,
    estimator_settings,
)

__all__ = [
    "LaunchError",
    "LaunchReport",
    "REGISTER_MODULE",
    "REGISTRATION_KEY",
    "check_launch",
    "registration_override",
    "worker_modules",
    "summary_lines",
    "one_line",
]

REGISTER_MODULE = "verl_lambda.register"
REGISTRATION_KEY = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"
_GRPO_LAMBDA_SWITCHES = (
    f"algorithm.adv_estimator={ESTIMATOR_NAME} {LOSS_CONFIG_PATH}._target_={TARGET} "
    f"{LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME}"
)


class LaunchError(ValueError):
    """A config that must not start; the message is one line that says what to change."""


@dataclass
class LaunchReport:
    """What :func:`check_launch` found."""

    grpo_lambda: bool
    loss: Optional[GRPOLambdaLossConfig] = None
    estimator: Optional[EstimatorSettings] = None
    warnings: list[str] = field(default_factory=list)


def one_line(err: BaseException) -> str:
    """An exception as one line; Hydra's instantiation errors show the dataclass's own message."""
    while err.__cause__ is not None and type(err).__name__ == "InstantiationException":
        err = err.__cause__
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


_ENV_REFERENCE = re.compile(r"^\\?\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _module_list(text: Optional[str], environ: Mapping[str, str]) -> list[str]:
    """Module names of a comma list; a ``${VAR}`` item (Ray's syntax) is replaced by ``environ[VAR]``'s list."""
    modules = []
    for item in (text or "").split(","):
        item = item.strip()
        reference = _ENV_REFERENCE.match(item)
        if reference:
            modules += _module_list(environ.get(reference.group(1), ""), {})
        elif item:
            modules.append(item)
    return modules


def worker_modules(cfg: DictConfig, environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """Modules every Ray worker must import, each once, in this order: those of the driver's
    ``VERL_USE_EXTERNAL_MODULES``, those the command line puts into the Ray runtime env, and
    ``verl_lambda.register``.

    A runtime-env ``env_vars`` entry *replaces* the variable a worker would inherit, so the value
    handed to verl must carry the driver's modules too.
    """
    environ = os.environ if environ is None else environ
    node = OmegaConf.select(cfg, REGISTRATION_KEY.rsplit(".", 1)[0], default=None)
    raw = None if node is None else OmegaConf.to_container(node, resolve=False).get(REGISTRATION_KEY.rsplit(".", 1)[1])
    listed = _module_list(environ.get("VERL_USE_EXTERNAL_MODULES"), {}) + _module_list(
        None if raw is None else str(raw), environ
    )
    return list(dict.fromkeys([*listed, REGISTER_MODULE]))


def registration_override(cfg: DictConfig, environ: Optional[Mapping[str, str]] = None) -> str:
    """The override that sets the Ray workers' ``VERL_USE_EXTERNAL_MODULES`` to :func:`worker_modules`."""
    return f"++{REGISTRATION_KEY}='{','.join(worker_modules(cfg, environ))}'"


# ----------------------------------------------------------------------------------------------
# GRPO-λ


def _check_pairing(cfg: DictConfig) -> bool:
    estimator = _get(cfg, "algorithm.adv_estimator")
    loss_mode = _get(cfg, f"{LOSS_CONFIG_PATH}.loss_mode", "vanilla")
    target = _get(cfg, f"{LOSS_CONFIG_PATH}._target_")
    uses_estimator = estimator == ESTIMATOR_NAME
    uses_loss = loss_mode == LOSS_NAME or target == TARGET
    if not uses_estimator and not uses_loss:
        if _get(cfg, "algorithm.grpo_lambda") is not None:
            raise LaunchError(
                f"algorithm.grpo_lambda is set but algorithm.adv_estimator is '{estimator}', which ignores it: "
                f"set algorithm.adv_estimator={ESTIMATOR_NAME} (with the GRPO-λ loss) or drop +algorithm.grpo_lambda"
            )
        return False
    if uses_estimator and not uses_loss:
        raise LaunchError(
            f"algorithm.adv_estimator={ESTIMATOR_NAME} needs the GRPO-λ loss, got {LOSS_CONFIG_PATH}.loss_mode="
            f"'{loss_mode}': set {LOSS_CONFIG_PATH}._target_={TARGET} {LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} "
            f"(for the clamp alone keep the pair and set +{LOSS_CONFIG_PATH}.lam=0)"
        )
    if uses_loss and not uses_estimator:
        raise LaunchError(
            f"{LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} needs algorithm.adv_estimator={ESTIMATOR_NAME}, got "
            f"'{estimator}': set algorithm.adv_estimator={ESTIMATOR_NAME} (for GRPO's unclamped advantages "
            "add +algorithm.grpo_lambda.adv_clamp=null)"
        )
    if target != TARGET:
        raise LaunchError(
            f"{LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} needs its config class: set {LOSS_CONFIG_PATH}._target_={TARGET}"
        )
    return True


def _check_grpo_lambda(cfg: DictConfig, report: LaunchReport) -> None:
    if _get(cfg, "algorithm.rollout_correction.bypass_mode", False):
        raise LaunchError(
            "algorithm.rollout_correction.bypass_mode=true cannot run GRPO-λ: it swaps the policy loss for "
            "'bypass_mode' (legacy trainer) and takes old log-probs from the rollout engine; set "
            "algorithm.rollout_correction.bypass_mode=false"
        )
    from verl.utils.config import omega_conf_to_dataclass

    try:  # the same conversion verl's validate_config and the actor workers do
        report.loss = omega_conf_to_dataclass(_get(cfg, LOSS_CONFIG_PATH))
    except Exception as err:  # Hydra wraps the dataclass's ValueError; show that line
        message = one_line(err)
        raise LaunchError(message if message.startswith(LOSS_CONFIG_PATH) else f"{LOSS_CONFIG_PATH}: {message}") from None
    try:
        report.estimator = estimator_settings(cfg.algorithm)
    except ValueError as err:
        raise LaunchError(one_line(err)) from None
    n = _get(cfg, "actor_rollout_ref.rollout.n", 1)
    if n < 2:
        raise LaunchError(
            f"actor_rollout_ref.rollout.n={n}: GRPO-λ normalises rewards within each prompt's group of responses, "
            "set actor_rollout_ref.rollout.n to 2 or more (the recipes use 8)"
        )


# ----------------------------------------------------------------------------------------------
# Settings verl itself would reject only once the GPUs are busy


def _strategy(cfg: DictConfig) -> str:
    return str(_get(cfg, "actor_rollout_ref.actor.strategy", "fsdp"))


def _sequence_split(cfg: DictConfig, role: str) -> tuple[int, str]:
    """How many ranks share one sequence (Ulysses SP for FSDP, CP for Megatron) and its key."""
    if _strategy(cfg) == "megatron":
        key = f"actor_rollout_ref.{role}.megatron.context_parallel_size"
    else:
        key = f"actor_rollout_ref.{role}.ulysses_sequence_parallel_size"
    return int(_get(cfg, key, 1) or 1), key


def _check_parallel_sizes(cfg: DictConfig) -> None:
    n_gpus = int(_get(cfg, "trainer.n_gpus_per_node")) * int(_get(cfg, "trainer.nnodes"))
    if _strategy(cfg) == "megatron":
        sizes = {
            k: int(_get(cfg, f"actor_rollout_ref.actor.megatron.{k}", 1) or 1)
            for k in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size")
        }
        model_parallel = sizes["tensor_model_parallel_size"] * sizes["pipeline_model_parallel_size"]
        if n_gpus % (model_parallel * sizes["context_parallel_size"]):
            raise LaunchError(
                f"trainer.nnodes x trainer.n_gpus_per_node = {n_gpus} GPUs is not a multiple of Megatron's "
                f"TP x PP x CP = {sizes['tensor_model_parallel_size']} x {sizes['pipeline_model_parallel_size']} x "
                f"{sizes['context_parallel_size']}: change actor_rollout_ref.actor.megatron.*_parallel_size or the GPU count"
            )
    rollout_tp = int(_get(cfg, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1) or 1)
    if n_gpus % rollout_tp:
        raise LaunchError(
            f"{n_gpus} GPUs cannot hold whole rollout replicas of actor_rollout_ref.rollout.tensor_model_parallel_size="
            f"{rollout_tp}: use a divisor of the GPU count"
        )


def _check_token_budgets(cfg: DictConfig, uses_ref: bool) -> None:
    longest = int(_get(cfg, "data.max_prompt_length")) + int(_get(cfg, "data.max_response_length"))
    actor_dynamic = bool(_get(cfg, "actor_rollout_ref.actor.use_dynamic_bsz", False))
    rollout_dynamic = bool(_get(cfg, "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", False))
    if actor_dynamic != rollout_dynamic:
        raise LaunchError(
            f"actor_rollout_ref.actor.use_dynamic_bsz={actor_dynamic} but actor_rollout_ref.rollout."
            f"log_prob_use_dynamic_bsz={rollout_dynamic}: verl's actor worker needs both equal"
        )
    budgets = []
    split_actor, split_actor_key = _sequence_split(cfg, "actor")
    if actor_dynamic:
        budgets += [
            ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", split_actor, split_actor_key),
            ("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", split_actor, split_actor_key),
        ]
    if uses_ref and _get(cfg, "actor_rollout_ref.ref.log_prob_use_dynamic_bsz", False):
        split_ref, split_ref_key = _sequence_split(cfg, "ref")
        budgets.append(("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", split_ref, split_ref_key))
    for key, split, split_key in budgets:
        budget = int(_get(cfg, key))
        if budget * split < longest:
            raise LaunchError(
                f"{key}={budget} x {split_key.rsplit('.', 1)[1]}={split} is below the longest sequence, "
                f"data.max_prompt_length + data.max_response_length = {longest}: raise it to at least {longest}"
            )


def _check_reward_function(cfg: DictConfig) -> None:
    path = _get(cfg, "reward.custom_reward_function.path")
    name = _get(cfg, "reward.custom_reward_function.name")
    if not path:
        return
    if str(path).startswith("pkg://"):
        module_name = str(path)[len("pkg://") :].replace("/", ".")
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise LaunchError(f"reward.custom_reward_function.path={path}: no module {module_name} in this environment")
        module = importlib.import_module(module_name)
        if not hasattr(module, str(name)):
            raise LaunchError(f"reward.custom_reward_function.name={name}: {module_name} has no such function")
        return
    file_path = os.path.expanduser(str(path)[len("file://") :] if str(path).startswith("file://") else str(path))
    if not os.path.isfile(file_path):
        raise LaunchError(f"reward.custom_reward_function.path={path}: file not found")


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def _is_local(path: str) -> bool:
    return "://" not in path


def _check_data_files(cfg: DictConfig, dry_run: bool, report: LaunchReport) -> None:
    for key in ("data.train_files", "data.val_files"):
        missing = [p for p in _paths(_get(cfg, key)) if _is_local(p) and not os.path.exists(os.path.expanduser(p))]
        if not missing:
            continue
        message = (
            f"{key}: {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": prepare the data (recipes/prepare_data.sh) or point DATA_DIR / data.*_files at it"
        )
        if dry_run:
            report.warnings.append(message)
        else:
            raise LaunchError(message)


def _context_length(model_config: Mapping[str, Any]) -> Optional[int]:
    for node in (model_config, model_config.get("text_config") or {}):
        if node.get("rope_scaling"):
            return None  # extended context: leave it to the model
        if node.get("max_position_embeddings"):
            return int(node["max_position_embeddings"])
    return None


def _check_model(cfg: DictConfig, dry_run: bool, report: LaunchReport) -> None:
    path = str(_get(cfg, "actor_rollout_ref.model.path", ""))
    local = os.path.expanduser(path)
    config_file = os.path.join(local, "config.json")
    if os.path.isfile(config_file):
        with open(config_file) as f:
            context = _context_length(json.load(f))
        longest = int(_get(cfg, "data.max_prompt_length")) + int(_get(cfg, "data.max_response_length"))
        if context is not None and longest > context:
            raise LaunchError(
                f"data.max_prompt_length + data.max_response_length = {longest} exceeds the model's context of "
                f"{context} tokens ({config_file}): shorten data.max_response_length"
            )
    elif path.startswith(("/", "~", "./", "../")):
        message = f"actor_rollout_ref.model.path={path} does not exist on this machine"
        if dry_run:
            report.warnings.append(message)
        else:
            raise LaunchError(message + ": download the model or fix MODEL_PATH")


def _check_job_environment(environ: Mapping[str, str], report: LaunchReport) -> None:
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in environ:
        return
    modules = [m.strip() for m in environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",")]
    if REGISTER_MODULE not in modules:
        report.warnings.append(
            "running as a Ray job without VERL_USE_EXTERNAL_MODULES=verl_lambda.register in its runtime env: "
            "workers rely on the installed verl.plugins entry point (submit with --runtime-env=recipes/runtime_env.yaml)"
        )


def check_launch(cfg: DictConfig, dry_run: bool = False, environ: Optional[Mapping[str, str]] = None) -> LaunchReport:
    """Check a composed ``main_ppo`` config; raise :class:`LaunchError` (one line) if it must not start.

    Args:
        cfg: the config verl's ``main_ppo`` would receive.
        dry_run: missing local data files and model directories are warnings instead of errors.
        environ: the process environment (default ``os.environ``).
    """
    from verl.trainer.ppo.utils import need_reference_policy

    report = LaunchReport(grpo_lambda=_check_pairing(cfg))
    if report.grpo_lambda:
        _check_grpo_lambda(cfg, report)
    _check_parallel_sizes(cfg)
    _check_token_budgets(cfg, uses_ref=need_reference_policy(cfg))
    _check_reward_function(cfg)
    _check_model(cfg, dry_run, report)
    _check_data_files(cfg, dry_run, report)
    _check_job_environment(os.environ if environ is None else environ, report)
    return report


# ----------------------------------------------------------------------------------------------
# Summary


def _row(label: str, value: Any) -> str:
    return f"  {label:<52} {value}"


def summary_lines(cfg: DictConfig, report: LaunchReport) -> list[str]:
    """The resolved GRPO-λ settings and the effective batch / length numbers, one item a line."""
    lines = ["GRPO-λ settings"]
    if report.grpo_lambda and report.loss is not None and report.estimator is not None:
        loss, est = report.loss, report.estimator
        clamp = "null (no clamp)" if est.adv_clamp is None else est.adv_clamp
        horizon = "unbounded (gamma*lam = 1)" if loss.gamma * loss.lam >= 1 else f"{1 / (1 - loss.gamma * loss.lam):.0f} tokens"
        lines += [
            _row("algorithm.adv_estimator", ESTIMATOR_NAME),
            _row("algorithm.grpo_lambda.adv_clamp", clamp),
            _row("algorithm.norm_adv_by_std_in_grpo", est.norm_adv_by_std),
            _row(f"{LOSS_CONFIG_PATH}.loss_mode", loss.loss_mode),
            _row(f"{LOSS_CONFIG_PATH}.lam", loss.lam),
            _row(f"{LOSS_CONFIG_PATH}.gamma", loss.gamma),
            _row(f"{LOSS_CONFIG_PATH}.trace", loss.trace),
            _row(f"{LOSS_CONFIG_PATH}.trace_epsilon", loss.trace_epsilon),
            _row(f"{LOSS_CONFIG_PATH}.trace_norm", loss.trace_norm),
            _row("trace horizon 1/(1 - gamma*lam)", horizon),
        ]
    else:
        lines.append(
            _row(
                "off",
                f"algorithm.adv_estimator={_get(cfg, 'algorithm.adv_estimator')} "
                f"{LOSS_CONFIG_PATH}.loss_mode={_get(cfg, f'{LOSS_CONFIG_PATH}.loss_mode')}",
            )
        )
    lines.append(_row("plugin in Ray workers", f"VERL_USE_EXTERNAL_MODULES={_get(cfg, REGISTRATION_KEY)}"))

    nodes, per_node = int(_get(cfg, "trainer.nnodes")), int(_get(cfg, "trainer.n_gpus_per_node"))
    n_gpus = nodes * per_node
    prompts = int(_get(cfg, "data.train_batch_size"))
    n = int(_get(cfg, "actor_rollout_ref.rollout.n"))
    mini = int(_get(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size"))
    epochs = int(_get(cfg, "actor_rollout_ref.actor.ppo_epochs", 1))
    prompt_len, response_len = int(_get(cfg, "data.max_prompt_length")), int(_get(cfg, "data.max_response_length"))
    strategy = _strategy(cfg)
    split, split_key = _sequence_split(cfg, "actor")
    if strategy == "megatron":
        tp = int(_get(cfg, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size", 1))
        pp = int(_get(cfg, "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size", 1))
        engine = f"megatron TP {tp} x PP {pp} x CP {split} -> DP {n_gpus // (tp * pp * split)}"
    else:
        engine = f"{strategy} (Ulysses SP {split}) -> DP {n_gpus // split}"
    if _get(cfg, "actor_rollout_ref.actor.use_dynamic_bsz", False):
        micro = f"dynamic, {_get(cfg, 'actor_rollout_ref.actor.ppo_max_token_len_per_gpu')} tokens per GPU"
    else:
        micro = f"{_get(cfg, 'actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu')} responses per GPU"
    rollout_tp = int(_get(cfg, "actor_rollout_ref.rollout.tensor_model_parallel_size", 1) or 1)
    updates = f"{prompts // mini} x {epochs} epoch(s)" if prompts % mini == 0 else f"{prompts / mini:.2f} (not whole) x {epochs}"
    lines += [
        "Batch and lengths",
        _row("model", _get(cfg, "actor_rollout_ref.model.path")),
        _row("GPUs", f"{n_gpus} = {nodes} node(s) x {per_node}"),
        _row("actor engine", engine),
        _row("prompts per step (data.train_batch_size)", prompts),
        _row("responses per step (x rollout.n)", f"{prompts * n} = {prompts} x {n}"),
        _row("optimizer updates per step", f"{updates} (ppo_mini_batch_size {mini} prompts = {mini * n} responses)"),
        _row("max prompt / response / sequence tokens", f"{prompt_len} / {response_len} / {prompt_len + response_len}"),
        _row("tokens per step at most", prompts * n * (prompt_len + response_len)),
        _row("actor micro-batches", micro),
        _row("rollout", f"{_get(cfg, 'actor_rollout_ref.rollout.name')}, TP {rollout_tp} -> {n_gpus // rollout_tp} replicas, "
             f"temperature {_get(cfg, 'actor_rollout_ref.rollout.temperature')}"),
        _row(
            "validation" + (" (the whole run: trainer.val_only)" if _get(cfg, "trainer.val_only", False) else ""),
            f"{_get(cfg, 'actor_rollout_ref.rollout.val_kwargs.n')} response(s) per problem, "
            + (
                f"sampled at temperature {_get(cfg, 'actor_rollout_ref.rollout.val_kwargs.temperature')}, "
                f"top_p {_get(cfg, 'actor_rollout_ref.rollout.val_kwargs.top_p')}"
                if _get(cfg, "actor_rollout_ref.rollout.val_kwargs.do_sample", False)
                else "greedy"
            ),
        ),
    ]
    lines += [f"warning: {w}" for w in report.warnings]
    return lines
