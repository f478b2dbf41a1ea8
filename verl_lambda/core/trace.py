r"""Traced log-ratios of GRPO-λ: pure torch, no verl import.

For one response, with ``x_j = log π_θ(o_j) − log π_old(o_j)`` the token log-ratio and ``r = γλ``,
the traced log-ratio at position ``t`` is

    ℓ_t = Σ_{j ≤ t} w(t, j) · x_j

with the weight styles

    recent:  w(t, j) = r^(t−j)
    both:    w(t, j) = max(r^(t−j), r^j)
    ε floor: w(t, j) ← max(w(t, j), ε)                  (combines with either style)

and optionally ``trace_norm="sum"``: ℓ_t ← ℓ_t / Σ_{j ≤ t} w(t, j).

Positions count the *valid* tokens of a row (``mask == 1``) from 0. A masked position inside a
response neither contributes to the trace nor advances it; its output is 0.

Two implementations share one signature:

* :func:`traced_log_ratio_reference` builds the weight matrix row by row. Slow, O(L²), obviously
  right; the tests and the naive benchmark baseline use it.
* :func:`traced_log_ratio` is exact to it and uses O(B·L) memory: a decayed running sum computed
  in chunks (a small C×C matrix product per chunk, chunk carries by the same method one level up),
  windows on that running sum for ``both`` and the ε floor, prefix sums for the rest. It never
  forms r^(−j), so it cannot overflow at any length. Autograd differentiates it exactly (it is a
  composition of linear maps).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache

import torch

__all__ = [
    "TRACE_STYLES",
    "TRACE_NORMS",
    "check_trace_settings",
    "exact_precision",
    "trace_weight",
    "traced_log_ratio",
    "traced_log_ratio_reference",
    "discounted_cumsum",
]

TRACE_STYLES = ("recent", "both")
TRACE_NORMS = ("none", "sum")

_CHUNK = 64


def check_trace_settings(lam: float, gamma: float, style: str, epsilon: float, norm: str) -> None:
    """Raise ``ValueError`` naming the first setting that is out of range."""
    for name, value in (("lam", lam), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if style not in TRACE_STYLES:
        raise ValueError(f"trace must be one of {list(TRACE_STYLES)}, got {style!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"trace_epsilon must be a number in [0, 1], got {epsilon!r}")
    if norm not in TRACE_NORMS:
        raise ValueError(f"trace_norm must be one of {list(TRACE_NORMS)}, got {norm!r}")


def trace_weight(t: torch.Tensor, j: torch.Tensor, decay: float, style: str, epsilon: float) -> torch.Tensor:
    """w(t, j) for broadcastable integer position tensors ``t`` and ``j`` (0 where j > t), float64."""
    t = t.to(torch.float64)
    j = j.to(torch.float64)
    base = torch.tensor(float(decay), dtype=torch.float64, device=t.device)
    lag = (t - j).clamp(min=0)
    w = torch.pow(base, lag)
    if style == "both":
        w = torch.maximum(w, torch.pow(base, j))
    if epsilon > 0:
        w = w.clamp(min=float(epsilon))
    return torch.where(j <= t, w, torch.zeros_like(w))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


@contextmanager
def exact_precision(device: torch.device):
    """Switch autocast off on ``device`` (and on the CPU): verl calls the loss inside
    ``torch.autocast(bf16)``, which would run the chunk products in bf16."""
    with torch.autocast(device_type=device.type, enabled=False), torch.autocast(device_type="cpu", enabled=False):
        yield


def traced_log_ratio_reference(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    *,
    lam: float = 0.99,
    gamma: float = 1.0,
    style: str = "recent",
    epsilon: float = 0.0,
    norm: str = "none",
) -> torch.Tensor:
    """Slow reference of :func:`traced_log_ratio`: one explicit weight matrix per row."""
    check_trace_settings(lam, gamma, style, epsilon, norm)
    dtype = _compute_dtype(log_ratio)
    out = torch.zeros(log_ratio.shape, dtype=dtype, device=log_ratio.device)
    rows = []
    for b in range(log_ratio.shape[0]):
        valid = torch.nonzero(mask[b].bool()).flatten()
        n = valid.numel()
        if n == 0:
            rows.append(out[b])
            continue
        pos = torch.arange(n, device=log_ratio.device)
        w = trace_weight(pos[:, None], pos[None, :], gamma * lam, style, epsilon)
        if norm == "sum":
            w = w / w.sum(dim=1, keepdim=True)
        traced = w.to(dtype) @ log_ratio[b, valid].to(dtype)
        rows.append(out[b].index_put((valid,), traced))
    return torch.stack(rows)


@lru_cache(maxsize=64)
def _decay_tables(size: int, decay: float, dtype: torch.dtype, device: torch.device):
    """(M, p): M[i, k] = decay^(k−i) for i ≤ k else 0, and p[k] = decay^(k+1), k < size."""
    k = torch.arange(size, dtype=torch.float64)
    lag = k[None, :] - k[:, None]
    base = torch.tensor(decay, dtype=torch.float64)
    m = torch.where(lag >= 0, torch.pow(base, lag.clamp(min=0)), torch.zeros(()))
    p = torch.pow(base, k + 1)
    return m.to(dtype=dtype, device=device), p.to(dtype=dtype, device=device)


@contextmanager
def _full_precision_matmul(x: torch.Tensor):
    """Keep float32 chunk products exact on GPUs where TF32 matmuls were switched on globally."""
    if not (x.is_cuda and x.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32):
        yield
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True


def discounted_cumsum(x: torch.Tensor, decay: float, chunk: int = _CHUNK) -> torch.Tensor:
    """y_t = Σ_{j ≤ t} decay^(t−j) · x_j along the last dimension (decay in [0, 1]).

    Chunks of ``chunk`` tokens are summed with one small matrix product; the running value at the
    chunk ends is the same problem with decay^chunk on L/chunk items, solved recursively. Memory
    O(numel), every intermediate bounded by Σ|x|.
    """
    length = x.shape[-1]
    if decay == 0.0 or length == 0:
        return x.clone()
    if decay == 1.0:
        return x.cumsum(-1)
    size = min(chunk, length)
    n_chunks = -(-length // size)
    padded = n_chunks * size
    if padded != length:
        x = torch.nn.functional.pad(x, (0, padded - length))
    m, p = _decay_tables(size, float(decay), x.dtype, x.device)
    with _full_precision_matmul(x):
        local = x.reshape(*x.shape[:-1], n_chunks, size) @ m
    if n_chunks > 1:
        ends = discounted_cumsum(local[..., -1], float(decay) ** size, chunk)
        carry = torch.nn.functional.pad(ends[..., :-1], (1, 0))
        local = torch.addcmul(local, carry.unsqueeze(-1), p)
    return local.reshape(*x.shape[:-1], padded)[..., :length]


def _floor_lag(decay: float, epsilon: float) -> int:
    """l* = the largest lag with decay^l ≥ ε (the exact-decay window of the ε floor)."""
    if decay == 0.0:
        return 0
    return int(math.floor(math.log(epsilon) / math.log(decay) + 1e-12))


@lru_cache(maxsize=64)
def _powers(exponents: tuple, decay: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    base = torch.tensor(decay, dtype=torch.float64)
    return torch.pow(base, torch.arange(*exponents, dtype=torch.float64)).to(dtype=dtype, device=device)


@lru_cache(maxsize=64)
def _pair_cuts(half: int, decay: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[half, 2]: decay^(k+1), decay^(k+2) — the cut at t = 2k+1 and t = 2k+2."""
    p = _powers((1, half + 2), decay, torch.float64, torch.device("cpu"))
    return torch.stack([p[:half], p[1 : half + 1]], dim=-1).to(dtype=dtype, device=device)


def _trace_dense(x: torch.Tensor, decay: float, style: str, epsilon: float) -> torch.Tensor:
    """ℓ for rows whose valid tokens are contiguous from position 0 (x zero elsewhere).

    With D the recent trace, E_i = Σ_{j≤i} decay^j x_j, C_i = Σ_{j≤i} x_j and l* the ε window:

      recent + ε:          ℓ_t = D_t − decay^(l*+1) D_{t−l*−1} + ε C_{t−l*−1}
      both, t = 2k+1, 2k+2 < 2l*+2:
                           ℓ_t = D_t − decay^(t−k) D_k + E_k
      both, t ≥ 2l*+2:     ℓ_t = D_t − decay^(l*+1) D_{t−l*−1} + E_{l*} + ε (C_{t−l*−1} − C_{l*})

    (``both`` without a floor is the second line for every t ≥ 1.) Every index is a slice, a
    pairwise view or one column, so the backward pass is as cheap as the forward.
    """
    length = x.shape[-1]
    recent = discounted_cumsum(x, decay)
    floor = epsilon > 0 and decay < 1.0
    lag = min(_floor_lag(decay, epsilon), length) if floor else length
    k = lag + 1
    if style == "recent":
        if k >= length:
            return recent
        tail = torch.add(recent[..., k:], recent[..., : length - k], alpha=-(decay**k))
        tail = tail.add_(x[..., : length - k].cumsum(-1), alpha=epsilon)
        return torch.cat([recent[..., :k], tail], dim=-1)
    split = min(length, 2 * lag + 2)
    half = split // 2
    dtype, device = x.dtype, x.device
    early = (x[..., :half] * _powers((0, half), decay, dtype, device)).cumsum(-1)
    # pairs[..., k, :] = E_k − decay^(k+1) D_k, E_k − decay^(k+2) D_k   (for t = 2k+1, 2k+2)
    pairs = torch.addcmul(early.unsqueeze(-1), recent[..., :half].unsqueeze(-1), _pair_cuts(half, decay, dtype, device), value=-1)
    pieces = [recent[..., :1], recent[..., 1:split] + pairs.flatten(-2)[..., : split - 1]]
    if split < length:
        csum = x[..., : length - k].cumsum(-1)
        early_all = early[..., -1:]  # E_{l*}: here half = l* + 1
        rest = torch.add(recent[..., split:], recent[..., split - k : length - k], alpha=-(decay**k))
        rest = rest.add_(csum[..., split - k :], alpha=epsilon).add_(early_all - epsilon * csum[..., lag : lag + 1])
        pieces.append(rest)
    return torch.cat(pieces, dim=-1)


@lru_cache(maxsize=64)
def _weight_row_sums(length: int, decay: float, style: str, epsilon: float, dtype, device) -> torch.Tensor:
    ones = torch.ones(1, length, dtype=torch.float64)
    return _trace_dense(ones, decay, style, epsilon)[0].to(dtype=dtype, device=device)


def traced_log_ratio(
    log_ratio: torch.Tensor,
    mask: torch.Tensor,
    *,
    lam: float = 0.99,
    gamma: float = 1.0,
    style: str = "recent",
    epsilon: float = 0.0,
    norm: str = "none",
) -> torch.Tensor:
    r"""Traced log-ratio ℓ of GRPO-λ, O(B·L) memory.

    Args:
        log_ratio: ``[B, L]`` token log-ratios ``log π_θ − log π_old`` (any float dtype).
        mask: ``[B, L]`` valid-token mask (bool or 0/1); may have interior zeros and leading zeros.
        lam, gamma: trace decay is ``gamma * lam``, each in [0, 1].
        style: ``"recent"`` or ``"both"``.
        epsilon: floor on the weights, in [0, 1]; 0 disables it.
        norm: ``"none"`` or ``"sum"`` (divide ℓ_t by the sum of its weights).

    Returns:
        ``[B, L]`` ℓ in float32 (float64 for float64 input), 0 at masked positions.
    """
    check_trace_settings(lam, gamma, style, epsilon, norm)
    if log_ratio.shape != mask.shape or log_ratio.dim() != 2:
        raise ValueError(f"log_ratio and mask must both be [B, L], got {tuple(log_ratio.shape)} and {tuple(mask.shape)}")
    with exact_precision(log_ratio.device):
        return _traced_log_ratio(log_ratio, mask, lam, gamma, style, float(epsilon), norm)


def _traced_log_ratio(log_ratio, mask, lam, gamma, style, epsilon, norm):
    dtype = _compute_dtype(log_ratio)
    valid = mask.bool()
    x = torch.where(valid, log_ratio.to(dtype), torch.zeros((), dtype=dtype, device=log_ratio.device))
    decay = float(gamma) * float(lam)
    batch, length = x.shape
    if length == 0:
        return x
    gaps = bool((valid[:, 1:] & ~valid[:, :-1]).any()) if length > 1 else False
    if gaps:
        # Move each row's valid tokens to the front, trace, and move the results back.
        dest = torch.where(valid, valid.long().cumsum(-1) - 1, torch.full_like(x, length, dtype=torch.long))
        packed = x.new_zeros(batch, length + 1).scatter(1, dest, x)[:, :length]
    else:
        packed = x
    traced = _trace_dense(packed, decay, style, float(epsilon))
    if norm == "sum":
        traced = traced / _weight_row_sums(length, decay, style, float(epsilon), dtype, x.device)
    if gaps:
        traced = torch.nn.functional.pad(traced, (0, 1)).gather(1, dest)
    return torch.where(valid, traced, torch.zeros((), dtype=dtype, device=x.device))
