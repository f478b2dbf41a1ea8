"""The methods the demo compares: which verl advantage estimator and policy loss each one uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Method:
    name: str
    estimator: str  # name passed to verl's compute_advantage
    loss_mode: str  # name passed to verl's get_policy_loss_fn
    trace: Optional[str]  # GRPO-λ trace style, None for GRPO
    label: str  # legend and table label


METHODS = {
    method.name: method
    for method in (
        Method("grpo", "grpo", "vanilla", None, "GRPO"),
        Method("grpo_lambda_recent", "grpo_lambda", "grpo_lambda", "recent", "GRPO-λ (recent)"),
        Method("grpo_lambda_both", "grpo_lambda", "grpo_lambda", "both", "GRPO-λ (both)"),
    )
}
BASELINE = "grpo"
