"""What the verl version matrix tests share: the installed verl's features, Hydra, batches, a loss recorder.

Every feature is *detected* from the installed verl (its source files, or by calling it), and each one
has the value the supported versions are known to have (:func:`expected_features`). The tests use the
detected value to pick the path they exercise; ``test_verl_versions.py::test_feature_matches_the_version``
fails when the two disagree, so a new verl that drops or adds one of them is named, not skipped.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from packaging.version import Version

from verl_lambda.verl.version import FIRST_WITH_ENTRY_POINTS, loads_entry_points

REPO = Path(__file__).resolve().parents[2]
VERL_VERSION = importlib.metadata.version("verl")
VERL_ROOT = Path(importlib.util.find_spec("verl").origin).parent
VERL_CONFIG_DIR = VERL_ROOT / "trainer" / "config"

#: The GRPO-λ loss settings the tests use, stated here (not read from the package) and passed as overrides.
SETTINGS = dict(
    lam=0.95, gamma=1.0, trace="both", trace_epsilon=0.01, trace_norm="none", trace_anchor="token",
    trace_application="ratio",
)  # fmt: skip
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
ADV_CLAMP = -0.1
#: verl's aggregation modes that tests/spec_reference.py restates (seq-mean-token-sum-norm is not in the spec).
SPEC_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean")

PLUGIN_OVERRIDES = [
    "algorithm.adv_estimator=grpo_lambda",
    f"+algorithm.grpo_lambda.adv_clamp={ADV_CLAMP}",
    "actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig",
    "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
    *[f"+actor_rollout_ref.actor.policy_loss.{key}={value}" for key, value in SETTINGS.items()],
    f"actor_rollout_ref.actor.clip_ratio_low={CLIP_LOW}",
    f"actor_rollout_ref.actor.clip_ratio_high={CLIP_HIGH}",
    f"actor_rollout_ref.actor.clip_ratio_c={CLIP_C}",
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register",
    "actor_rollout_ref.model.path=/models/tiny",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    "data.train_batch_size=16",
    "trainer.n_gpus_per_node=8",
]


# ---------------------------------------------------------------------------------------------------------
# features of the installed verl


@dataclass(frozen=True)
class Feature:
    name: str
    present: bool  # detected in the installed verl
    expected: bool  # what the supported versions have (rule below)
    rule: str  # "from verl 0.9.0", "up to verl 0.7.x", "every supported verl"
    what: str  # what the feature is and where it was looked for


def _source(relative: str) -> str:
    path = VERL_ROOT / relative
    return path.read_text() if path.is_file() else ""


def _agg_loss_accepts(mode: str) -> bool:
    from verl.trainer.ppo.core_algos import agg_loss

    try:
        agg_loss(torch.ones(1, 2), torch.ones(1, 2), mode)
    except ValueError as err:
        if "loss_agg_mode" not in str(err):
            raise
        return False
    return True


def _ppo_loss_pads_nested_inputs() -> bool:
    from verl.workers.utils import losses

    return "to_padded_tensor" in inspect.getsource(losses.ppo_loss)


def detect_features(version: str | None = None) -> dict[str, Feature]:
    """Each feature the matrix adapts to: detected in the installed verl, and expected for ``version``."""
    v = Version(version or VERL_VERSION)
    since_09, since_08 = v >= Version("0.9.0"), v >= Version("0.8.0")
    init = _source("__init__.py")
    trainer_yaml = _source("trainer/config/ppo_trainer.yaml")
    rows = [
        # what the launcher believes (it refuses a Ray job without the env route where verl loads none)
        ("entry_point_loader", "verl.plugins" in init and "entry_points" in init, loads_entry_points(str(v)),
         f"from verl {FIRST_WITH_ENTRY_POINTS}",
         "verl/__init__.py loads the 'verl.plugins' entry-point group on import"),
        ("external_modules_env", "VERL_USE_EXTERNAL_MODULES" in init, True, "every supported verl",
         "verl/__init__.py imports the modules listed in VERL_USE_EXTERNAL_MODULES"),
        ("token_sum", _agg_loss_accepts("token-sum"), since_09, "from verl 0.9.0",
         "core_algos.agg_loss accepts loss_agg_mode='token-sum'"),
        ("legacy_dp_actor", (VERL_ROOT / "workers/actor/dp_actor.py").is_file(), not since_08, "up to verl 0.7.x",
         "verl/workers/actor/dp_actor.py (the legacy FSDP worker's DataParallelPPOActor) exists"),
        ("legacy_worker_switch", "use_legacy_worker_impl:" in trainer_yaml, not since_08, "up to verl 0.7.x",
         "ppo_trainer.yaml has trainer.use_legacy_worker_impl (auto: legacy fsdp/megatron workers)"),
        ("ppo_loss_nested", _ppo_loss_pads_nested_inputs(), since_08, "from verl 0.8.0",
         "workers/utils/losses.ppo_loss turns nested old_log_probs/advantages/response_mask into padded rows"),
        ("model_engine_megatron", (VERL_CONFIG_DIR / "model_engine" / "megatron.yaml").is_file(), since_08,
         "from verl 0.8.0", "the Hydra override model_engine=megatron (trainer/config/model_engine/megatron.yaml)"),
        # the Megatron paths test_megatron_paths.py runs (with megatron-core installed)
        ("megatron_legacy_actor", (VERL_ROOT / "workers/actor/megatron_actor.py").is_file(), not since_08,
         "up to verl 0.7.x", "verl/workers/actor/megatron_actor.py (the legacy Megatron worker's MegatronPPOActor)"),
        ("megatron_engine_cp", "def gptmodel_forward_model_engine(" in _source("models/mcore/model_forward.py"),
         since_08, "from verl 0.8.0",
         "models/mcore/model_forward.gptmodel_forward_model_engine (the Megatron engine's CP split / gather)"),
        ("megatron_per_token_loss",
         "calculate_per_token_loss" in _source("workers/engine/megatron/transformer_impl.py"), since_09,
         "from verl 0.9.0", "the Megatron engine's per-token loss (Megatron's calculate_per_token_loss, 3-tuple)"),
    ]  # fmt: skip
    return {name: Feature(name, present, expected, rule, what) for name, present, expected, rule, what in rows}


FEATURES = detect_features()


def has(name: str) -> bool:
    return FEATURES[name].present


def megatron_core_version() -> str | None:
    """The installed megatron-core's version, or None (the Megatron path tests skip without it)."""
    try:
        return importlib.metadata.version("megatron-core")
    except importlib.metadata.PackageNotFoundError:
        return None


def agg_modes() -> list[str]:
    """The spec's aggregation modes this verl has."""
    return [m for m in SPEC_AGG_MODES if m != "token-sum" or has("token_sum")]


def versions_line() -> str:
    names = ("verl", "torch", "transformers", "numpy", "pyarrow", "ray", "tensordict", "hydra-core", "megatron-core")
    out = []
    for name in names:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} -")
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------------------
# Hydra


def compose(overrides=(), config_name: str = "ppo_trainer"):
    """verl's own config ``config_name`` with ``overrides``, composed as ``python -m verl.trainer.main_ppo`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(VERL_CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def actor_config(extra=(), loss_agg_mode: str | None = None, mini_batch: int | None = None):
    """The actor dataclass a worker builds: ``omega_conf_to_dataclass(config.actor_rollout_ref.actor)`` of the
    composed config (plugin overrides + ``extra``); the mini-batch normalised to samples as the workers do."""
    from omegaconf import open_dict
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose([*PLUGIN_OVERRIDES, *extra])
    node = cfg.actor_rollout_ref.actor
    with open_dict(node):
        if loss_agg_mode is not None:
            node.loss_agg_mode = loss_agg_mode
        if mini_batch is not None:  # fsdp_workers: ppo_mini_batch_size *= rollout.n; //= data-parallel size (1)
            node.ppo_mini_batch_size = mini_batch * cfg.actor_rollout_ref.rollout.n
    return omega_conf_to_dataclass(node)


def error_chain(err: BaseException) -> list[BaseException]:
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ if err.__cause__ is not None or err.__suppress_context__ else err.__context__
    return out


# ---------------------------------------------------------------------------------------------------------
# batches and what verl hands the loss


def nested(tensors):
    return torch.nested.as_nested_tensor(list(tensors), layout=torch.jagged)


def padded_batch(seed: int, prompt_lens, response_lens, dtype=torch.float64, hole: bool = True) -> dict:
    """A left-right padded batch as verl's trainer holds it: prompts left-padded to P, responses right-padded
    to R; response_mask int64 with a hole (a tool-output token); per-row advantages; old log-probs."""
    g = torch.Generator().manual_seed(seed)
    n, big_p, big_r = len(prompt_lens), max(prompt_lens), max(response_lens)
    input_ids = torch.zeros(n, big_p + big_r, dtype=torch.long)
    attention_mask = torch.zeros(n, big_p + big_r, dtype=torch.long)
    response_mask = torch.zeros(n, big_r, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_lens, response_lens)):
        input_ids[i, big_p - p : big_p + r] = torch.randint(0, 96, (p + r,), generator=g)
        attention_mask[i, big_p - p : big_p + r] = 1
        response_mask[i, :r] = 1
    if hole:
        response_mask[2, 3] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    old = (-torch.rand(n, big_r, generator=g, dtype=torch.float64) * 3).to(dtype) * response_mask
    adv = (torch.randn(n, 1, generator=g, dtype=torch.float64).expand(n, big_r) * response_mask).to(dtype)
    return dict(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        prompts=input_ids[:, :big_p].clone(), responses=input_ids[:, big_p:].clone(), response_mask=response_mask,
        old_log_probs=old, advantages=adv.clone(),
    )  # fmt: skip


class LossRecorder:
    """Wraps the registered ``grpo_lambda`` loss and records what verl hands it, and what it returns."""

    def __init__(self):
        from verl.trainer.ppo import core_algos

        self.registry = core_algos.POLICY_LOSS_REGISTRY
        self.calls: list[dict[str, Any]] = []

    def __enter__(self):
        self.original = self.registry["grpo_lambda"]

        def recorded(**kwargs):
            cfg = kwargs.get("config")
            call = {
                "keys": sorted(kwargs),
                "tensors": {k: v.detach().clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)},
                "nested": {k: bool(v.is_nested) for k, v in kwargs.items() if isinstance(v, torch.Tensor)},
                "log_prob_requires_grad": bool(kwargs["log_prob"].requires_grad),
                "loss_agg_mode": kwargs.get("loss_agg_mode"),
                "config_type": type(cfg).__name__,
                "policy_loss_type": type(cfg.get("policy_loss", None)).__name__ if cfg is not None else None,
                "global_batch_info": copy.deepcopy(dict(cfg.get("global_batch_info", None) or {})) if cfg else None,
            }
            self.calls.append(call)
            loss, metrics = self.original(**kwargs)
            call["loss"] = loss.detach().clone()
            return loss, metrics

        self.registry["grpo_lambda"] = recorded
        return self

    def __exit__(self, *exc):
        self.registry["grpo_lambda"] = self.original


def spec_loss(spec, old, new, adv, mask, mode, is_weights=None, **aggregate_kwargs):
    """tests/spec_reference.py's loss: token_losses with the test settings, then verl's aggregation restated."""
    mask = mask.bool()
    losses = spec.token_losses(old, new, adv, mask, SETTINGS, CLIP_LOW, CLIP_HIGH, CLIP_C, is_weights)
    return spec.aggregate(losses, mask, mode, **aggregate_kwargs)


def environment_for_subprocess(extra: dict | None = None) -> dict:
    """os.environ with this interpreter's bin first on PATH (recipes call python3), plus ``extra``."""
    env = dict(os.environ)
    env.pop("VERL_LAMBDA_DRY_RUN", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env
