"""The methods the demo compares: GRPO, and GRPO-λ with some of its settings fixed.

A GRPO-λ method fixes only the settings that define it; every other setting comes from the demo's
flags, which are derived from :class:`~verl_lambda.core.settings.GRPOLambdaSettings` (so their
defaults are the settings' defaults). ``grpo_lambda`` fixes nothing: it is GRPO-λ as the flags say.
Standard library only (the command line imports this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verl_lambda.core.settings import GRPOLambdaSettings
from verl_lambda.verl.keys import ESTIMATOR_NAME, LOSS_NAME

__all__ = ["Method", "METHODS", "BASELINE", "CLAMP_ONLY", "DEFAULT_METHODS"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # legend and table label
    description: str
    #: the GRPO-λ settings this method fixes, as (name, value) pairs; None: GRPO (no GRPO-λ setting applies)
    fixed: tuple[tuple[str, Any], ...] | None

    @property
    def is_grpo_lambda(self) -> bool:
        return self.fixed is not None

    @property
    def estimator(self) -> str:
        """The advantage estimator passed to verl's ``compute_advantage``."""
        return ESTIMATOR_NAME if self.is_grpo_lambda else "grpo"

    @property
    def loss_mode(self) -> str:
        """The policy loss passed to verl's ``get_policy_loss_fn``."""
        return LOSS_NAME if self.is_grpo_lambda else "vanilla"

    @property
    def fixed_settings(self) -> dict[str, Any]:
        return dict(self.fixed or ())

    def settings(self, flags: GRPOLambdaSettings) -> GRPOLambdaSettings | None:
        """The GRPO-λ settings of this method: its fixed ones over ``flags``; None for GRPO."""
        if not self.is_grpo_lambda:
            return None
        return GRPOLambdaSettings.from_values({**flags.values(), **self.fixed_settings})


#: the authors' code: weights below the diagonal counted from the response's last token, ε = 1e-7
_AUTHORS = (("trace_anchor", "end"), ("trace", "recent"), ("trace_epsilon", 1e-7))

METHODS = {
    method.name: method
    for method in (
        Method("grpo", "GRPO", "verl's grpo estimator and vanilla loss", None),
        Method(
            "grpo_lambda_clamp_only",
            "clamp only",
            "GRPO-λ with λ = 0: the identity trace (verl's vanilla loss), only the negative-advantage clamp",
            (("lam", 0.0), ("trace", "recent"), ("trace_epsilon", 0.0), ("trace_application", "ratio")),
        ),
        Method("grpo_lambda_recent", "GRPO-λ (recent)", "GRPO-λ, trace recent", (("trace", "recent"),)),
        Method("grpo_lambda_both", "GRPO-λ (both)", "GRPO-λ, trace both", (("trace", "both"),)),
        Method(
            "grpo_lambda_end",
            "GRPO-λ (end)",
            "the authors' convention: trace recent anchored at the response's end, ε = 1e-7, traced ratio",
            (*_AUTHORS, ("trace_application", "ratio")),
        ),
        Method(
            "grpo_lambda_end_weight",
            "GRPO-λ (end, weight)",
            "the authors' convention, applied as a weight on vanilla's loss (their update_style=weight)",
            (*_AUTHORS, ("trace_application", "weight")),
        ),
        Method("grpo_lambda", "GRPO-λ", "GRPO-λ with every setting from the flags", ()),
    )
}
BASELINE = "grpo"
CLAMP_ONLY = "grpo_lambda_clamp_only"
DEFAULT_METHODS = ("grpo", "grpo_lambda_clamp_only", "grpo_lambda_recent", "grpo_lambda_both")
