"""General verl pre-flight checks: what verl would refuse (or silently mis-run) only on the GPUs.

Nothing here is specific to GRPO-λ. :func:`preflight` reads the composed ``main_ppo`` config
(FSDP or Megatron) with typed reads — a count that is not a whole number ≥ 1, a switch that is not
a boolean, a dual-clip bound ≤ 1 is one :class:`~verl_lambda.cli.LaunchError` line naming the key —
then checks that sizes fit together: parallel sizes that divide the GPUs, dynamic-batch token
budgets above the longest sequence, a reward function that exists; :func:`check_local_files` then
checks a local model's context and (outside a dry run) the local data files. :func:`preflight`
returns the numbers of the run (:class:`RunShape`) for the launcher's summary.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from verl_lambda.cli import LaunchError

__all__ = ["RunShape", "preflight", "check_local_files"]

_MISSING = object()


class _Reader:
    """Typed reads of a composed config; a wrong type or range is one LaunchError line."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def raw(self, key: str, default: Any = None) -> Any:
        return OmegaConf.select(self.cfg, key, default=default)

    def count(self, key: str, minimum: int = 1, optional: bool = False, default: Any = _MISSING) -> int | None:
        value = self.raw(key, None if default is _MISSING else default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise LaunchError(f"{key} must be a whole number ≥ {minimum}, got {value!r}: set {key}=<number>")
        return value

    def number(
        self, key: str, above: float | None = None, at_least: float | None = None, below: float | None = None
    ) -> float | None:
        value = self.raw(key)
        if value is None:
            return None
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and value == value
        bounds = []
        if above is not None:
            ok, bounds = ok and value > above, [*bounds, f"> {above:g}"]
        if at_least is not None:
            ok, bounds = ok and value >= at_least, [*bounds, f"≥ {at_least:g}"]
        if below is not None:
            ok, bounds = ok and value < below, [*bounds, f"< {below:g}"]
        if not ok:
            raise LaunchError(f"{key} must be a number {' and '.join(bounds) or 'real'}, got {value!r}")
        return float(value)

    def switch(self, key: str, default: bool = False) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise LaunchError(f"{key} must be true or false, got {value!r} (write it unquoted: {key}=false)")
        return value


@dataclass
class RunShape:
    """The batch, length and parallel numbers of a run, as checked."""

    nodes: int
    gpus_per_node: int
    prompts: int
    n: int
    mini_batch: int
    epochs: int
    prompt_length: int
    response_length: int
    strategy: str
    sequence_split: int
    megatron_tp: int = 1
    megatron_pp: int = 1
    rollout_tp: int = 1
    dynamic_batch: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def longest(self) -> int:
        return self.prompt_length + self.response_length


def _strategy(r: _Reader) -> str:
    return str(r.raw("actor_rollout_ref.actor.strategy", "fsdp"))


def _sequence_split_key(strategy: str, role: str) -> str:
    """The key of how many ranks share one sequence: Ulysses SP for FSDP, CP for Megatron."""
    if strategy == "megatron":
        return f"actor_rollout_ref.{role}.megatron.context_parallel_size"
    return f"actor_rollout_ref.{role}.ulysses_sequence_parallel_size"


def _read_shape(r: _Reader) -> RunShape:
    strategy = _strategy(r)
    split_key = _sequence_split_key(strategy, "actor")
    shape = RunShape(
        nodes=r.count("trainer.nnodes"),
        gpus_per_node=r.count("trainer.n_gpus_per_node"),
        prompts=r.count("data.train_batch_size"),
        n=r.count("actor_rollout_ref.rollout.n"),
        mini_batch=r.count("actor_rollout_ref.actor.ppo_mini_batch_size"),
        epochs=r.count("actor_rollout_ref.actor.ppo_epochs", default=1),
        prompt_length=r.count("data.max_prompt_length"),
        response_length=r.count("data.max_response_length"),
        strategy=strategy,
        sequence_split=r.count(split_key, default=1),
        rollout_tp=r.count("actor_rollout_ref.rollout.tensor_model_parallel_size", default=1),
        dynamic_batch=r.switch("actor_rollout_ref.actor.use_dynamic_bsz"),
    )
    if strategy == "megatron":
        shape.megatron_tp = r.count("actor_rollout_ref.actor.megatron.tensor_model_parallel_size", default=1)
        shape.megatron_pp = r.count("actor_rollout_ref.actor.megatron.pipeline_model_parallel_size", default=1)
    for key in (
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    ):
        r.count(key, optional=True)
    for key in ("actor_rollout_ref.actor.use_kl_loss", "algorithm.use_kl_in_reward", "trainer.val_only"):
        r.switch(key)
    r.switch("algorithm.norm_adv_by_std_in_grpo", default=True)
    # the ratio's floor 1 − clip_ratio_low must stay above 0; its ceiling 1 + clip_ratio_high above 1
    for key in ("actor_rollout_ref.actor.clip_ratio", "actor_rollout_ref.actor.clip_ratio_low"):
        r.number(key, at_least=0.0, below=1.0)
    r.number("actor_rollout_ref.actor.clip_ratio_high", at_least=0.0)
    r.number("actor_rollout_ref.actor.clip_ratio_c", above=1.0)
    if shape.prompts % shape.mini_batch:
        shape.warnings.append(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={shape.mini_batch} does not divide data.train_batch_size="
            f"{shape.prompts}: {shape.prompts / shape.mini_batch:.2f} updates per step, the last one on "
            f"{shape.prompts % shape.mini_batch} prompts; use a divisor"
        )
    return shape


def _check_parallel_sizes(r: _Reader, shape: RunShape) -> None:
    n_gpus = shape.gpus
    if shape.strategy == "megatron":
        tp, pp, cp = shape.megatron_tp, shape.megatron_pp, shape.sequence_split
        if n_gpus % (tp * pp * cp):
            raise LaunchError(
                f"trainer.nnodes x trainer.n_gpus_per_node = {n_gpus} GPUs is not a multiple of Megatron's "
                f"TP x PP x CP = {tp} x {pp} x {cp}: change actor_rollout_ref.actor.megatron.*_parallel_size or "
                "the GPU count"
            )
    elif n_gpus % shape.sequence_split:
        raise LaunchError(
            f"{n_gpus} GPUs cannot be split into Ulysses groups of actor_rollout_ref.actor."
            f"ulysses_sequence_parallel_size={shape.sequence_split}: use a divisor of the GPU count"
        )
    if n_gpus % shape.rollout_tp:
        raise LaunchError(
            f"{n_gpus} GPUs cannot hold whole rollout replicas of actor_rollout_ref.rollout.tensor_model_parallel_size="
            f"{shape.rollout_tp}: use a divisor of the GPU count"
        )


def _check_token_budgets(r: _Reader, shape: RunShape, uses_ref: bool) -> None:
    rollout_dynamic = r.switch("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz")
    if shape.dynamic_batch != rollout_dynamic:
        raise LaunchError(
            f"actor_rollout_ref.actor.use_dynamic_bsz={shape.dynamic_batch} but actor_rollout_ref.rollout."
            f"log_prob_use_dynamic_bsz={rollout_dynamic}: verl's actor worker needs both equal"
        )
    split_actor_key = _sequence_split_key(shape.strategy, "actor")
    budgets = []
    if shape.dynamic_batch:
        budgets += [
            ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", shape.sequence_split, split_actor_key),
            ("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", shape.sequence_split, split_actor_key),
        ]
    if uses_ref and r.switch("actor_rollout_ref.ref.log_prob_use_dynamic_bsz"):
        split_ref_key = _sequence_split_key(shape.strategy, "ref")
        budgets.append(
            ("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", r.count(split_ref_key, default=1), split_ref_key)
        )
    for key, split, split_key in budgets:
        budget = r.count(key)
        if budget * split < shape.longest:
            raise LaunchError(
                f"{key}={budget} x {split_key.rsplit('.', 1)[1]}={split} is below the longest sequence, "
                f"data.max_prompt_length + data.max_response_length = {shape.longest}: raise it to at least "
                f"{shape.longest}"
            )


def _check_reward_function(r: _Reader) -> None:
    path = r.raw("reward.custom_reward_function.path")
    name = r.raw("reward.custom_reward_function.name")
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


def _check_data_files(r: _Reader, dry_run: bool, shape: RunShape) -> None:
    for key in ("data.train_files", "data.val_files"):
        local = [p for p in _paths(r.raw(key)) if "://" not in p]
        missing = [p for p in local if not os.path.exists(os.path.expanduser(p))]
        if not missing:
            continue
        sets = " ".join(dict.fromkeys(Path(p).stem for p in missing))
        folder = os.path.dirname(os.path.expanduser(missing[0])) or "."
        message = (
            f"{key}: {missing[0]} does not exist" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f': prepare it with DATASETS="{sets}" DATA_DIR={folder} bash recipes/prepare_data.sh '
            "(python -m verl_lambda.math.data --list names the sets), or point DATA_DIR / data.*_files at it"
        )  # fmt: skip
        if not dry_run:
            raise LaunchError(message)
        shape.warnings.append(message)


def _context_length(model_config: Mapping[str, Any]) -> int | None:
    for node in (model_config, model_config.get("text_config") or {}):
        if node.get("rope_scaling"):
            return None  # extended context: leave it to the model
        if node.get("max_position_embeddings"):
            return int(node["max_position_embeddings"])
    return None


def _check_model(r: _Reader, dry_run: bool, shape: RunShape) -> None:
    path = str(r.raw("actor_rollout_ref.model.path", ""))
    config_file = os.path.join(os.path.expanduser(path), "config.json")
    if os.path.isfile(config_file):
        try:
            with open(config_file) as f:
                context = _context_length(json.load(f))
        except (OSError, ValueError, AttributeError) as err:
            raise LaunchError(f"actor_rollout_ref.model.path={path}: cannot read {config_file} ({err})") from None
        if context is not None and shape.longest > context:
            raise LaunchError(
                f"data.max_prompt_length + data.max_response_length = {shape.longest} exceeds the model's context of "
                f"{context} tokens ({config_file}): shorten data.max_response_length"
            )
    elif path.startswith(("/", "~", "./", "../")):
        message = f"actor_rollout_ref.model.path={path} does not exist on this machine"
        if not dry_run:
            raise LaunchError(message + ": download the model or fix MODEL_PATH")
        shape.warnings.append(message)


def preflight(cfg: DictConfig) -> RunShape:
    """Check the values and sizes of a composed ``main_ppo`` config for what verl would refuse
    late (nothing on disk is looked at); returns its :class:`RunShape`."""
    from verl.trainer.ppo.utils import need_reference_policy

    r = _Reader(cfg)
    shape = _read_shape(r)
    _check_parallel_sizes(r, shape)
    _check_token_budgets(r, shape, uses_ref=need_reference_policy(cfg))
    _check_reward_function(r)
    return shape


def _check_engine_installed(shape: RunShape, dry_run: bool) -> None:
    if shape.strategy != "megatron":
        return
    try:
        found = importlib.util.find_spec("megatron.core") is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return
    message = (
        "actor_rollout_ref.actor.strategy=megatron needs megatron-core in this environment (and on every node): "
        "pip install 'verl-lambda[megatron]' (the versions verl-lambda smoke runs on a CPU) or your cluster's "
        "megatron-core"
    )
    if not dry_run:
        raise LaunchError(message)
    shape.warnings.append(message)


def check_local_files(cfg: DictConfig, shape: RunShape, dry_run: bool = False) -> None:
    """The local model (its context holds prompt + response), the data files and the Megatron engine's
    package; with ``dry_run``, a missing one is a warning (in ``shape.warnings``) instead of an error."""
    r = _Reader(cfg)
    _check_model(r, dry_run, shape)
    _check_data_files(r, dry_run, shape)
    _check_engine_installed(shape, dry_run)
