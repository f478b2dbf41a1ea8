r"""The critic-free TD error of GRPO-λ: a clamped group-normalised outcome advantage (pure torch).

For response i of group g (the responses to one prompt) with outcome score R_i:

    Â_i = (R_i − mean_g) / (std_g + ε)      (or R_i − mean_g without the std division)
    δ_i = max(Â_i, c)                        c = ``settings.adv_clamp``; None: no clamp

with the unbiased (Bessel) std, and verl's convention for a group of one: mean 0, std 1. A score that
is NaN or infinite is refused (ValueError naming its group): it would turn its group into NaN. Group
statistics are computed in float64 (a reward of 1e20 does not overflow), groups are the exact uid
values (1.0 and 1.5 are two groups, 0 and "0" too). Both framework adapters call
:func:`group_advantages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from verl_lambda.core.settings import AdvantageSettings

__all__ = ["group_ids", "group_advantages"]


def group_ids(uids: Sequence[Any] | torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(index, n_groups)``: a ``[N]`` long tensor numbering the distinct uid values 0..G−1 in order
    of first appearance. A missing (None) or NaN uid raises ``ValueError`` with one line."""
    if isinstance(uids, torch.Tensor):
        uids = uids.reshape(-1).tolist()
    numbers: dict[Any, int] = {}
    index = []
    for row, uid in enumerate(uids):
        if uid is None or uid != uid:  # NaN is the only value unequal to itself
            raise ValueError(f"the group id (uid) of row {row} is {uid!r}: every response needs a real group id")
        index.append(numbers.setdefault((isinstance(uid, str), uid), len(numbers)))
    return torch.tensor(index, dtype=torch.long), len(numbers)


def group_advantages(
    scores: torch.Tensor,
    uids: Sequence[Any] | torch.Tensor,
    settings: AdvantageSettings = AdvantageSettings(),
    *,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """δ per response: ``scores`` ``[N]`` outcome scores, ``uids`` ``[N]`` group ids.

    Returns ``[N]`` in the dtype of ``scores`` promoted to at least float32, on its device.
    """
    if scores.dim() != 1 or len(uids) != scores.shape[0]:
        raise ValueError(f"scores must be [N] with one uid each, got {tuple(scores.shape)} and {len(uids)} uids")
    out_dtype = torch.promote_types(scores.dtype, torch.float32)
    index, n_groups = group_ids(uids)
    finite = torch.isfinite(scores.detach())
    if not bool(finite.all()):  # one such score would make its whole group's advantages NaN
        row = int((~finite).nonzero()[0])
        uid = uids[row].item() if isinstance(uids, torch.Tensor) else uids[row]
        raise ValueError(
            f"the score of response {row} (group uid {uid!r}) is {float(scores[row])}: every reward must be a "
            "finite number; fix the reward function"
        )
    index = index.to(scores.device)
    with torch.no_grad():
        x = scores.detach().to(torch.float64)
        count = torch.zeros(n_groups, dtype=torch.float64, device=x.device).index_add_(0, index, torch.ones_like(x))
        mean = torch.zeros_like(count).index_add_(0, index, x) / count.clamp(min=1)
        centred = x - mean[index]
        var = torch.zeros_like(count).index_add_(0, index, centred * centred) / (count - 1).clamp(min=1)
        single = count < 2
        mean = torch.where(single, torch.zeros_like(mean), mean)
        std = torch.where(single, torch.ones_like(var), var.sqrt())
        advantage = x - mean[index]
        if norm_by_std:
            advantage = advantage / (std[index] + epsilon)
        if settings.adv_clamp is not None:
            advantage = advantage.clamp(min=settings.adv_clamp)
    return advantage.to(out_dtype)
