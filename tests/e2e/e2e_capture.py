"""Test-only capture of what verl's trainer hands the advantage estimator and the policy loss.

Loaded after the plugin in every Ray process, through ``VERL_USE_EXTERNAL_MODULES=...,e2e_capture``
with this folder on ``PYTHONPATH``; it does nothing unless ``VERL_LAMBDA_E2E_CAPTURE_DIR`` is set.
In the importing process it wraps, in verl's registries,

* the policy losses ``grpo_lambda`` and ``vanilla`` (actor workers), saving per call the inputs
  (``old_log_prob``, ``log_prob`` detached, ``advantages``, ``response_mask``,
  ``rollout_is_weights``, ``loss_agg_mode``), a copy of ``config.global_batch_info``, the clip and
  GRPO-λ settings, the returned loss and metrics, and whether autocast was on;
* the estimator ``grpo_lambda`` and ``core_algos.compute_grpo_outcome_advantage`` (TaskRunner),
  saving ``token_level_rewards``, ``response_mask``, the uids, the norm/clamp settings and the
  returned advantages.

Files: ``$VERL_LAMBDA_E2E_CAPTURE_DIR/{loss,adv}_<pid>_<n>.pt``. The wrappers return exactly what
the wrapped functions return; a failure to save is printed and never changes the run.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable
from typing import Any

import torch
from verl.trainer.ppo import core_algos

import verl_lambda.verl.register  # noqa: F401  (the plugin registers before it is wrapped)

CAPTURE_DIR_ENV = "VERL_LAMBDA_E2E_CAPTURE_DIR"
CAPTURE_DIR = os.environ.get(CAPTURE_DIR_ENV)
MAX_CAPTURES = 400  # per process
_counter = itertools.count()
_WRAPPED = "_verl_lambda_e2e_capture"


def _cpu(value: Any) -> Any:
    return value.detach().to("cpu").clone() if isinstance(value, torch.Tensor) else value


def _node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:
        return None


def _modules() -> dict:
    """What reached this process: its VERL_USE_EXTERNAL_MODULES and which of those it imported."""
    import sys

    listed = [m.strip() for m in os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m.strip()]
    return {"listed": listed, "imported": [m for m in listed if m in sys.modules]}


def _save(kind: str, payload: dict) -> None:
    n = next(_counter)
    if not CAPTURE_DIR or n >= MAX_CAPTURES:
        return
    os.makedirs(CAPTURE_DIR, exist_ok=True)
    payload.update(pid=os.getpid(), seq=n, rank=os.environ.get("RANK"), node=_node_id(), modules=_modules())
    path = os.path.join(CAPTURE_DIR, f"{kind}_{os.getpid()}_{n:04d}.pt")
    torch.save(payload, path + ".tmp")
    os.replace(path + ".tmp", path)  # readers never see half a file


def _loss_settings(config: Any) -> dict:
    policy_loss = config.get("policy_loss", None)
    settings = {
        name: config.get(name, None)
        for name in ("clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c", "loss_agg_mode", "ppo_epochs")
    }
    settings["global_batch_info"] = {k: _cpu(v) for k, v in dict(config.get("global_batch_info", None) or {}).items()}
    settings["policy_loss_class"] = type(policy_loss).__name__
    # every field of the policy-loss config (GRPOLambdaLossConfig's GRPO-λ settings among them)
    if dataclasses.is_dataclass(policy_loss):
        fields = {f.name: getattr(policy_loss, f.name, None) for f in dataclasses.fields(policy_loss)}
    else:
        fields = dict(policy_loss or {})
    settings["policy_loss"] = {k: v for k, v in fields.items() if isinstance(v, (str, int, float, bool, type(None)))}
    for name in ("loss_mode", "lam", "gamma", "trace", "trace_epsilon", "trace_norm"):
        settings[name] = fields.get(name)
    return settings


def _wrap_loss(name: str) -> None:
    original = core_algos.POLICY_LOSS_REGISTRY.get(name)
    if original is None or getattr(original, _WRAPPED, False):
        return

    def capture_loss(**kwargs: Any) -> Any:
        loss, metrics = original(**kwargs)
        try:
            _save(
                "loss",
                {
                    "loss_name": name,
                    "old_log_prob": _cpu(kwargs["old_log_prob"]),
                    "log_prob": _cpu(kwargs["log_prob"]),
                    "advantages": _cpu(kwargs["advantages"]),
                    "response_mask": _cpu(kwargs["response_mask"]),
                    "rollout_is_weights": _cpu(kwargs.get("rollout_is_weights")),
                    "loss_agg_mode": kwargs.get("loss_agg_mode"),
                    "settings": _loss_settings(kwargs["config"]),
                    "autocast": torch.is_autocast_enabled("cpu"),
                    "loss": _cpu(loss),
                    "metrics": dict(metrics),
                },
            )
        except Exception as err:  # never change the run
            print(f"[e2e_capture] loss capture failed: {err!r}", flush=True)
        return loss, metrics

    setattr(capture_loss, _WRAPPED, True)
    capture_loss.__wrapped__ = original
    core_algos.POLICY_LOSS_REGISTRY[name] = capture_loss


def _advantage_payload(estimator: str, kwargs: dict, advantages: torch.Tensor, clamp: Any, norm: Any) -> dict:
    index = kwargs.get("index")
    return {
        "estimator": estimator,
        "token_level_rewards": _cpu(kwargs["token_level_rewards"]),
        "response_mask": _cpu(kwargs["response_mask"]),
        "index": None if index is None else [str(u) for u in index],
        "adv_clamp": clamp,
        "norm_adv_by_std_in_grpo": norm,
        "advantages": _cpu(advantages),
    }


def _capturing_estimator(original: Callable, estimator: str, clamp_and_norm: Callable[[dict], tuple]) -> Callable:
    """``original`` that also saves what it was given and returned; ``clamp_and_norm(kwargs)`` reads
    the estimator's clamp and norm-by-std settings from its arguments."""

    def capture(**kwargs: Any) -> Any:
        advantages, returns = original(**kwargs)
        try:
            clamp, norm = clamp_and_norm(kwargs)
            _save("adv", _advantage_payload(estimator, kwargs, advantages, clamp, norm))
        except Exception as err:
            print(f"[e2e_capture] {estimator} capture failed: {err!r}", flush=True)
        return advantages, returns

    setattr(capture, _WRAPPED, True)
    capture.__wrapped__ = original
    return capture


def _grpo_lambda_clamp_and_norm(kwargs: dict) -> tuple:
    config = kwargs.get("config")
    section = config.get("grpo_lambda", None) or {}
    clamp = section.get("adv_clamp", "default") if hasattr(section, "get") else "default"
    return clamp, config.get("norm_adv_by_std_in_grpo", True)


def _wrap_grpo_lambda_estimator() -> None:
    original = core_algos.ADV_ESTIMATOR_REGISTRY.get("grpo_lambda")
    if original is None or getattr(original, _WRAPPED, False):
        return
    core_algos.ADV_ESTIMATOR_REGISTRY["grpo_lambda"] = _capturing_estimator(
        original, "grpo_lambda", _grpo_lambda_clamp_and_norm
    )


def _wrap_grpo() -> None:
    """verl calls ``core_algos.compute_grpo_outcome_advantage`` directly for ``grpo`` (no registry)."""
    original: Callable = core_algos.compute_grpo_outcome_advantage
    if getattr(original, _WRAPPED, False):
        return
    core_algos.compute_grpo_outcome_advantage = _capturing_estimator(
        original, "grpo", lambda kwargs: (None, kwargs.get("norm_adv_by_std_in_grpo", True))
    )


_wrap_loss("grpo_lambda")
_wrap_loss("vanilla")
_wrap_grpo_lambda_estimator()
_wrap_grpo()
