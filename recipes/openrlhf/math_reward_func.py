"""OpenRLHF reward function (``--reward.remote_url recipes/openrlhf/math_reward_func.py``).

Scores a response with the same rule as the verl recipes (:func:`verl_lambda.math.reward.compute_score`:
1.0 when the last ``\\boxed{...}`` equals the reference answer, else 0.0), so GRPO-λ runs in verl and
in OpenRLHF train on the same reward. Labels come from ``--data.label_key``: the ``reward_model``
column of the parquet files written by ``recipes/prepare_data.sh`` (``{"ground_truth": ...}``) or a
plain answer string.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_lambda.math.reward import compute_score


def _ground_truth(label: Any) -> Any:
    if isinstance(label, dict):
        return label.get("ground_truth")
    return label


def _response(query: str, prompt: str) -> str:
    """The generated part of ``query`` (prompt + response, as OpenRLHF decodes it)."""
    if isinstance(prompt, str) and prompt and query.startswith(prompt):
        return query[len(prompt) :]
    if isinstance(prompt, str) and prompt and prompt in query:
        return query[query.index(prompt) + len(prompt) :]
    return query


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict:
    """OpenRLHF's custom reward interface: rewards (for the advantage), scores (for filtering), logs."""
    results = [
        compute_score("openrlhf", _response(query, prompt), _ground_truth(label))
        for query, prompt, label in zip(queries, prompts, labels)
    ]
    rewards = torch.tensor([r["score"] for r in results], dtype=torch.float32)
    timed_out = torch.tensor([float(r["timed_out"]) for r in results])
    logs = {"math_accuracy": rewards.mean(), "math_timed_out": timed_out.mean()}
    return {"rewards": rewards, "scores": rewards, "extra_logs": logs}
