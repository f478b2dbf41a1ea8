r"""Every closed choice of GRPO-λ, one table each: the words a setting accepts and what each means.

* :data:`TRACE_STYLES` (``trace``), :data:`TRACE_ANCHORS` (``trace_anchor``),
  :data:`TRACE_APPLICATIONS` (``trace_application``), :data:`TRACE_NORMS` (``trace_norm``): word ->
  one-line meaning. The settings' allowed values, ``verl-lambda credit``, the documentation tables
  and the tests take their lists from these tables.
* :data:`WEIGHTINGS`: (style, anchor) -> :class:`Weighting`, the weight w(t, j) below the diagonal
  (j < t; w(t, t) = 1 always, the ε floor applies on top): its formula over position grids, and
  how the fast trace computes it (one prefix sum of a column weight c_j, or a named kernel of
  decayed running sums). :func:`weighting` is the one lookup; it raises on a pair it does not know.

Positions t, j count the valid tokens of a response from 0, n is their number and r = γλ. The
formulas are written with tensor methods only, so this module imports nothing but the standard
library; the callers hand in float64 tensors and ``power(e) = r^e``.

Adding a trace style: one entry in :data:`TRACE_STYLES`, one :class:`Weighting` per anchor in
:data:`WEIGHTINGS` (CONTRIBUTING.md, "Adding a trace style").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "TRACE_STYLES",
    "TRACE_ANCHORS",
    "TRACE_APPLICATIONS",
    "TRACE_NORMS",
    "KERNELS",
    "Weighting",
    "WEIGHTINGS",
    "weighting",
    "lookup",
]

TRACE_STYLES: Mapping[str, str] = {
    "recent": "weight decays away from the anchor",
    "both": "the first tokens keep weight too",
    "early": "weight decays from the first token",
}
TRACE_ANCHORS: Mapping[str, str] = {
    "token": "decay counted back from the current token (the eligibility trace)",
    "end": "the authors' code: weights below the diagonal counted from the response's last token",
}
TRACE_APPLICATIONS: Mapping[str, str] = {
    "ratio": "the traced ratio exp(ℓ) inside PPO's clip",
    "weight": "vanilla's per-token loss times the eligibility Σ_j w(t, j)·(1 + σ(log π(o_j) − 1))",
}
TRACE_NORMS: Mapping[str, str] = {
    "none": "the paper's form",
    "sum": "divide each traced value by its weight sum (GRPO's gradient scale)",
}
#: the decayed-running-sum kernels of the fast trace (verl_lambda.core.trace), for weightings that
#: depend on the lag t − j: "recent" is r^(t−j), "both" is max(r^(t−j), r^j)
KERNELS = ("recent", "both")


def lookup(table: Mapping[Any, Any], value: Any, setting: str) -> Any:
    """``table[value]``; a value the table does not know is a ValueError naming the allowed ones."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{setting} must be one of {list(table)}, got {value!r}") from None


Power = Callable[[Any], Any]


@dataclass(frozen=True)
class Weighting:
    """w(t, j) for j < t of one trace style read with one anchor.

    ``weight(t, j, n, power)`` gives w on float64 position tensors (t a column, j a row, n one
    number per row), broadcast by the caller to the full grid; entries at j ≥ t are discarded by the
    caller. ``kernel`` names the decayed-running-sum kernel of the fast trace (:data:`KERNELS`) for
    a weighting that depends on the lag t − j; None means w(t, j) = c_j(n) for every t > j, so the
    fast trace is one prefix sum of c_j x_j and ``weight`` ignores t (callers may pass None).
    ``length_window`` (s, keeps_first), for a column weight that depends on n: it is
    max(r^(n−s−j), r^j if keeps_first), which the fast trace reads as one window of a table of
    powers per row instead of evaluating ``weight`` on the B×L grid (tested bit-identical).
    """

    formula: str
    weight: Callable[[Any, Any, Any, Power], Any]
    kernel: str | None = None
    length_window: tuple[int, bool] | None = None

    def __post_init__(self):
        if self.kernel is not None and self.kernel not in KERNELS:
            raise ValueError(f"{self.formula}: kernel must be one of {list(KERNELS)} or None, got {self.kernel!r}")
        if self.kernel is not None and self.length_window is not None:
            raise ValueError(f"{self.formula}: a kernel weighting has no length_window")


def _lag(t, j):
    return (t - j).clamp(min=0)


WEIGHTINGS: Mapping[tuple[str, str], Weighting] = {
    ("recent", "token"): Weighting("r^(t−j)", lambda t, j, n, power: power(_lag(t, j)), kernel="recent"),
    ("both", "token"): Weighting(
        "max(r^(t−j), r^j)", lambda t, j, n, power: power(_lag(t, j)).maximum(power(j)), kernel="both"
    ),
    ("early", "token"): Weighting("r^j", lambda t, j, n, power: power(j)),
    ("recent", "end"): Weighting("r^(n−1−j)", lambda t, j, n, power: power(_lag(n - 1, j)), length_window=(1, False)),
    # exponent n − j, not n − 1 − j: kept as the authors wrote it
    ("both", "end"): Weighting(
        "max(r^(n−j), r^j)", lambda t, j, n, power: power(_lag(n, j)).maximum(power(j)), length_window=(0, True)
    ),
    ("early", "end"): Weighting("r^j", lambda t, j, n, power: power(j)),
}


def weighting(style: str, anchor: str) -> Weighting:
    """The weighting of ``trace=style`` with ``trace_anchor=anchor``; ValueError for an unknown word."""
    lookup(TRACE_STYLES, style, "trace")
    lookup(TRACE_ANCHORS, anchor, "trace_anchor")
    return lookup(WEIGHTINGS, (style, anchor), "(trace, trace_anchor)")


def _check_complete() -> None:
    expected = {(style, anchor) for style in TRACE_STYLES for anchor in TRACE_ANCHORS}
    if set(WEIGHTINGS) != expected:
        raise RuntimeError(f"WEIGHTINGS must cover every (style, anchor): missing {sorted(expected - set(WEIGHTINGS))}")


_check_complete()
