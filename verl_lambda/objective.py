r"""The GRPO-λ objective as a per-token loss matrix: pure torch, no verl import.

Both framework adapters (verl in :mod:`verl_lambda.register`, OpenRLHF in
``verl_lambda.patches.openrlhf``) call :func:`traced_ppo_token_losses` and reduce the matrix with
their own aggregation, so the maths exists once.

    ℓ_t   = traced log-ratio (see :mod:`verl_lambda.trace`)
    ρ_t   = exp(clamp(ℓ_t, −20, 20))
    loss_t = max(−A·ρ_t, −A·clip(ρ_t, 1 − ε_low, 1 + ε_high))          (PPO clip)
             and for A < 0: min(that, −A·c)                             (dual clip, c > 1)
    loss_t ← loss_t · rollout_is_weights_t                             (when given)

This is verl's ``vanilla`` loss with the traced ratio in place of the per-token ratio; with
``style="recent"`` and ``lam=0`` it is exactly ``vanilla``.
"""

from __future__ import annotations

from typing import Optional

import torch

from verl_lambda.trace import traced_log_ratio

__all__ = ["LOG_RATIO_GUARD", "clamp_advantage", "masked_mean", "traced_ppo_token_losses"]

LOG_RATIO_GUARD = 20.0


def clamp_advantage(advantage: torch.Tensor, floor: Optional[float]) -> torch.Tensor:
    """max(A, floor): the negative-advantage clamp of GRPO-λ; ``floor=None`` leaves A as it is."""
    if floor is None:
        return advantage
    return advantage.clamp(min=float(floor))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def traced_ppo_token_losses(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    lam: float = 0.99,
    gamma: float = 1.0,
    style: str = "recent",
    epsilon: float = 0.0,
    norm: str = "none",
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: Optional[float] = 3.0,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token GRPO-λ losses ``[B, L]`` (to be aggregated over ``response_mask``) and diagnostics.

    ``clip_ratio_c=None`` switches the dual clip off. Diagnostics are 0-dim tensors:
    ``pg_clipfrac``, ``ppo_kl``, ``pg_clipfrac_lower`` (as verl's ``vanilla``, on the traced ratio),
    ``trace_abs_mean``, ``trace_abs_max`` (|ℓ| over valid tokens) and ``guard_frac`` (share of valid
    tokens where |ℓ| exceeded the ±20 guard).
    """
    if clip_ratio_c is not None and not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c (dual-clip bound) must be > 1, got {clip_ratio_c}")
    mask = response_mask.bool()
    traced = traced_log_ratio(
        log_prob - old_log_prob, mask, lam=lam, gamma=gamma, style=style, epsilon=epsilon, norm=norm
    )
    guarded = traced.clamp(min=-LOG_RATIO_GUARD, max=LOG_RATIO_GUARD)
    ratio = torch.exp(guarded)
    advantages = advantages.to(ratio.dtype)

    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * ratio.clamp(1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clipped = torch.maximum(pg_losses1, pg_losses2)
    negative = advantages < 0
    losses = clipped
    if clip_ratio_c is not None:
        pg_losses3 = -advantages * clip_ratio_c
        losses = torch.where(negative, torch.minimum(pg_losses3, clipped), clipped)
    if rollout_is_weights is not None:
        losses = losses * rollout_is_weights

    with torch.no_grad():
        # Masked positions have ℓ = 0, so ρ = 1 there: no clip fires, |ℓ| is 0, and only the
        # token count needs the mask.
        count = mask.sum().clamp(min=1).to(ratio.dtype)
        abs_traced = traced.detach().abs()
        stats = {
            "pg_clipfrac": (pg_losses2 > pg_losses1).sum() / count,
            "ppo_kl": -guarded.detach().sum() / count,
            "pg_clipfrac_lower": ((clipped > pg_losses3) & negative).sum() / count
            if clip_ratio_c is not None
            else torch.zeros((), dtype=ratio.dtype),
            "trace_abs_mean": abs_traced.sum() / count,
            "trace_abs_max": abs_traced.max() if abs_traced.numel() else torch.zeros((), dtype=ratio.dtype),
            "guard_frac": (abs_traced > LOG_RATIO_GUARD).sum() / count,
        }
    return losses, stats
