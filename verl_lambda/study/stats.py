r"""The study's statistics: small pure functions (standard library only), tested on hand-made numbers.

* :func:`t_quantile`: the Student-t quantile, exact to ~1e-12 (the regularised incomplete beta
  function by its continued fraction, inverted by bisection); no scipy needed.
* :func:`paired_difference`: per-seed differences ``method − reference`` on the seeds both have,
  their mean, sample standard deviation, standard error and the two-sided 95 % t-interval
  mean ± t_{0.975, n−1} · sd/√n (None for fewer than two seeds), and the t-test p-value.
* :func:`moving_average` (trailing) and :func:`steps_to_threshold`: the first step at which the
  smoothed curve reaches the threshold, None when it never does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "mean",
    "sample_sd",
    "t_cdf",
    "t_quantile",
    "PairedDifference",
    "paired_difference",
    "moving_average",
    "steps_to_threshold",
]


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def sample_sd(values: Sequence[float]) -> float:
    """Standard deviation with n − 1 in the denominator (0 for one value)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            step = d * c
            h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. 2.776 for 0.975, 4)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedDifference:
    """``method − reference`` per common seed and what follows from it."""

    seeds: tuple
    differences: tuple[float, ...]
    mean: float | None
    sd: float | None
    standard_error: float | None
    low: float | None  # 95 % t-interval (None for fewer than two seeds)
    high: float | None
    p_value: float | None  # two-sided paired t-test (None for fewer than two seeds; 1 or 0 when sd = 0)

    @property
    def n(self) -> int:
        return len(self.differences)


def paired_difference(
    values: Mapping[object, float], reference: Mapping[object, float], confidence: float = 0.95
) -> PairedDifference:
    """The paired difference of ``values`` (seed -> value) against ``reference`` on the seeds both have."""
    seeds = tuple(sorted(set(values) & set(reference)))
    differences = tuple(values[s] - reference[s] for s in seeds)
    n = len(differences)
    if n == 0:
        return PairedDifference(seeds, differences, None, None, None, None, None, None)
    m = mean(differences)
    if n == 1:
        return PairedDifference(seeds, differences, m, None, None, None, None, None)
    sd = sample_sd(differences)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
    if se > 0:
        p_value = 2.0 * (1.0 - t_cdf(abs(m) / se, n - 1))
    else:
        p_value = 1.0 if m == 0 else 0.0
    return PairedDifference(seeds, differences, m, sd, se, m - half, m + half, p_value)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average: the mean of the last ``window`` values (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    return [mean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def steps_to_threshold(curve: Sequence[float], threshold: float, window: int = 1) -> int | None:
    """The first index (step) at which the trailing ``window``-step moving average of ``curve``
    reaches ``threshold``; None when it never does."""
    for step, value in enumerate(moving_average(curve, window)):
        if value >= threshold:
            return step
    return None
