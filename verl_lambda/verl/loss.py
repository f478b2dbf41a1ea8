"""The ``grpo_lambda`` policy loss in verl (verl glue).

verl's actor workers call it per micro-batch (``ppo_loss`` in verl ≥ 0.8, the legacy actors in
0.7.x) with verl's ``ActorConfig``, whose ``policy_loss`` is a
:class:`~verl_lambda.verl.config.GRPOLambdaLossConfig`. The per-token maths is
:func:`verl_lambda.core.objective.token_losses`; the reduction is verl's ``agg_loss``.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_lambda.verl.version import check_verl_version

check_verl_version()  # one line naming the supported range, before anything is imported from verl

from verl.trainer.ppo.core_algos import agg_loss  # noqa: E402

from verl_lambda.core.objective import token_losses  # noqa: E402
from verl_lambda.verl.keys import LOSS_CONFIG_PATH, LOSS_NAME, TARGET  # noqa: E402

__all__ = ["compute_policy_loss_grpo_lambda", "METRIC_NAMES"]

#: verl metric name -> diagnostic of :func:`verl_lambda.core.objective.token_losses`
METRIC_NAMES = {
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

    ``config`` is verl's ``ActorConfig``; its ``policy_loss`` must be a ``GRPOLambdaLossConfig``
    (recognised by its ``loss_settings``). Reduction goes through ``agg_loss(..., **config.global_batch_info)``.
    """
    policy_loss = None if config is None else config.get("policy_loss", None)
    if not callable(getattr(policy_loss, "loss_settings", None)):
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
        policy_loss.loss_settings(),
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
    values = torch.stack([stats[name].to(torch.float64) for name in METRIC_NAMES.values()]).tolist()
    return loss, dict(zip(METRIC_NAMES, values))
