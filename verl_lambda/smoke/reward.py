"""The toy reward of a smoke run, in verl's ``custom_reward_function`` form.

A random tiny model almost never writes the right sum, and a reward that is always 0 gives every
response the same (zero) advantage. :func:`compute_score` therefore pays 1.0 for a response that
contains the ground-truth number and otherwise the fraction of its characters that are digits, so
responses in one group get different scores. Select it with
``reward.custom_reward_function.path=pkg://verl_lambda.smoke.reward``.
"""

from __future__ import annotations

from typing import Any

from verl_lambda.smoke import require_supported_verl

require_supported_verl(__name__)

__all__ = ["compute_score"]


def compute_score(
    data_source: str, solution_str: str | None, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> float:
    """1.0 if ``str(ground_truth)`` occurs in the response, else the share of digit characters in it."""
    text = solution_str or ""
    if str(ground_truth) in text:
        return 1.0
    if not text:
        return 0.0
    return sum(c.isdigit() for c in text) / len(text)
