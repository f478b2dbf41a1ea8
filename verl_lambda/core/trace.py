r"""The eligibility trace of GRPO-λ: pure torch, no framework import.

For one response and per-token values ``x_j`` (the token log-ratios ``log π_θ(o_j) − log π_old(o_j)``
for the traced ratio) and ``r = γλ``, the trace at position ``t`` is

    ℓ_t = Σ_{j ≤ t} w(t, j) · x_j

with w(t, t) = 1 and, below the diagonal (j < t), the weighting of ``settings.trace`` read with
``settings.trace_anchor`` (:data:`verl_lambda.core.choices.WEIGHTINGS`; n = the number of valid
tokens of the response):

    trace      anchor "token" (lag from the current token)    anchor "end" (the authors' code)
    recent     r^(t−j)                                         r^(n−1−j)
    both       max(r^(t−j), r^j)                               max(r^(n−j), r^j)
    early      r^j                                             r^j

    ε floor:   w(t, j) ← max(w(t, j), ε) for j < t   (``trace_epsilon``; 0 switches it off)

and optionally ``trace_norm="sum"``: ℓ_t ← ℓ_t / Σ_{j ≤ t} w(t, j). The settings are a
:class:`verl_lambda.core.settings.LossSettings`.

Positions count the *valid* tokens of a row (``mask == 1``) from 0. A masked position inside a
response neither contributes to the trace nor advances it; its output is 0.

Two implementations share one signature:

* :func:`apply_trace_reference` builds the weight matrix (:func:`trace_weights`) row by row. Slow,
  O(L²), obviously right; the tests and the naive benchmark baseline use it.
* :func:`apply_trace` is exact to it and uses O(B·L) memory. A weighting that depends on the lag
  t − j (the token anchor's ``recent`` and ``both``) has a kernel: a decayed running sum computed in
  chunks (a small C×C matrix product per chunk, chunk carries by the same method one level up),
  windows on that running sum for ``both`` and the ε floor, prefix sums for the rest. Every other
  weighting depends below the diagonal on the column j (and n) only: ℓ_t = Σ_{j<t} c_j x_j + x_t,
  one prefix sum. It never forms r^(−j), so it cannot overflow at any length.

The trace is linear in x, ℓ = T x, so its gradient is the transposed trace Tᵀ g. :class:`_Trace`
computes that directly with the same kernels run backwards (decayed sums from the row's end,
suffix sums in place of prefix sums) instead of differentiating the forward's slices and windows:
autograd keeps nothing but the mask, and the backward costs what the forward does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import contextmanager
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

from verl_lambda.core.choices import KERNELS, TRACE_NORMS, Weighting, lookup, weighting
from verl_lambda.core.settings import LossSettings

__all__ = [
    "apply_trace",
    "apply_trace_reference",
    "masked_trace",
    "linear_trace",
    "trace_weights",
    "discounted_cumsum",
    "exact_precision",
]

_CHUNK = 32


def _power(decay: float, device: torch.device | str) -> Callable[[torch.Tensor], torch.Tensor]:
    """e -> decay^e in float64."""
    return functools.partial(torch.pow, torch.tensor(decay, dtype=torch.float64, device=device))


def trace_weights(n: int, settings: LossSettings, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``[n, n]`` float64 weight matrix w(t, j) of a response with ``n`` valid tokens (0 above the diagonal)."""
    pos = torch.arange(n, dtype=torch.float64, device=device)
    t, j = pos[:, None], pos[None, :]
    length = torch.tensor(float(n), dtype=torch.float64, device=device)
    w = weighting(settings.trace, settings.trace_anchor).weight(t, j, length, _power(settings.decay, device))
    w = w.expand(n, n).clamp(min=settings.trace_epsilon)
    return torch.where(j < t, w, torch.where(j == t, torch.ones_like(w), torch.zeros_like(w)))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


@contextmanager
def exact_precision(device: torch.device):
    """Switch autocast off on ``device`` (and on the CPU): verl calls the loss inside
    ``torch.autocast(bf16)``, which would run the chunk products in bf16."""
    with torch.autocast(device_type=device.type, enabled=False), torch.autocast(device_type="cpu", enabled=False):
        yield


def _check_shapes(values: torch.Tensor, mask: torch.Tensor) -> None:
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values and mask must both be [B, L], got {tuple(values.shape)} and {tuple(mask.shape)}")


def apply_trace_reference(
    values: torch.Tensor, mask: torch.Tensor, settings: LossSettings = LossSettings()
) -> torch.Tensor:
    """Slow reference of :func:`apply_trace`: one explicit weight matrix per row."""
    _check_shapes(values, mask)
    dtype = _compute_dtype(values)
    out = torch.zeros(values.shape, dtype=dtype, device=values.device)
    rows = []
    for b in range(values.shape[0]):
        valid = torch.nonzero(mask[b].bool()).flatten()
        if valid.numel() == 0:
            rows.append(out[b])
            continue
        w = trace_weights(valid.numel(), settings, values.device)
        if _divides_by_weight_sum(settings):
            w = w / w.sum(dim=1, keepdim=True)
        rows.append(out[b].index_put((valid,), w.to(dtype) @ values[b, valid].to(dtype)))
    return torch.stack(rows)


@lru_cache(maxsize=64)
def _decay_tables(size: int, decay: float, dtype: torch.dtype, device: torch.device, reverse: bool):
    """(M, p) of a chunk of ``size`` tokens. Forward: M[i, k] = decay^(k−i) for i ≤ k else 0 and
    p[k] = decay^(k+1); reverse (sums from the chunk's end): Mᵀ and p[k] = decay^(size−k)."""
    k = torch.arange(size, dtype=torch.float64)
    lag = k[None, :] - k[:, None]
    base = torch.tensor(decay, dtype=torch.float64)
    m = torch.where(lag >= 0, torch.pow(base, lag.clamp(min=0)), torch.zeros(()))
    p = torch.pow(base, k + 1)
    if reverse:
        m, p = m.T.contiguous(), p.flip(0)
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


def discounted_cumsum(x: torch.Tensor, decay: float, chunk: int = _CHUNK, reverse: bool = False) -> torch.Tensor:
    """y_t = Σ_{j ≤ t} decay^(t−j) · x_j along the last dimension (decay in [0, 1]); with ``reverse``
    the sum runs from the end: y_t = Σ_{j ≥ t} decay^(j−t) · x_j (the transpose).

    Chunks of ``chunk`` tokens are summed with one small matrix product; the running value at the
    chunk ends (starts, reversed) is the same problem with decay^chunk on L/chunk items, solved
    recursively. Memory O(numel), every intermediate bounded by Σ|x|; the result is a new tensor.
    """
    length = x.shape[-1]
    if decay == 0.0 or length == 0:
        return x.clone()
    if decay == 1.0 and not reverse:
        return x.cumsum(-1)
    size = min(chunk, length)
    n_chunks = -(-length // size)
    padded = n_chunks * size
    if padded != length:
        x = torch.nn.functional.pad(x, (0, padded - length))
    m, p = _decay_tables(size, float(decay), x.dtype, x.device, reverse)
    with _full_precision_matmul(x):
        local = x.reshape(*x.shape[:-1], n_chunks, size) @ m
    if n_chunks > 1:
        ends = discounted_cumsum(local[..., 0 if reverse else -1], float(decay) ** size, chunk, reverse)
        carry = (
            torch.nn.functional.pad(ends[..., 1:], (0, 1))
            if reverse
            else torch.nn.functional.pad(ends[..., :-1], (1, 0))
        )
        local.addcmul_(carry.unsqueeze(-1), p)
    return local.reshape(*x.shape[:-1], padded)[..., :length]


def _suffix_sum(x: torch.Tensor) -> torch.Tensor:
    """Σ_{j ≥ t} x_j along the last dimension (a new tensor)."""
    return discounted_cumsum(x, 1.0, reverse=True)


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


def _recent_kernel(x: torch.Tensor, decay: float, epsilon: float, transpose: bool = False) -> torch.Tensor:
    """ℓ_t = Σ_{j≤t} max(decay^(t−j), ε) x_j for rows whose valid tokens are contiguous from 0 (x 0 elsewhere);
    ``transpose``: Σ_{j≥t} max(decay^(j−t), ε) x_j.

    With D the recent trace, C_i = Σ_{j≤i} x_j and k = l*+1 (l* the ε window):
    ℓ_t = D_t − decay^k D_{t−k} + ε C_{t−k}. The transpose is the same with every sum run from the
    row's end (D reversed, suffix sums S_i = Σ_{j≥i} x_j) and t + k in place of t − k.
    """
    length = x.shape[-1]
    out = discounted_cumsum(x, decay, reverse=transpose)
    k = _floor_window(decay, epsilon, length) + 1
    if k >= length:
        return out
    if transpose:
        target, lagged, floor = out[..., : length - k], out[..., k:], _suffix_sum(x[..., k:])
    else:
        target, lagged, floor = out[..., k:], out[..., : length - k], x[..., : length - k].cumsum(-1)
    # ε C − decay^k D is complete before ``target`` (which overlaps ``lagged``) is written
    target.add_(floor.mul_(epsilon).add_(lagged, alpha=-(decay**k)))
    return out


def _both_kernel(x: torch.Tensor, decay: float, epsilon: float, transpose: bool = False) -> torch.Tensor:
    """ℓ_t = Σ_{j≤t} max(decay^(t−j), decay^j, ε) x_j for rows as in :func:`_recent_kernel`.

    With D the recent trace, E_i = Σ_{j≤i} decay^j x_j, C_i = Σ_{j≤i} x_j and l* the ε window:

      t = 2k+1, 2k+2 < 2l*+2:  ℓ_t = D_t − decay^(t−k) D_k + E_k
      t ≥ 2l*+2:               ℓ_t = D_t − decay^(l*+1) D_{t−l*−1} + E_{l*} + ε (C_{t−l*−1} − C_{l*})

    (without a floor the first line holds for every t ≥ 1). Every index is a slice, a pairwise view
    or one column. The transpose is :func:`_both_transpose`.
    """
    if transpose:
        return _both_transpose(x, decay, epsilon)
    length = x.shape[-1]
    out = discounted_cumsum(x, decay)
    lag = _floor_window(decay, epsilon, length)
    k = lag + 1
    split = min(length, 2 * lag + 2)
    half = split // 2
    dtype, device = x.dtype, x.device
    early = (x[..., :half] * _powers((0, half), decay, dtype, device)).cumsum_(-1)
    # pairs[..., k, :] = E_k − decay^(k+1) D_k, E_k − decay^(k+2) D_k   (for t = 2k+1, 2k+2)
    pairs = torch.addcmul(
        early.unsqueeze(-1), out[..., :half].unsqueeze(-1), _pair_cuts(half, decay, dtype, device), value=-1
    )
    if split < length:
        csum = x[..., : length - k].cumsum(-1)
        rest = csum[..., split - k :].sub_(csum[..., lag : lag + 1]).mul_(epsilon).add_(early[..., -1:])
        out[..., split:].add_(rest.add_(out[..., split - k : length - k], alpha=-(decay**k)))  # E_{l*}: half = l*+1
    out[..., 1:split].add_(pairs.flatten(-2)[..., : split - 1])
    return out


def _both_transpose(g: torch.Tensor, decay: float, epsilon: float) -> torch.Tensor:
    """Σ_{t≥j} max(decay^(t−j), decay^j, ε) g_t: the transpose of :func:`_both_kernel`.

    For j ≤ l* (decay^j ≥ ε) the weight is decay^(t−j) up to t = 2j and decay^j beyond; for j > l*
    it is the floored recent weight. With D the reversed recent trace and S the suffix sums:

      j ≤ l*, 2j+1 < L:  D_j − decay^(j+1) D_{2j+1} + decay^j S_{2j+1}
      j > l*:            D_j − decay^(l*+1) D_{j+l*+1} + ε S_{j+l*+1}   (the reversed ε-recent trace)
    """
    length = g.shape[-1]
    out = discounted_cumsum(g, decay, reverse=True)
    k = _floor_window(decay, epsilon, length) + 1
    head = min(k, length // 2)  # the positions j ≤ l* with 2j+1 < L
    if head == 0:
        return out
    suffix = _suffix_sum(g)
    dtype, device = g.dtype, g.device
    window = suffix[..., 1 : 2 * head : 2] * _powers((0, head), decay, dtype, device)
    window.addcmul_(out[..., 1 : 2 * head : 2], _powers((1, head + 1), decay, dtype, device), value=-1)
    if 2 * k < length:
        tail = suffix[..., 2 * k :].mul_(epsilon).add_(out[..., 2 * k :], alpha=-(decay**k))
        out[..., k : length - k].add_(tail)
    out[..., :head].add_(window)
    return out


def _column_trace(x: torch.Tensor | None, column: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """ℓ_t = Σ_{j<t} c_j x_j + x_t (``column`` c, ≤ 1, broadcast to x; x None: all ones, the weight
    sums); transpose: c_t Σ_{j>t} x_j + x_t."""
    if transpose:  # Σ_{j>t} x_j = S_t − x_t, S the suffix sums
        return _suffix_sum(x).sub_(x).mul_(column).add_(x)
    out = torch.empty_like(column if x is None else x)
    out[..., :1] = 0
    weighted = column[..., :-1] if x is None else torch.mul(x[..., :-1], column[..., :-1])
    torch.cumsum(weighted, -1, out=out[..., 1:])
    return out.add_(1.0 if x is None else x)


#: the decayed-running-sum kernel of each lag weighting (verl_lambda.core.choices.KERNELS)
_KERNELS = {"recent": _recent_kernel, "both": _both_kernel}
#: whether a trace_norm divides by the weight sum (verl_lambda.core.choices.TRACE_NORMS)
_NORM_DIVIDES = {"none": False, "sum": True}
if set(_KERNELS) != set(KERNELS) or set(_NORM_DIVIDES) != set(TRACE_NORMS):
    raise RuntimeError("verl_lambda.core.trace must implement every kernel and trace_norm of verl_lambda.core.choices")


def _divides_by_weight_sum(settings: LossSettings) -> bool:
    return lookup(_NORM_DIVIDES, settings.trace_norm, "trace_norm")


def _floor_window(decay: float, epsilon: float, length: int) -> int:
    """The lag up to which the weights decay exactly: l* (capped at ``length``), or ``length`` without a floor."""
    if epsilon > 0 and decay < 1.0:
        return min(_floor_lag(decay, epsilon), length)
    return length


@lru_cache(maxsize=64)
def _weight_row_sums(length: int, decay: float, kernel: str, epsilon: float, dtype, device) -> torch.Tensor:
    ones = torch.ones(1, length, dtype=torch.float64)
    return _KERNELS[kernel](ones, decay, epsilon)[0].to(dtype=dtype, device=device)


def apply_trace(values: torch.Tensor, mask: torch.Tensor, settings: LossSettings = LossSettings()) -> torch.Tensor:
    r"""The trace ℓ_t = Σ_{j ≤ t} w(t, j)·x_j of each row, O(B·L) memory.

    Args:
        values: ``[B, L]`` per-token values x (any float dtype), e.g. token log-ratios.
        mask: ``[B, L]`` valid-token mask (bool or 0/1); may have interior zeros and leading zeros.
        settings: the GRPO-λ settings; the trace reads ``lam``, ``gamma``, ``trace``,
            ``trace_anchor``, ``trace_epsilon`` and ``trace_norm``.

    Returns:
        ``[B, L]`` ℓ in float32 (float64 for float64 input), 0 at masked positions, computed with
        autocast off.
    """
    _check_shapes(values, mask)
    with exact_precision(values.device):
        valid = mask.bool()
        return masked_trace(values.to(_compute_dtype(values)).masked_fill(~valid, 0.0), valid, settings)


def masked_trace(x: torch.Tensor, valid: torch.Tensor, settings: LossSettings) -> torch.Tensor:
    """:func:`apply_trace` of values that are already 0 at masked positions and in float32 or float64
    (``valid`` a bool mask); the caller runs it with autocast off (:func:`exact_precision`)."""
    if x.shape[-1] == 0:
        return x
    return _Trace.apply(x, valid, settings)


class _Trace(torch.autograd.Function):
    """ℓ = T x with T the trace of ``settings`` on the rows of ``valid``; the backward pass is the
    transposed trace Tᵀ g (:func:`linear_trace`), so autograd keeps only the mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, valid: torch.Tensor, settings: LossSettings) -> torch.Tensor:
        ctx.save_for_backward(valid)
        ctx.settings = settings
        return linear_trace(x, valid, settings, transpose=False)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (valid,) = ctx.saved_tensors
        with exact_precision(grad.device):  # backward may run inside the caller's autocast
            return linear_trace(grad.to(_compute_dtype(grad)), valid, ctx.settings, transpose=True), None, None


def linear_trace(x: torch.Tensor, valid: torch.Tensor, settings: LossSettings, transpose: bool = False) -> torch.Tensor:
    """T x, or with ``transpose`` Tᵀ x, at valid positions (0 elsewhere), without autograd: for a
    backward pass written by hand (``x`` float32/float64, 0 at masked positions unless ``transpose``;
    autocast off). The result is a new tensor.

    Each row's valid tokens are first moved to the front (one scatter; a no-op for right-padded
    rows on the CPU), traced there and moved back (one gather); T and Tᵀ differ only in the kernel.
    """
    dtype = x.dtype
    batch, length = x.shape
    gaps = _has_gaps(valid)
    if gaps:
        dest = valid.cumsum(-1).sub_(1).masked_fill_(~valid, length)  # valid: its rank in the row; masked: L
        packed = x.new_zeros(batch, length + 1).scatter_(1, dest, x)[:, :length]
    elif transpose:  # the forward output is 0 at masked positions whatever comes in there
        packed = x.masked_fill(~valid, 0.0)
    else:
        packed = x
    chosen = weighting(settings.trace, settings.trace_anchor)
    divide = _divides_by_weight_sum(settings)
    if chosen.kernel is not None:
        decay, epsilon = settings.decay, settings.trace_epsilon
        sums = _weight_row_sums(length, decay, chosen.kernel, epsilon, dtype, x.device) if divide else None
        if divide and transpose:
            packed = packed.div_(sums)
        traced = _KERNELS[chosen.kernel](packed, decay, epsilon, transpose)
        if divide and not transpose:
            traced.div_(sums)
    else:
        column = _column_weights(chosen, valid.sum(-1, dtype=torch.int32), length, settings, dtype)
        sums = _column_trace(None, column) if divide else None  # Σ_{j<t} c_j + 1
        if divide and transpose:
            packed = packed.div_(sums)
        traced = _column_trace(packed, column, transpose)
        if divide and not transpose:
            traced.div_(sums)
    if gaps:
        return torch.nn.functional.pad(traced, (0, 1)).gather(1, dest)  # masked positions read the 0 column
    return traced.masked_fill_(~valid, 0.0)


def _has_gaps(valid: torch.Tensor) -> bool:
    """Whether a row has a valid token after a masked one (interior or leading masked tokens).

    On the CPU this is read at once; on an accelerator the answer would cost a device-to-host sync
    on every call, so rows are always compacted there (for right-padded rows that is the identity).
    """
    if valid.shape[-1] < 2:
        return False
    if valid.device.type != "cpu":
        return True
    return bool((valid[:, 1:] > valid[:, :-1]).any())


@lru_cache(maxsize=16)
def _length_windows(length: int, decay: float, shift: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[L+1, L] view: row L − n, column j holds decay^max(n − shift − j, 0)."""
    exponents = (length - shift - torch.arange(2 * length, dtype=torch.float64)).clamp(min=0)
    table = torch.pow(torch.tensor(decay, dtype=torch.float64), exponents).to(dtype=dtype, device=device)
    return table.unfold(0, length, 1)


def _column_weights(
    chosen: Weighting, lengths: torch.Tensor, length: int, settings: LossSettings, dtype
) -> torch.Tensor:
    """c_j = w(t, j) for j < t of a weighting that depends on the column only: ``[B, L]`` (n per row
    from ``lengths``) or ``[1, L]`` (no n in it), floored at ε; entries at j ≥ n are finite but
    arbitrary (x is 0 there)."""
    device = lengths.device
    if chosen.length_window is not None:
        shift, keeps_first = chosen.length_window
        column = _length_windows(length, settings.decay, shift, dtype, device)[length - lengths]
        if keeps_first:
            torch.maximum(column, _powers((0, length), settings.decay, dtype, device), out=column)
        return column.clamp_(min=settings.trace_epsilon)
    j = torch.arange(length, dtype=torch.float64, device=device)[None, :]
    n = lengths.to(torch.float64)[:, None]
    column = chosen.weight(None, j, n, _power(settings.decay, device))
    return column.clamp(min=settings.trace_epsilon).to(dtype)
