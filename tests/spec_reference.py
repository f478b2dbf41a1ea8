"""Independent float64 implementations of the GRPO-λ spec, written as plainly as possible.

Nothing here imports verl_lambda: these loops are what the package is checked against.
"""

from __future__ import annotations

import statistics

import torch


def weight(t: int, j: int, decay: float, style: str, epsilon: float) -> float:
    """w(t, j) for valid-token positions j ≤ t, straight from the spec's table."""
    w = decay ** (t - j)
    if style == "both":
        w = max(w, decay**j)
    return max(w, epsilon)


def traced_log_ratio(x, mask, lam, gamma, style, epsilon, norm):
    """ℓ as a float64 tensor, by a double loop over valid positions of each row."""
    decay = gamma * lam
    x = x.detach().double()
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        cols = [c for c in range(x.shape[1]) if bool(mask[b, c])]
        for t, col_t in enumerate(cols):
            total, weights = 0.0, 0.0
            for j, col_j in enumerate(cols[: t + 1]):
                w = weight(t, j, decay, style, epsilon)
                total += w * float(x[b, col_j])
                weights += w
            out[b, col_t] = total / weights if norm == "sum" else total
    return out


def credit(n: int, decay: float, style: str, epsilon: float, norm: str) -> list[float]:
    """Gradient weight of token k at ρ = 1 under a token-sum loss: Σ_{t ≥ k} w(t, k) (/ row sums)."""
    out = []
    for k in range(n):
        c = 0.0
        for t in range(k, n):
            w = weight(t, k, decay, style, epsilon)
            if norm == "sum":
                w /= sum(weight(t, j, decay, style, epsilon) for j in range(t + 1))
            c += w
        out.append(c)
    return out


def token_losses(old_log_prob, log_prob, advantages, mask, settings, clip_low, clip_high, clip_c, is_weights=None):
    """Per-token loss of the spec (§3), differentiable in ``log_prob`` (float64 autograd)."""
    decay = settings["gamma"] * settings["lam"]
    rows = []
    for b in range(log_prob.shape[0]):
        cols = [c for c in range(log_prob.shape[1]) if bool(mask[b, c])]
        row = [log_prob.new_zeros(()) for _ in range(log_prob.shape[1])]
        for t, col_t in enumerate(cols):
            terms = []
            weights = []
            for j, col_j in enumerate(cols[: t + 1]):
                w = weight(t, j, decay, settings["trace"], settings["trace_epsilon"])
                terms.append(w * (log_prob[b, col_j] - old_log_prob[b, col_j]))
                weights.append(w)
            ell = sum(terms)
            if settings["trace_norm"] == "sum":
                ell = ell / sum(weights)
            ratio = torch.exp(ell.clamp(-20.0, 20.0))
            a = float(advantages[b, col_t])
            loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_low, 1 + clip_high))
            if a < 0:
                loss = torch.minimum(loss, torch.tensor(-a * clip_c, dtype=loss.dtype))
            if is_weights is not None:
                loss = loss * float(is_weights[b, col_t])
            row[col_t] = loss
        rows.append(torch.stack(row))
    return torch.stack(rows)


def aggregate(losses, mask, mode, batch_num_tokens=None, global_batch_size=None, dp_size=1):
    """verl's loss aggregation modes, restated (token-mean, token-sum, seq-mean-*)."""
    mask = mask.double()
    if mode == "token-mean":
        n = mask.sum() if batch_num_tokens is None else batch_num_tokens
        return (losses * mask).sum() / n * dp_size
    if mode == "token-sum":
        return (losses * mask).sum() * dp_size
    seq_len = mask.sum(-1)
    n_seq = (seq_len > 0).double().sum() if global_batch_size is None else global_batch_size
    if mode == "seq-mean-token-sum":
        return (losses * mask).sum(-1).sum() / n_seq * dp_size
    if mode == "seq-mean-token-mean":
        per_seq = (losses * mask).sum(-1) / (seq_len + 1e-8)
        return per_seq.sum() / n_seq * dp_size
    raise ValueError(mode)


def grpo_lambda_advantage(rewards, mask, uids, clamp, norm_by_std, eps=1e-6):
    """Clamped group-normalised outcome advantage, one Python loop over groups."""
    scores = [float(s) for s in rewards.double().sum(-1)]
    groups: dict = {}
    for i, u in enumerate(uids):
        groups.setdefault(u, []).append(i)
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for members in groups.values():
        vals = [scores[i] for i in members]
        if len(vals) == 1:
            mean, std = 0.0, 1.0  # verl's GRPO convention for a group of one
        else:
            mean, std = statistics.fmean(vals), statistics.stdev(vals)
        for i in members:
            a = scores[i] - mean
            if norm_by_std:
                a = a / (std + eps)
            if clamp is not None:
                a = max(a, clamp)
            out[i] = a * mask[i].double()
    return out


def random_mask(generator, batch: int, length: int, interior_zeros: bool = True, leading: bool = False):
    """Right-padded rows of random lengths 0..length, optionally with holes and leading zeros."""
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    if interior_zeros:
        mask &= torch.rand(batch, length, generator=generator) > 0.25
    if leading:
        start = torch.randint(0, max(1, length // 3), (batch,), generator=generator)
        mask &= torch.arange(length)[None, :] >= start[:, None]
    return mask

