"""The study's outputs: results.csv, summary.csv, curves.csv, credit.csv, the plots and the printed table.

Everything in summary.csv is computed from the rows of results.csv (:func:`summarise`): per setting
and method, the mean final reward over seeds and the paired (same seed) differences against the
clamp alone and against GRPO with their 95 % t-intervals (:mod:`verl_lambda.study.stats`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from verl_lambda.study.options import CLAMP_ONLY, GRPO
from verl_lambda.study.stats import mean, paired_difference, sample_sd

__all__ = [
    "RESULT_COLUMNS",
    "SUMMARY_COLUMNS",
    "predicted_snr",
    "summarise",
    "write_csv",
    "read_csv",
    "summary_table",
    "plot_curves",
    "plot_differences",
    "plot_credit",
    "plot_prediction",
]

RESULT_COLUMNS = (
    "setting", "position", "arm", "method", "seed", "final_reward", "steps_to_threshold", "mean_reward",
    "final_train_reward", "final_filler_entropy", "final_slot_accuracy", "mean_clipfrac", "mean_grad_norm",
    "max_trace_abs", "trace", "anchor", "application", "lam", "steps", "seconds", "cpu_seconds",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "setting", "position", "arm", "method", "n_seeds", "mean_final_reward", "sd_final_reward",
    "diff_vs_clamp", "diff_vs_clamp_lo", "diff_vs_clamp_hi", "p_vs_clamp",
    "diff_vs_grpo", "diff_vs_grpo_lo", "diff_vs_grpo_hi", "p_vs_grpo",
    "mean_mean_reward", "auc_diff_vs_clamp", "auc_diff_vs_clamp_lo", "auc_diff_vs_clamp_hi",
    "auc_diff_vs_grpo", "auc_diff_vs_grpo_lo", "auc_diff_vs_grpo_hi",
    "n_reached", "median_steps_to_threshold", "mean_final_filler_entropy", "mean_clipfrac", "predicted_snr",
)  # fmt: skip


def predicted_snr(credit: Sequence[float], decisive: Iterable[int]) -> float:
    """How much a per-position gradient weight ``credit`` raises the decisive tokens' share of the
    gradient against uniform credit (GRPO, the clamp alone: 1): mean credit on the decisive positions
    over the root-mean-square credit of all positions. It is the signal-to-noise ratio of the update
    relative to uniform credit if every token's score-function gradient had the same size and the
    filler's were independent zero-mean noise."""
    decisive = list(decisive)
    rms = math.sqrt(math.fsum(c * c for c in credit) / len(credit))
    return mean([credit[k] for k in decisive]) / rms


def _number(text):
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in str(text) and "e" not in str(text).lower() else value


def write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    return value


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv`; numbers become int/float, empty cells None."""
    with path.open(newline="") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def summarise(results: list[dict], predictions: dict | None = None) -> list[dict]:
    """One row per setting × method from the per-seed rows (see :data:`SUMMARY_COLUMNS`).

    ``diff_vs_clamp`` is the mean over seeds of (method − clamp_only) final reward on the same seed,
    ``diff_vs_clamp_lo/hi`` its 95 % t-interval; ``auc_*`` the same for the mean reward over all
    steps (the area under the learning curve). ``median_steps_to_threshold`` counts a seed that never
    reached the threshold as infinite (empty when more than half never did). ``predictions``:
    {(position, method): predicted SNR}."""
    settings = list(dict.fromkeys(r["setting"] for r in results))
    rows = []
    for setting in settings:
        mine = [r for r in results if r["setting"] == setting]
        methods = list(dict.fromkeys(r["method"] for r in mine))
        by = {m: {r["seed"]: r for r in mine if r["method"] == m} for m in methods}
        for method in methods:
            runs = by[method]
            final = {s: r["final_reward"] for s, r in runs.items()}
            auc = {s: r["mean_reward"] for s, r in runs.items()}
            steps = [math.inf if r["steps_to_threshold"] is None else r["steps_to_threshold"] for r in runs.values()]
            first = next(iter(runs.values()))
            row = dict.fromkeys(SUMMARY_COLUMNS)
            row |= {
                "setting": setting,
                "position": first["position"],
                "arm": first["arm"],
                "method": method,
                "n_seeds": len(runs),
                "mean_final_reward": mean(list(final.values())),
                "sd_final_reward": sample_sd(list(final.values())),
                "mean_mean_reward": mean(list(auc.values())),
                "n_reached": sum(math.isfinite(s) for s in steps),
                "median_steps_to_threshold": None if math.isinf(_median(steps)) else _median(steps),
                "mean_final_filler_entropy": mean([r["final_filler_entropy"] for r in runs.values()]),
                "mean_clipfrac": mean([r["mean_clipfrac"] for r in runs.values()]),
                "predicted_snr": (predictions or {}).get((first["position"], method)),
            }
            for reference, label in ((CLAMP_ONLY, "clamp"), (GRPO, "grpo")):
                if reference not in by or reference == method:
                    continue
                versus = paired_difference(final, {s: r["final_reward"] for s, r in by[reference].items()})
                row[f"diff_vs_{label}"], row[f"p_vs_{label}"] = versus.mean, versus.p_value
                row[f"diff_vs_{label}_lo"], row[f"diff_vs_{label}_hi"] = versus.low, versus.high
                versus = paired_difference(auc, {s: r["mean_reward"] for s, r in by[reference].items()})
                row[f"auc_diff_vs_{label}"] = versus.mean
                row[f"auc_diff_vs_{label}_lo"], row[f"auc_diff_vs_{label}_hi"] = versus.low, versus.high
            rows.append(row)
    return rows


def _fmt(value, pattern="{:+.3f}"):
    return "—" if value is None else pattern.format(value)


def _interval(row, key):
    if row.get(key) is None:
        return "—"
    if row.get(f"{key}_lo") is None:
        return _fmt(row[key])
    return f"{row[key]:+.3f} [{row[f'{key}_lo']:+.3f}, {row[f'{key}_hi']:+.3f}]"


def summary_table(summary: list[dict], threshold: float) -> str:
    """The printed table: one block per setting."""
    width = max(len("method"), *(len(r["method"]) for r in summary))
    header = (
        f"{'method':<{width}} {'final':>6} {'Δfinal vs clamp [95% CI]':>27} {'Δfinal vs GRPO [95% CI]':>27} "
        f"{'ΔAUC vs clamp [95% CI]':>27} {f'steps≥{threshold:g}':>10} {'SNR':>5}"
    )
    lines = []
    for setting in dict.fromkeys(r["setting"] for r in summary):
        lines += ["", f"setting {setting}", header, "-" * len(header)]
        for row in (r for r in summary if r["setting"] == setting):
            steps = row["median_steps_to_threshold"]
            steps_text = f"{steps:g}" if steps is not None else "never"
            steps_text += f" ({row['n_reached']}/{row['n_seeds']})"
            lines.append(
                f"{row['method']:<{width}} {row['mean_final_reward']:>6.3f} {_interval(row, 'diff_vs_clamp'):>27} "
                f"{_interval(row, 'diff_vs_grpo'):>27} {_interval(row, 'auc_diff_vs_clamp'):>27} "
                f"{steps_text:>10} {_fmt(row['predicted_snr'], '{:.2f}'):>5}"
            )
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


_COLOURS = {
    ("token", "ratio"): "tab:blue",
    ("token", "weight"): "tab:cyan",
    ("end", "ratio"): "tab:red",
    ("end", "weight"): "tab:orange",
}


def _style(method: str) -> dict:
    if method == GRPO:
        return dict(color="black", linewidth=2.0)
    if method == CLAMP_ONLY:
        return dict(color="grey", linewidth=2.0, linestyle="--")
    trace, anchor, application, lam = method.split("/")
    if trace != "recent":
        return dict(color="tab:green" if trace == "both" else "tab:purple", linewidth=1.3, linestyle="-.")
    return dict(color=_COLOURS.get((anchor, application), "tab:brown"), linewidth=1.3)


def _groups(methods: list[str]) -> list[tuple[str, list[str]]]:
    """Panels of the curve plots: per λ, GRPO and the clamp alone next to the traced methods of that λ."""
    lams = list(dict.fromkeys(m.split("/")[-1] for m in methods if m not in (GRPO, CLAMP_ONLY)))
    refs = [m for m in (GRPO, CLAMP_ONLY) if m in methods]
    return [(lam.replace("lam", "λ = "), refs + [m for m in methods if m.endswith("/" + lam)]) for lam in lams] or [
        ("", refs)
    ]


def _save(fig, path: Path, title: str) -> bool:
    """Title, lay out, write and close a figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_curves(path: Path, curves: list[dict], arm: str, positions: list[str], methods: list[str], title: str) -> bool:
    """Exact expected reward against the step, mean over seeds (band: ± one standard error), one
    column per position, one row per λ."""
    plt = _pyplot()
    if plt is None:
        return False
    groups = _groups(methods)
    fig, axes = plt.subplots(len(groups), len(positions), figsize=(4.2 * len(positions), 3.4 * len(groups)),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    for col, position in enumerate(positions):
        setting = f"{position}/{arm}"
        for row, (label, group) in enumerate(groups):
            ax = axes[row][col]
            for method in group:
                series = {}
                for c in curves:
                    if c["setting"] == setting and c["method"] == method:
                        series.setdefault(c["step"], []).append(c["expected_reward"])
                if not series:
                    continue
                steps = sorted(series)
                means = [mean(series[s]) for s in steps]
                errors = [sample_sd(series[s]) / math.sqrt(len(series[s])) for s in steps]
                ax.plot(steps, means, label=method, **_style(method))
                ax.fill_between(steps, [m - e for m, e in zip(means, errors)], [m + e for m, e in zip(means, errors)],
                                color=_style(method)["color"], alpha=0.12, linewidth=0)  # fmt: skip
            ax.set_title(f"{setting}" + (f", {label}" if label else ""), fontsize=10)
            ax.grid(True, alpha=0.3)
            if row == len(groups) - 1:
                ax.set_xlabel("RL step")
            if col == 0:
                ax.set_ylabel("exact expected reward")
            if col == len(positions) - 1:
                ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path, title)


def plot_differences(path: Path, summary: list[dict], key: str, title: str) -> bool:
    """``key`` (``diff_vs_clamp`` or ``auc_diff_vs_clamp``) with its 95 % interval, one panel per setting."""
    plt = _pyplot()
    if plt is None:
        return False
    settings = list(dict.fromkeys(r["setting"] for r in summary))
    positions = list(dict.fromkeys(r["position"] for r in summary))
    arms = list(dict.fromkeys(r["arm"] for r in summary))
    methods = [m for m in dict.fromkeys(r["method"] for r in summary) if m != CLAMP_ONLY]
    size = (3.6 * len(positions) + 2.5, 0.32 * len(methods) * len(arms) + 1.6)
    fig, axes = plt.subplots(len(arms), len(positions), figsize=size, sharex=True, sharey=True, squeeze=False)
    for setting in settings:
        rows = {r["method"]: r for r in summary if r["setting"] == setting}
        first = next(iter(rows.values()))
        ax = axes[arms.index(first["arm"])][positions.index(first["position"])]
        for y, method in enumerate(methods):
            row = rows.get(method)
            if row is None or row.get(key) is None:
                continue
            lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
            colour = _style(method)["color"]
            if lo is not None:
                ax.plot([lo, hi], [y, y], color=colour, linewidth=2)
            ax.plot([row[key]], [y], "o", color=colour, markersize=4)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_title(setting, fontsize=10)
        ax.set_yticks(range(len(methods)))
        ax.set_yticklabels(methods, fontsize=7)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(key.replace("_", " ") + " (95 % CI)", fontsize=8)
    return _save(fig, path, title)


def plot_credit(path: Path, credits: dict[str, list[float]], decisive: dict[str, Sequence[int]], title: str) -> bool:
    """Per-position gradient weight of each traced method (÷ its root mean square, so GRPO and the
    clamp alone are 1 everywhere), one panel per λ, with the decisive positions of every setting."""
    plt = _pyplot()
    if plt is None:
        return False
    groups = [(label, [m for m in group if m not in (GRPO, CLAMP_ONLY)]) for label, group in _groups(list(credits))]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.4), sharey=True, squeeze=False)
    marks = ["tab:olive", "tab:pink", "tab:brown", "tab:gray"]
    for ax, (label, group) in zip(axes[0], groups):
        for method in group:
            values = credits[method]
            rms = math.sqrt(sum(v * v for v in values) / len(values))
            ax.plot(range(len(values)), [v / rms for v in values], label=method, **_style(method))
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1.2, label="grpo, clamp_only (uniform)")
        for i, (position, where) in enumerate(decisive.items()):
            level = 0.008 * (1.7**i)
            ax.plot(list(where), [level] * len(where), "s", color=marks[i % len(marks)], markersize=5,
                    label=f"decisive tokens: {position}")  # fmt: skip
            for k in where:
                ax.axvspan(k - 0.5, k + 0.5, color=marks[i % len(marks)], alpha=0.12, linewidth=0)
        ax.set_yscale("log")
        ax.set_ylim(0.005, 30)
        ax.set_xlabel("response position k")
        ax.set_title(f"{label}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    axes[0][0].set_ylabel("gradient weight at ρ = 1 ÷ its RMS")
    return _save(fig, path, title)


def plot_prediction(path: Path, summary: list[dict], key: str, title: str) -> bool:
    """Measured ``key`` (a paired difference against the clamp alone) against the predicted SNR of
    each traced method and setting, with its 95 % interval; one panel per arm."""
    plt = _pyplot()
    if plt is None:
        return False
    arms = list(dict.fromkeys(r["arm"] for r in summary))
    positions = list(dict.fromkeys(r["position"] for r in summary))
    colours = dict(zip(positions, ["tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple", "tab:brown"]))
    fig, axes = plt.subplots(1, len(arms), figsize=(6 * len(arms), 4.4), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms):
        for row in summary:
            if row["arm"] != arm or row.get(key) is None or not row.get("predicted_snr"):
                continue
            if row["method"] in (GRPO, CLAMP_ONLY):
                continue
            x = row["predicted_snr"]
            colour = colours[row["position"]]
            if row.get(f"{key}_lo") is not None:
                ax.plot([x, x], [row[f"{key}_lo"], row[f"{key}_hi"]], color=colour, alpha=0.5, linewidth=1)
            ax.plot([x], [row[key]], "o", color=colour, markersize=5)
        for position, colour in colours.items():
            ax.plot([], [], "o", color=colour, label=position)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log")
        ax.set_xlabel("predicted SNR of the decisive tokens vs uniform credit (from the ρ = 1 credit)")
        ax.set_title(f"arm {arm}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(key.replace("_", " ") + " (95 % CI)")
    return _save(fig, path, title)
