"""Independent float64 implementations of the GRPO-λ spec, written as plainly as possible.

Nothing here imports verl_lambda: these loops are what the package is checked against.
"""

from __future__ import annotations

import statistics

import torch


def weight(t: int, j: int, decay: float, style: str, epsilon: float, anchor: str = "token", n: int = 0) -> float:
    """w(t, j) for valid-token positions j ≤ t of a response of n valid tokens, straight from the
    spec's tables (§4 a and b): 1 on the diagonal, the style's formula floored at ε below it."""
    if j == t:
        return 1.0
    below = {  # §4 (a) and (b), one line per table row
        ("recent", "token"): lambda: decay ** (t - j),
        ("both", "token"): lambda: max(decay ** (t - j), decay**j),
        ("early", "token"): lambda: decay**j,
        ("recent", "end"): lambda: decay ** (n - 1 - j),
        ("both", "end"): lambda: max(decay ** (n - j), decay**j),
        ("early", "end"): lambda: decay**j,
    }
    if (style, anchor) not in below:
        raise ValueError(f"the spec defines no weight for trace={style!r}, trace_anchor={anchor!r}")
    return max(below[(style, anchor)](), epsilon)


def trace(x, mask, lam, gamma, style, epsilon, norm, anchor="token"):
    """Σ_{j ≤ t} w(t, j) x_j as a float64 tensor, by a double loop over valid positions of each row."""
    if norm not in ("none", "sum"):
        raise ValueError(f"the spec defines no trace_norm={norm!r}")
    decay = gamma * lam
    x = x.detach().double()
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        cols = [c for c in range(x.shape[1]) if bool(mask[b, c])]
        for t, col_t in enumerate(cols):
            total, weights = 0.0, 0.0
            for j, col_j in enumerate(cols[: t + 1]):
                w = weight(t, j, decay, style, epsilon, anchor, len(cols))
                total += w * float(x[b, col_j])
                weights += w
            out[b, col_t] = total / weights if norm == "sum" else total
    return out


traced_log_ratio = trace  # ℓ is the trace of the token log-ratios


def credit(n: int, decay: float, style: str, epsilon: float, norm: str, anchor: str = "token") -> list[float]:
    """Gradient weight of token k at ρ = 1 under a token-sum loss: Σ_{t ≥ k} w(t, k) (/ row sums)."""
    out = []
    for k in range(n):
        c = 0.0
        for t in range(k, n):
            w = weight(t, k, decay, style, epsilon, anchor, n)
            if norm == "sum":
                w /= sum(weight(t, j, decay, style, epsilon, anchor, n) for j in range(t + 1))
            c += w
        out.append(c)
    return out


def token_losses(old_log_prob, log_prob, advantages, mask, settings, clip_low, clip_high, clip_c, is_weights=None):
    """Per-token loss of the spec (§3, §4b), differentiable in ``log_prob`` (float64 autograd).

    ``settings`` is a dict of the GRPO-λ loss settings; ``trace_anchor`` and ``trace_application``
    default to the spec's defaults ("token", "ratio") when absent.
    """
    decay = settings["gamma"] * settings["lam"]
    anchor = settings.get("trace_anchor", "token")
    application = settings.get("trace_application", "ratio")
    if application not in ("ratio", "weight") or settings["trace_norm"] not in ("none", "sum"):
        raise ValueError(
            f"the spec defines no trace_application={application!r} / trace_norm={settings['trace_norm']!r}"
        )
    rows = []
    for b in range(log_prob.shape[0]):
        cols = [c for c in range(log_prob.shape[1]) if bool(mask[b, c])]
        n = len(cols)
        row = [log_prob.new_zeros(()) for _ in range(log_prob.shape[1])]
        x = {c: (log_prob[b, c] - old_log_prob[b, c]).clamp(-20.0, 20.0) for c in cols}
        for t, col_t in enumerate(cols):
            terms, weights = [], []
            for j, col_j in enumerate(cols[: t + 1]):
                w = weight(t, j, decay, settings["trace"], settings["trace_epsilon"], anchor, n)
                value = x[col_j] if application == "ratio" else 1.0 + torch.sigmoid(log_prob[b, col_j] - 1.0)
                terms.append(w * value)
                weights.append(w)
            traced = sum(terms)
            if settings["trace_norm"] == "sum":
                traced = traced / sum(weights)
            if application == "ratio":
                ratio, factor = torch.exp(traced.clamp(-20.0, 20.0)), 1.0
            else:
                ratio, factor = torch.exp(x[col_t]), traced
            a = float(advantages[b, col_t])
            loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - clip_low, 1 + clip_high))
            if a < 0:
                loss = torch.minimum(loss, torch.tensor(-a * clip_c, dtype=loss.dtype))
            loss = loss * factor
            if is_weights is not None:
                loss = loss * float(is_weights[b, col_t])
            row[col_t] = loss
        rows.append(torch.stack(row))
    return torch.stack(rows)


def authors_grpol_loss(old_log_prob, log_prob, grpo_advantages, mask, lam, gamma, style, update_style, adv_clamp,
                       clip=0.2):  # fmt: skip
    """The authors' ``grpol`` loss as their code computes it, transcribed from the spec (§4 b, §4b)
    in float64 with their per-sequence option (n = the response's length, one dense n×n matrix per
    response): the clamp applied in the loss, ε = 1e-7 below the diagonal, no dual clip, no guard on
    exp(ℓ), the trace applied to log π_θ and log π_old separately, token-mean over the micro-batch."""
    decay = gamma * lam
    total, count = log_prob.new_zeros(()), 0
    for b in range(log_prob.shape[0]):
        cols = [c for c in range(log_prob.shape[1]) if bool(mask[b, c])]
        n = len(cols)
        w = torch.zeros(n, n, dtype=torch.float64)
        for t in range(n):
            for j in range(t + 1):
                if j == t:
                    w[t, j] = 1.0
                elif style == "recent":
                    w[t, j] = max(1e-7, decay ** (n - 1 - j))
                elif style == "both":
                    w[t, j] = max(1e-7, decay ** (n - j), decay**j)
                else:
                    w[t, j] = max(1e-7, decay**j)
        new, old = log_prob[b, cols], old_log_prob[b, cols]
        adv = grpo_advantages[b, cols].clamp(min=adv_clamp)
        if update_style == "ppo":
            ratio = torch.exp(w @ new - w @ old)
            per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
        else:
            ratio = torch.exp((new - old).clamp(-20.0, 20.0))
            eligibility = w @ (1.0 + torch.sigmoid(new - 1.0))
            per_token = eligibility * torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))
        total = total + per_token.sum()
        count += n
    return total / count


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
