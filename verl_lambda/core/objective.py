r"""The GRPO-λ objective as a per-token loss matrix: pure torch, no framework import.

Both framework adapters (verl in :mod:`verl_lambda.verl.loss`, OpenRLHF in
``verl_lambda.patches.openrlhf``) call :func:`token_losses` and reduce the matrix with their own
aggregation, so the maths exists once.

    x_j   = clamp(log π_θ(o_j) − log π_old(o_j), −20, 20)                  (NaN → 0)
    ℓ_t   = Σ_{j ≤ t} w(t, j) x_j, the trace of x (see :mod:`verl_lambda.core.trace`)
    ρ_t   = exp(clamp(ℓ_t, −20, 20))
    loss_t = max(−A·ρ_t, −A·clip(ρ_t, 1 − ε_low, 1 + ε_high))          (PPO clip)
             and for A < 0: min(that, −A·c)                             (dual clip, c > 1)
    loss_t ← loss_t · rollout_is_weights_t                             (when given)

This is verl's ``vanilla`` loss with the traced ratio in place of the per-token ratio; with
``trace="recent"`` and ``lam=0`` it is exactly ``vanilla``. With ``trace_application="weight"``
(the authors' ``update_style="weight"``) the ratio stays vanilla's per-token ρ_t = exp(x_t) and the
loss is multiplied by the eligibility e_t = Σ_{j ≤ t} w(t, j)·(1 + σ(log π_θ(o_j) − 1)), with
gradients through e_t.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable

from verl_lambda.core.choices import TRACE_APPLICATIONS, lookup
from verl_lambda.core.settings import LossSettings
from verl_lambda.core.trace import exact_precision, linear_trace, masked_trace

__all__ = ["LOG_RATIO_GUARD", "token_losses"]

LOG_RATIO_GUARD = 20.0


def token_losses(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    settings: LossSettings = LossSettings(),
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float | None = 3.0,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token GRPO-λ losses ``[B, L]`` (to be aggregated over ``response_mask``) and diagnostics.

    ``clip_ratio_c=None`` switches the dual clip off. Diagnostics are 0-dim tensors:
    ``pg_clipfrac``, ``ppo_kl``, ``pg_clipfrac_lower`` (as verl's ``vanilla``, on the ratio in the
    clip: traced or, for ``trace_application="weight"``, per token), ``trace_abs_mean``,
    ``trace_abs_max`` (|ℓ|, or the eligibility e, over valid tokens), ``guard_frac`` (share of valid
    tokens where |ℓ| exceeded the ±20 guard; 0 for ``weight``) and ``token_guard_frac`` (share of
    valid tokens whose own log-ratio was NaN or beyond ±20 and was set to 0 or ±20).

    Everything is computed in float32 (float64 when an input is float64) with autocast switched
    off, whatever autocast the caller runs under; advantages are never cast to a narrower dtype.
    """
    if clip_ratio_c is not None and not clip_ratio_c > 1.0:
        raise ValueError(f"clip_ratio_c (dual-clip bound) must be > 1, got {clip_ratio_c}")
    with exact_precision(log_prob.device):
        return _token_losses(
            old_log_prob, log_prob, advantages, response_mask, settings,
            clip_ratio_low, clip_ratio_high, clip_ratio_c, rollout_is_weights,
        )  # fmt: skip


class _GuardedLogRatio(torch.autograd.Function):
    """x = clamp(log_ratio, −20, 20) with NaN as 0 and 0 at masked positions, and the mask of the
    tokens kept as they were; the gradient passes where kept (as through ``clamp``), 0 elsewhere.
    A Function so that autograd keeps one boolean and allocates nothing beyond the output."""

    @staticmethod
    def forward(ctx, log_ratio: torch.Tensor, mask: torch.Tensor):
        x = log_ratio.clamp(min=-LOG_RATIO_GUARD, max=LOG_RATIO_GUARD).nan_to_num_(nan=0.0).masked_fill_(~mask, 0.0)
        kept = (x == log_ratio) & mask  # False for NaN (NaN ≠ NaN) and beyond ±20
        ctx.save_for_backward(kept)
        ctx.mark_non_differentiable(kept)
        return x, kept

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _grad_kept: torch.Tensor):
        (kept,) = ctx.saved_tensors
        return grad.masked_fill(~kept, 0.0), None


def _traced_ratio(log_prob, log_ratio, mask, settings, dtype):
    """``trace_application="ratio"``: the traced log-ratio ℓ, guarded to ±20, is the log of the ratio in the clip."""
    traced = masked_trace(log_ratio, mask, settings)
    return traced.clamp(min=-LOG_RATIO_GUARD, max=LOG_RATIO_GUARD), traced, None


def _eligibility_weight(log_prob, log_ratio, mask, settings, dtype):
    """``trace_application="weight"``: vanilla's per-token ratio; the loss is weighted by the trace of
    1 + σ(log π − 1), with gradients through it."""
    eligibility = _Eligibility.apply(log_prob, mask, settings, dtype)
    return log_ratio, eligibility, eligibility


class _Eligibility(torch.autograd.Function):
    """e = T(1 + σ(log π − 1)), T the trace of ``settings``, 0 at masked tokens; a NaN log π counts as
    0 (as ``nan_to_num``, and no gradient reaches it). The backward pass is σ'(log π − 1)·Tᵀ g with σ
    recomputed from log π: autograd keeps no B×L buffer of its own."""

    @staticmethod
    def forward(ctx, log_prob: torch.Tensor, mask: torch.Tensor, settings, dtype: torch.dtype):
        ctx.save_for_backward(log_prob, mask)
        ctx.settings = settings
        probability_term = _shifted_sigmoid(log_prob, dtype, nan=-1.0).add_(1.0).masked_fill_(~mask, 0.0)
        return linear_trace(probability_term, mask, settings)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        log_prob, mask = ctx.saved_tensors
        with exact_precision(grad.device):
            traced = linear_trace(grad, mask, ctx.settings, transpose=True)
            sigma = _shifted_sigmoid(log_prob, traced.dtype, nan=math.inf)  # σ' = 0 where log π is NaN
            return traced.mul_(sigma.addcmul_(sigma, sigma, value=-1.0)), None, None, None


def _shifted_sigmoid(log_prob: torch.Tensor, dtype: torch.dtype, nan: float) -> torch.Tensor:
    """σ(log π − 1) in ``dtype`` with NaN − 1 read as ``nan`` and ±∞ as the largest finite numbers (a new tensor)."""
    return log_prob.to(dtype).sub(1.0).nan_to_num_(nan=nan).sigmoid_()


#: how each trace_application turns the token log-ratios into (log of the clipped ratio, the traced
#: value the diagnostics describe, the loss weight or None) — verl_lambda.core.choices.TRACE_APPLICATIONS
_APPLICATIONS = {"ratio": _traced_ratio, "weight": _eligibility_weight}
if set(_APPLICATIONS) != set(TRACE_APPLICATIONS):
    raise RuntimeError("verl_lambda.core.objective must implement every trace_application of verl_lambda.core.choices")


def _token_losses(old_log_prob, log_prob, advantages, response_mask, settings,
                  clip_ratio_low, clip_ratio_high, clip_ratio_c, rollout_is_weights):  # fmt: skip
    mask = response_mask.bool()
    dtype = functools.reduce(torch.promote_types, (log_prob.dtype, old_log_prob.dtype, advantages.dtype, torch.float32))
    # As vanilla: each token log-ratio is clamped to ±20 before it enters the trace (so one −inf
    # log-prob cannot turn its neighbours into NaN); a NaN log-ratio counts as 0; masked positions are 0.
    log_ratio, kept = _GuardedLogRatio.apply(log_prob.to(dtype) - old_log_prob.to(dtype), mask)
    guarded, traced, eligibility = lookup(_APPLICATIONS, settings.trace_application, "trace_application")(
        log_prob, log_ratio, mask, settings, dtype
    )
    del log_ratio  # one B×L buffer fewer alive while the surrogate's temporaries exist (the peak)
    ratio = torch.exp(guarded)
    advantages = advantages.to(dtype)
    negative = advantages < 0
    # max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high)), then min(·, −A·c) for A < 0, is −A times ρ clamped
    # to [−∞, 1+ε_high] where A ≥ 0 and to [1−ε_low, c] where A < 0: one clamp with per-token bounds.
    bound = functools.partial(torch.tensor, dtype=dtype, device=ratio.device)
    high = torch.where(
        negative, bound(float("inf") if clip_ratio_c is None else clip_ratio_c), bound(1.0 + clip_ratio_high)
    )
    low = torch.where(negative, bound(1.0 - clip_ratio_low), bound(float("-inf")))
    losses = -advantages * torch.clamp(ratio, min=low, max=high)
    if eligibility is not None:
        losses = losses * eligibility
    if rollout_is_weights is not None:
        losses = losses * rollout_is_weights.to(dtype)

    with torch.no_grad():
        # Masked positions have ℓ = 0, so ρ = 1 there: no clip fires, |ℓ| is 0, and only the
        # token count needs the mask. A clip is active where ρ leaves [1−ε_low, 1+ε_high] on the
        # side the sign of A penalises (vanilla's pg_losses2 > pg_losses1).
        count = torch.count_nonzero(mask).clamp(min=1).to(dtype)
        # |ℓ| statistics as reductions of ℓ itself: no B×L temporary at the loss's memory peak.
        traced = traced.detach()
        lowest, highest = traced.aminmax() if traced.numel() else (traced.new_zeros(()), traced.new_zeros(()))
        clipped_high = (ratio > 1.0 + clip_ratio_high) & (advantages > 0)
        clipped_low = (ratio < 1.0 - clip_ratio_low) & negative
        stats = {
            "pg_clipfrac": (torch.count_nonzero(clipped_high) + torch.count_nonzero(clipped_low)) / count,
            "ppo_kl": -guarded.detach().sum() / count,
            "pg_clipfrac_lower": torch.count_nonzero((ratio > clip_ratio_c) & negative) / count
            if clip_ratio_c is not None
            else torch.zeros((), dtype=dtype, device=ratio.device),
            "trace_abs_mean": torch.linalg.vector_norm(traced, ord=1) / count,
            "trace_abs_max": torch.maximum(-lowest, highest),
            "guard_frac": (
                torch.count_nonzero(traced > LOG_RATIO_GUARD) + torch.count_nonzero(traced < -LOG_RATIO_GUARD)
            )
            / count
            if eligibility is None
            else torch.zeros((), dtype=dtype, device=ratio.device),
            "token_guard_frac": (torch.count_nonzero(mask) - torch.count_nonzero(kept)) / count,
        }
    return losses, stats
