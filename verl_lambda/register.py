"""verl glue: the ``grpo_lambda`` advantage estimator and policy loss, registered on import.

Importing this module (idempotent) adds both names to verl's registries in the importing
process. It reaches verl's Ray processes by any of:

* the ``verl.plugins`` entry point of this distribution (loaded by ``import verl``);
* ``VERL_USE_EXTERNAL_MODULES`` listing ``verl_lambda.register`` in the workers' environment
  (``python -m verl_lambda.main_ppo`` sets it in the Ray runtime env, keeping the driver's modules);
* ``actor_rollout_ref.actor.policy_loss._target_=verl_lambda.config.GRPOLambdaLossConfig``
  (building that config imports this module; reaches the actor workers only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import agg_loss

from verl_lambda.config_keys import ESTIMATOR_NAME, LOSS_CONFIG_PATH, LOSS_NAME, TARGET
from verl_lambda.core.advantage import group_advantages
from verl_lambda.core.objective import token_losses

__all__ = [
    "compute_grpo_lambda_outcome_advantage",
    "compute_policy_loss_grpo_lambda",
    "register",
    "check_registered",
]


def compute_grpo_lambda_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any | None = None,
    index: np.ndarray | None = None,
    epsilon: float = 1e-6,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic-free TD error of GRPO-λ on every valid token (:func:`verl_lambda.core.advantage.group_advantages`).

    Args:
        token_level_rewards: ``[bs, T]`` rewards (the outcome sits on the last valid token).
        response_mask: ``[bs, T]`` valid-token mask.
        config: verl's ``config.algorithm``; reads ``grpo_lambda.adv_clamp`` and
            ``norm_adv_by_std_in_grpo``.
        index: ``[bs]`` group ids (verl's ``uid``).

    Returns:
        ``(advantages, returns)``, both ``[bs, T]`` and equal.
    """
    from verl_lambda.config import estimator_settings, norm_adv_by_std  # imports verl: not at import time

    settings = estimator_settings(config)
    norm_by_std = norm_adv_by_std(config)
    if index is None:
        raise ValueError(f"the '{ESTIMATOR_NAME}' estimator needs group ids: the batch has no 'uid' column")
    scores = token_level_rewards.sum(dim=-1)
    scalars = group_advantages(scores, index, settings, norm_by_std=norm_by_std, epsilon=epsilon)
    advantages = scalars.unsqueeze(-1) * response_mask.to(scalars.dtype)
    return advantages, advantages


#: verl metric name -> diagnostic of :func:`verl_lambda.core.objective.token_losses`
_METRIC_NAMES = {
    "actor/pg_clipfrac": "pg_clipfrac",
    "actor/ppo_kl": "ppo_kl",
    "actor/pg_clipfrac_lower": "pg_clipfrac_lower",
    "actor/grpo_lambda/trace_abs_mean": "trace_abs_mean",
    "actor/grpo_lambda/trace_abs_max": "trace_abs_max",
    "actor/grpo_lambda/guard_frac": "guard_frac",
    "actor/grpo_lambda/token_guard_frac": "token_guard_frac",
}


def compute_policy_loss_grpo_lambda(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any | None = None,
    rollout_is_weights: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's ``vanilla`` PPO loss on the traced ratio ρ^λ = exp(ℓ) (see :mod:`verl_lambda.core.objective`).

    ``config`` is verl's ``ActorConfig``; its ``policy_loss`` must be a :class:`GRPOLambdaLossConfig`.
    Reduction goes through verl's ``agg_loss(..., **config.global_batch_info)``.
    """
    from verl_lambda.config import GRPOLambdaLossConfig  # imports verl: not at import time

    policy_loss = None if config is None else config.get("policy_loss", None)
    if not isinstance(policy_loss, GRPOLambdaLossConfig):
        got = "no config" if config is None else type(policy_loss).__name__
        raise TypeError(
            f"loss_mode='{LOSS_NAME}' needs its own config class: set {LOSS_CONFIG_PATH}._target_={TARGET} (got {got})"
        )
    clip_ratio = config.get("clip_ratio", 0.2)
    clip_low = config.get("clip_ratio_low", None)
    clip_high = config.get("clip_ratio_high", None)
    losses, stats = token_losses(
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        policy_loss.settings(),
        clip_ratio_low=clip_ratio if clip_low is None else clip_low,
        clip_ratio_high=clip_ratio if clip_high is None else clip_high,
        clip_ratio_c=config.get("clip_ratio_c", 3.0),
        rollout_is_weights=rollout_is_weights,
    )
    loss = agg_loss(
        loss_mat=losses,
        loss_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        **(config.get("global_batch_info", None) or {}),
    )
    # One device-to-host copy for all diagnostics (verl expects Python floats).
    values = torch.stack([stats[name].to(torch.float64) for name in _METRIC_NAMES.values()]).tolist()
    metrics = dict(zip(_METRIC_NAMES, values))
    return loss, metrics


def _same_function(a: Any, b: Any) -> bool:
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def register() -> None:
    """Add ``grpo_lambda`` to verl's estimator and loss registries (safe to call again)."""
    current = core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME)
    if current is not None and not _same_function(current, compute_grpo_lambda_outcome_advantage):
        raise ValueError(
            f"another advantage estimator is already registered as '{ESTIMATOR_NAME}': "
            f"{current.__module__}.{current.__qualname__}"
        )
    core_algos.ADV_ESTIMATOR_REGISTRY.pop(ESTIMATOR_NAME, None)  # a reloaded copy of this module
    core_algos.register_adv_est(ESTIMATOR_NAME)(compute_grpo_lambda_outcome_advantage)
    core_algos.register_policy_loss(LOSS_NAME)(compute_policy_loss_grpo_lambda)


def check_registered() -> None:
    """Raise with a fix if this process's verl registries lack the GRPO-λ names."""
    missing = []
    if ESTIMATOR_NAME not in core_algos.ADV_ESTIMATOR_REGISTRY:
        missing.append(f"advantage estimator '{ESTIMATOR_NAME}'")
    if LOSS_NAME not in core_algos.POLICY_LOSS_REGISTRY:
        missing.append(f"policy loss '{LOSS_NAME}'")
    if missing:
        raise RuntimeError(
            f"verl has no {' and no '.join(missing)} in this process: install verl-lambda here or set "
            "VERL_USE_EXTERNAL_MODULES=verl_lambda.register"
        )


register()
