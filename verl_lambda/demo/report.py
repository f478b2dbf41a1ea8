"""Outputs of a demo run: metrics.json, curves.png and the summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from verl_lambda.demo.methods import BASELINE, METHODS

RECORD_FIELDS = (
    "method",
    "seed",
    "step",
    "train_reward",
    "eval_accuracy",
    "loss",
    "grad_norm",
    "clipfrac",
    "ppo_kl",
    "response_length",
    "trace_abs_mean",
    "trace_abs_max",
    "trace_guard_frac",
)
REWARD_SMOOTHING = 10  # steps in the moving average of the plotted train reward


def complete_record(record: dict) -> dict:
    """The record with every field of :data:`RECORD_FIELDS` (None where it does not apply)."""
    return {field: record.get(field) for field in RECORD_FIELDS}


def _mean(values):
    return sum(values) / len(values)


def _std(values):
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def accuracy_curves(records: list[dict], method: str) -> dict[int, list[float]]:
    """{step: [eval accuracy of each seed]} for the steps where every seed was evaluated."""
    by_step: dict[int, dict[int, float]] = {}
    for r in records:
        if r["method"] == method and r["eval_accuracy"] is not None:
            by_step.setdefault(r["step"], {})[r["seed"]] = r["eval_accuracy"]
    seeds = {r["seed"] for r in records if r["method"] == method}
    return {step: [acc[s] for s in sorted(seeds)] for step, acc in sorted(by_step.items()) if set(acc) == seeds}


def summarise(records: list[dict], methods: list[str], threshold: Optional[float]) -> dict:
    """Per method: start, final and mean accuracy over the seeds, steps to the threshold, and the
    comparison with GRPO.

    ``threshold=None`` uses the mean starting accuracy + 0.10. Steps to the threshold are read on
    the seed-mean accuracy curve (None when it is never reached). "Mean accuracy" averages every
    evaluation after step 0 (the area under the curve, a learning-speed measure). Every method of
    one seed starts from the same weights, so the comparison with GRPO is paired by seed.
    """
    curves = {m: accuracy_curves(records, m) for m in methods}
    starts = [accs for m in methods for step, accs in curves[m].items() if step == 0]
    start = _mean([_mean(a) for a in starts]) if starts else 0.0
    if threshold is None:
        threshold = round(min(1.0, start + 0.10), 4)
    rows = {}
    for m in methods:
        steps = list(curves[m])
        final = curves[m][steps[-1]]
        later = [s for s in steps if s > 0] or steps
        per_seed_mean = [_mean([curves[m][s][i] for s in later]) for i in range(len(final))]
        reached = next((s for s in steps if _mean(curves[m][s]) >= threshold), None)
        rows[m] = {
            "label": METHODS[m].label,
            "seeds": len(final),
            "start_accuracy": _mean(curves[m][steps[0]]),
            "final_accuracy": _mean(final),
            "final_accuracy_std": _std(final),
            "final_accuracy_per_seed": final,
            "mean_accuracy": _mean(per_seed_mean),
            "mean_accuracy_per_seed": per_seed_mean,
            "steps_to_threshold": reached,
            "final_step": steps[-1],
        }
    if BASELINE in rows:
        base = rows[BASELINE]
        for row in rows.values():
            row["final_accuracy_ratio"] = _ratio(row["final_accuracy"], base["final_accuracy"])
            row["mean_accuracy_ratio"] = _ratio(row["mean_accuracy"], base["mean_accuracy"])
            row["steps_to_threshold_ratio"] = _ratio(row["steps_to_threshold"], base["steps_to_threshold"])
            diffs = [a - b for a, b in zip(row["mean_accuracy_per_seed"], base["mean_accuracy_per_seed"])]
            row["paired_mean_accuracy_diff"] = _mean(diffs)
            row["paired_mean_accuracy_diff_std"] = _std(diffs)
            row["seeds_better"] = sum(d > 0 for d in diffs)
    return {"threshold": threshold, "baseline": BASELINE if BASELINE in rows else None, "methods": rows}


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(value, pattern="{:.3f}", missing="—"):
    return missing if value is None else pattern.format(value)


def summary_table(summary: dict) -> str:
    """A plain-text table of the summary, with one verdict line per GRPO-λ method."""
    threshold = summary["threshold"]
    header = (
        f"{'method':<17} {'start':>6} {'final acc (±sd)':>16} {'mean acc':>9} {'Δmean vs GRPO':>14} "
        f"{f'steps to {threshold:.2f}':>14} {'final ÷GRPO':>12} {'steps ÷GRPO':>12}"
    )
    lines = [header, "-" * len(header)]
    for row in summary["methods"].values():
        steps = _fmt(row["steps_to_threshold"], "{}", f">{row['final_step']}")
        lines.append(
            f"{row['label']:<17} {row['start_accuracy']:>6.3f} "
            f"{row['final_accuracy']:>9.3f} ±{row['final_accuracy_std']:.3f} {row['mean_accuracy']:>9.3f} "
            f"{_fmt(row.get('paired_mean_accuracy_diff'), '{:+.3f}'):>14} {steps:>14} "
            f"{_fmt(row.get('final_accuracy_ratio'), '{:.2f}'):>12} "
            f"{_fmt(row.get('steps_to_threshold_ratio'), '{:.2f}'):>12}"
        )
    lines += [
        "",
        "start: greedy accuracy of the warmed-up model (held-out split); final: at the last step, ±sd over seeds;",
        "mean acc: over all evaluations after step 0; Δmean: mean acc minus GRPO's, paired by seed;",
        f"steps to {threshold:.2f}: first evaluation where the seed-mean accuracy reaches it.",
        "GRPO-λ = negative-advantage clamp + eligibility trace; --lam 0 keeps only the clamp.",
    ]
    lines.extend(verdicts(summary))
    return "\n".join(lines)


def verdicts(summary: dict) -> list[str]:
    """One plain sentence per GRPO-λ method, from the paired per-seed difference in mean accuracy.

    "better"/"worse" when the mean difference is more than two standard errors from 0, else
    "no clear difference"; one seed gives no verdict.
    """
    rows = summary["methods"]
    if summary["baseline"] is None:
        return []
    base = rows[summary["baseline"]]
    out = []
    for name, row in rows.items():
        if name == summary["baseline"]:
            continue
        n, diff = row["seeds"], row["paired_mean_accuracy_diff"]
        standard_error = row["paired_mean_accuracy_diff_std"] / math.sqrt(n) if n > 1 else None
        if standard_error is None:
            judgement = "one seed: no verdict"
        elif abs(diff) > 2 * standard_error:
            judgement = "learned faster than GRPO" if diff > 0 else "learned slower than GRPO"
        else:
            judgement = "no clear difference from GRPO"
        out.append(
            f"{row['label']} vs GRPO: mean accuracy {diff:+.3f} (better on {row['seeds_better']}/{n} seeds), "
            f"final accuracy {row['final_accuracy']:.3f} vs {base['final_accuracy']:.3f}: {judgement}."
        )
    return out


def write_metrics(path: Path, run_info: dict, records: list[dict], summary: dict) -> None:
    document = {"run": run_info, "summary": summary, "records": [complete_record(r) for r in records]}
    Path(path).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def _band(records, method, field, smoothing=1):
    """(steps, mean, low, high) of ``field`` over seeds, with a trailing moving average per seed."""
    per_seed: dict[int, list[tuple[int, float]]] = {}
    for r in records:
        if r["method"] == method and r.get(field) is not None:
            per_seed.setdefault(r["seed"], []).append((r["step"], r[field]))
    smoothed = []
    for points in per_seed.values():
        values = [v for _, v in points]
        averaged = [_mean(values[max(0, i - smoothing + 1) : i + 1]) for i in range(len(values))]
        smoothed.append(dict(zip([s for s, _ in points], averaged)))
    steps = sorted(set.intersection(*(set(s) for s in smoothed))) if smoothed else []
    columns = [[curve[s] for curve in smoothed] for s in steps]
    return steps, [_mean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def plot_curves(path: Path, records: list[dict], methods: list[str], title: str) -> None:
    """Train reward and eval accuracy against step: seed mean (line) and min–max over seeds (band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (reward_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, method in enumerate(methods):
        color = f"C{index}"
        label = METHODS[method].label
        for axis, field, smoothing in (
            (reward_axis, "train_reward", REWARD_SMOOTHING),
            (accuracy_axis, "eval_accuracy", 1),
        ):
            steps, mean, low, high = _band(records, method, field, smoothing)
            axis.plot(steps, mean, color=color, label=label, marker="o" if field == "eval_accuracy" else None, ms=3)
            axis.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    reward_axis.set(
        xlabel="RL step", ylabel=f"train reward ({REWARD_SMOOTHING}-step moving average)", title="Sampled responses"
    )
    accuracy_axis.set(xlabel="RL step", ylabel="greedy accuracy, held-out split", title="Evaluation")
    for axis in (reward_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
