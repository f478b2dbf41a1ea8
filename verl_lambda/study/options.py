"""What the study's command line needs before any heavy import: positions, arms, methods, sizes.

Standard library only, so that ``verl-lambda study`` checks its arguments in a fraction of a second.
The method list is built from the vocabularies of :mod:`verl_lambda.core.choices`: every
(anchor, application) reading of the ``recent`` trace at each λ, then the other styles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_STYLES
from verl_lambda.core.settings import GRPOLambdaSettings

__all__ = [
    "POSITIONS",
    "Arm",
    "ARMS",
    "StudyMethod",
    "GRPO",
    "CLAMP_ONLY",
    "LAMS",
    "study_methods",
    "METHOD_NAMES",
    "StudyConfig",
    "FULL",
    "QUICK",
    "decisive_positions",
    "Setting",
]

#: where the decisive tokens sit in the response
POSITIONS = {
    "early": "the first K tokens",
    "middle": "K consecutive tokens at the middle",
    "late": "the last K tokens",
    "spread": "K tokens evenly spaced over the response",
}


def decisive_positions(position: str, length: int, count: int) -> tuple[int, ...]:
    """The 0-based response positions of the ``count`` decisive tokens for ``position``."""
    if not 1 <= count <= length:
        raise ValueError(f"need 1 ≤ decisive count ≤ length, got {count} and {length}")
    if position == "early":
        return tuple(range(count))
    if position == "late":
        return tuple(range(length - count, length))
    if position == "middle":
        start = (length - count) // 2
        return tuple(range(start, start + count))
    if position == "spread":
        return tuple(int((i + 0.5) * length / count) for i in range(count))
    raise ValueError(f"position must be one of {list(POSITIONS)}, got {position!r}")


@dataclass(frozen=True)
class Arm:
    """How often one batch of responses is reused: on-policy (one update) or off-policy (several)."""

    name: str
    epochs: int
    mini_batches: int
    description: str

    @property
    def updates_per_step(self) -> int:
        return self.epochs * self.mini_batches


ARMS = {
    arm.name: arm
    for arm in (
        Arm("on", 1, 1, "on-policy: 1 epoch, 1 mini-batch (old = new log-probs: the traced ratio is 1)"),
        Arm("off", 2, 4, "off-policy: 2 epochs of 4 mini-batches (8 updates per batch: the traced ratio moves)"),
    )
}


@dataclass(frozen=True)
class Setting:
    """One cell of the study: where the decisive tokens are, and the arm."""

    position: str
    arm: str

    @property
    def name(self) -> str:
        return f"{self.position}/{self.arm}"


@dataclass(frozen=True)
class StudyMethod:
    """A method of the study; ``fixed`` None is GRPO (verl's ``grpo`` estimator and ``vanilla`` loss)."""

    name: str
    fixed: tuple[tuple[str, Any], ...] | None
    description: str

    @property
    def is_grpo_lambda(self) -> bool:
        return self.fixed is not None

    def settings(self) -> GRPOLambdaSettings | None:
        """Its GRPO-λ settings (the fixed ones over the defaults); None for GRPO."""
        return None if self.fixed is None else GRPOLambdaSettings.from_values(dict(self.fixed))

    def reading(self) -> dict[str, Any]:
        """trace, anchor, application, λ (empty strings / None for GRPO)."""
        values = self.settings().values() if self.fixed is not None else {}
        return {
            "trace": values.get("trace", ""),
            "anchor": values.get("trace_anchor", ""),
            "application": values.get("trace_application", ""),
            "lam": values.get("lam"),
        }


GRPO = "grpo"
CLAMP_ONLY = "clamp_only"
#: λ of the trace variants: the paper's 0.99 and one lower value
LAMS = (0.99, 0.9)


def _traced(style: str, anchor: str, application: str, lam: float) -> StudyMethod:
    name = f"{style}/{anchor}/{application}/lam{lam:g}"
    fixed = (
        ("trace", style),
        ("trace_anchor", anchor),
        ("trace_application", application),
        ("lam", lam),
        ("trace_epsilon", 0.0),
        ("trace_norm", "none"),
    )
    return StudyMethod(name, fixed, f"GRPO-λ: trace {style}, anchor {anchor}, application {application}, λ = {lam:g}")


def study_methods(lams: tuple[float, ...] = LAMS) -> dict[str, StudyMethod]:
    """GRPO, the clamp alone, the four (anchor × application) readings of ``recent`` at each λ, and
    the other styles (``both``, ``early``) with the token anchor and the traced ratio at the first λ."""
    methods = [
        StudyMethod(GRPO, None, "verl's grpo estimator and vanilla loss"),
        StudyMethod(
            CLAMP_ONLY,
            (("lam", 0.0), ("trace", "recent"), ("trace_epsilon", 0.0), ("trace_application", "ratio")),
            "GRPO-λ with λ = 0: the identity trace (verl's vanilla loss) on the clamped advantages",
        ),
    ]
    for lam in lams:
        for anchor in TRACE_ANCHORS:
            for application in TRACE_APPLICATIONS:
                methods.append(_traced("recent", anchor, application, lam))
    for style in TRACE_STYLES:
        if style != "recent":
            methods.append(_traced(style, "token", "ratio", lams[0]))
    return {m.name: m for m in methods}


METHOD_NAMES = tuple(study_methods())


@dataclass(frozen=True)
class StudyConfig:
    """Everything a run of the study fixes; the same for every method."""

    # task
    length: int = 128  # response tokens (64 ... 256)
    decisive: int = 4  # decisive tokens K
    vocab: int = 16  # response vocabulary (filler entropy at the start: log 16 = 2.77 nats per token)
    prompts: int = 1  # distinct prompts; each has its own target for every decisive token
    task_seed: int = 20251001  # the targets (the same for every seed and method)
    # policy
    hidden: int = 64
    # RL
    steps: int = 300  # RL steps of the on-policy arm
    off_steps: int = 120  # RL steps of the off-policy arm (8 updates per step: it learns faster per step)
    prompts_per_step: int = 8
    group_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    clip_ratio: float = 0.2
    # analysis
    threshold: float = 0.6  # exact expected reward for "steps to threshold"
    smooth: int = 10  # trailing moving-average window (steps) of the curve that steps-to-threshold reads
    curve_every: int = 10  # steps between the points of curves.csv

    def steps_for(self, arm: str) -> int:
        return self.off_steps if arm == "off" else self.steps

    def with_values(self, **values) -> StudyConfig:
        return replace(self, **{k: v for k, v in values.items() if v is not None})


FULL = StudyConfig()
QUICK = StudyConfig(steps=100, off_steps=40, curve_every=2)
