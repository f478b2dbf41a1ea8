"""Outputs of a demo run: metrics.json, curves.png and the summary table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from verl_lambda.demo.methods import BASELINE, CLAMP_ONLY, METHODS

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


def _per_seed_mean(curve: dict[int, list[float]], seeds: list[int]) -> dict[int, float]:
    steps = list(curve)
    later = [s for s in steps if s > 0] or steps
    return {seed: _mean([curve[s][i] for s in later]) for i, seed in enumerate(seeds)}


def paired(row: dict, reference: dict) -> dict:
    """The per-seed difference in mean accuracy of ``row`` minus ``reference`` over their common seeds:
    its mean, sd, standard error (None for one seed) and how many seeds are better / worse."""
    mine, theirs = row["mean_accuracy_by_seed"], reference["mean_accuracy_by_seed"]
    diffs = [mine[seed] - theirs[seed] for seed in sorted(set(mine) & set(theirs))]
    n = len(diffs)
    std = _std(diffs) if n else None
    return {
        "seeds": n,
        "diff": _mean(diffs) if n else None,
        "std": std,
        "standard_error": std / math.sqrt(n) if n > 1 else None,
        "seeds_better": sum(d > 0 for d in diffs),
        "seeds_worse": sum(d < 0 for d in diffs),
    }


def summarise(records: list[dict], methods: list[str], threshold: float | None) -> dict:
    """Per method: start, final and mean accuracy over the seeds, steps to the threshold, and the
    comparisons with GRPO and with the clamp-only ablation, paired by seed.

    ``threshold=None`` uses the mean starting accuracy + 0.10. Steps to the threshold are read on
    the seed-mean accuracy curve (None when it is never reached). "Mean accuracy" averages every
    evaluation after step 0 (the area under the curve, a learning-speed measure). Every method of
    one seed starts from the same weights, so the comparisons are paired by seed: ``paired[ref]``.
    """
    curves = {m: accuracy_curves(records, m) for m in methods}
    starts = [accs for m in methods for step, accs in curves[m].items() if step == 0]
    start = _mean([_mean(a) for a in starts]) if starts else 0.0
    if threshold is None:
        threshold = round(min(1.0, start + 0.10), 4)
    rows = {}
    for m in methods:
        steps = list(curves[m])
        seeds = sorted({r["seed"] for r in records if r["method"] == m})
        final = curves[m][steps[-1]]
        by_seed = _per_seed_mean(curves[m], seeds)
        reached = next((s for s in steps if _mean(curves[m][s]) >= threshold), None)
        rows[m] = {
            "label": METHODS[m].label,
            "seeds": len(final),
            "seed_ids": seeds,
            "start_accuracy": _mean(curves[m][steps[0]]),
            "final_accuracy": _mean(final),
            "final_accuracy_std": _std(final),
            "final_accuracy_per_seed": final,
            "mean_accuracy": _mean(list(by_seed.values())),
            "mean_accuracy_per_seed": [by_seed[seed] for seed in seeds],
            "mean_accuracy_by_seed": by_seed,
            "steps_to_threshold": reached,
            "final_step": steps[-1],
        }
    references = [ref for ref in (BASELINE, CLAMP_ONLY) if ref in rows]
    for name, row in rows.items():
        row["paired"] = {ref: paired(row, rows[ref]) for ref in references if ref != name}
    if BASELINE in rows:
        base = rows[BASELINE]
        for row in rows.values():
            row["final_accuracy_ratio"] = _ratio(row["final_accuracy"], base["final_accuracy"])
            row["mean_accuracy_ratio"] = _ratio(row["mean_accuracy"], base["mean_accuracy"])
            row["steps_to_threshold_ratio"] = _ratio(row["steps_to_threshold"], base["steps_to_threshold"])
            versus = paired(row, base)
            row["paired_mean_accuracy_diff"] = versus["diff"]
            row["paired_mean_accuracy_diff_std"] = versus["std"]
            row["seeds_better"] = versus["seeds_better"]
    for row in rows.values():
        row["mean_accuracy_by_seed"] = {str(seed): value for seed, value in row["mean_accuracy_by_seed"].items()}
    return {
        "threshold": threshold,
        "baseline": BASELINE if BASELINE in rows else None,
        "clamp_only": CLAMP_ONLY if CLAMP_ONLY in rows else None,
        "methods": rows,
    }


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def _fmt(value, pattern="{:.3f}", missing="—"):
    return missing if value is None else pattern.format(value)


def machine_line(environment: dict) -> str:
    """The sentence that says the numbers are one machine's (from metrics.json's ``environment``)."""
    cpu = environment.get("cpu") or environment.get("machine") or "CPU"
    load, load_end = environment.get("load_average_start"), environment.get("load_average_end")
    torch = environment.get("torch")
    where = f"{environment.get('cpu_count')}-core {cpu}, torch {torch}, {environment.get('threads')} thread(s)"
    if environment.get("device", "cpu") != "cpu":
        where = f"{environment['device']}, torch {torch}"
    load_text = f", 1-minute load average {load[0]:.2f} at the start" if load else ""
    if load and load_end:
        load_text += f" and {load_end[0]:.2f} at the end"
    return (
        f"These numbers are one machine's ({where}{load_text}). Another machine rounds differently and the "
        "runs diverge: on a second machine of the same kind, GRPO-λ took 1.25× "
        "GRPO's steps to the threshold where docs/demo.md reports 0.6×. Read the paired mean-accuracy "
        "differences, not steps to the threshold."
    )


def summary_table(summary: dict, machine: str | None = None) -> str:
    """A plain-text table of the summary, the verdict lines, and ``machine`` (see :func:`machine_line`)."""
    threshold = summary["threshold"]
    rows = summary["methods"]
    width = max([len("method"), *(len(row["label"]) for row in rows.values())])
    against_clamp = summary.get("clamp_only") is not None
    header = (
        f"{'method':<{width}} {'start':>6} {'final acc (±sd)':>16} {'mean acc':>9} {'Δmean vs GRPO':>14} "
        + (f"{'Δmean vs clamp':>15} " if against_clamp else "")
        + f"{f'steps to {threshold:.2f}':>14} {'final ÷GRPO':>12} {'steps ÷GRPO':>12}"
    )
    lines = [header, "-" * len(header)]
    for row in rows.values():
        steps = _fmt(row["steps_to_threshold"], "{}", f">{row['final_step']}")
        versus_clamp = row["paired"].get(summary.get("clamp_only"), {}).get("diff")
        lines.append(
            f"{row['label']:<{width}} {row['start_accuracy']:>6.3f} "
            f"{row['final_accuracy']:>9.3f} ±{row['final_accuracy_std']:.3f} {row['mean_accuracy']:>9.3f} "
            f"{_fmt(row.get('paired_mean_accuracy_diff'), '{:+.3f}'):>14} "
            + (f"{_fmt(versus_clamp, '{:+.3f}'):>15} " if against_clamp else "")
            + f"{steps:>14} "
            f"{_fmt(row.get('final_accuracy_ratio'), '{:.2f}'):>12} "
            f"{_fmt(row.get('steps_to_threshold_ratio'), '{:.2f}'):>12}"
        )
    lines += [
        "",
        "start: greedy accuracy of the warmed-up model (held-out split); final: at the last step, ±sd over seeds;",
        "mean acc: over all evaluations after step 0; Δmean: mean acc minus GRPO's (or the clamp-only run's),",
        f"paired by seed; steps to {threshold:.2f}: first evaluation where the seed-mean accuracy reaches it",
        "(the dashed line in curves.png). GRPO-λ = negative-advantage clamp + eligibility trace; 'clamp only'",
        "is GRPO-λ with λ = 0 (the identity trace): what the clamp alone does.",
        "",
    ]
    lines.extend(verdicts(summary))
    if machine:
        lines += ["", machine]
    return "\n".join(lines)


#: two-sided 95 % quantiles of Student's t by degrees of freedom (seeds − 1); beyond 30, 2.0
T_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_95(seeds: int) -> float:
    """The factor on the standard error beyond which a paired difference over ``seeds`` seeds is clear
    (a two-sided paired t-test at 5 %): 12.7 for 2 seeds, 2.78 for 5."""
    return T_95[seeds - 2] if seeds - 2 < len(T_95) else 2.0


#: the fewest seeds a verdict is drawn from: with 2, a t-test calls two seeds that agree to 1e-4 "clear"
MIN_VERDICT_SEEDS = 3


def judgement(comparison: dict) -> str:
    """``"higher"`` or ``"lower"`` when the paired mean difference (:func:`paired`) is clear — more than
    :func:`t_95` standard errors from 0 —, ``"unclear"`` when it is not, ``"too few seeds"`` below
    :data:`MIN_VERDICT_SEEDS`."""
    if comparison["seeds"] < MIN_VERDICT_SEEDS or comparison["standard_error"] is None:
        return "too few seeds"
    if abs(comparison["diff"]) > t_95(comparison["seeds"]) * comparison["standard_error"]:
        return "higher" if comparison["diff"] > 0 else "lower"
    return "unclear"


_VERDICTS = {
    "GRPO": {
        "higher": "higher mean accuracy than GRPO",
        "lower": "lower mean accuracy than GRPO",
        "unclear": "no clear difference in mean accuracy from GRPO over these seeds",
        "too few seeds": f"no verdict from fewer than {MIN_VERDICT_SEEDS} seeds",
    },
    "clamp": {
        "higher": "higher mean accuracy than the clamp alone: the trace adds to the clamp",
        "lower": "lower mean accuracy than the clamp alone: the trace costs accuracy",
        "unclear": "no clear difference from the clamp alone over these seeds",
        "too few seeds": f"no verdict from fewer than {MIN_VERDICT_SEEDS} seeds",
    },
}


def verdicts(summary: dict) -> list[str]:
    """Plain sentences from the paired (by seed) difference in mean accuracy: every method against
    GRPO, then every other GRPO-λ method against the clamp-only ablation (does the trace add anything
    over the clamp?). "Clear" is a two-sided paired t-test at 5 % over the seeds (:func:`t_95`).
    Steps to the threshold are quoted as a fact, never as the verdict."""
    rows, threshold = summary["methods"], summary["threshold"]
    out = []
    for reference, words in ((summary["baseline"], _VERDICTS["GRPO"]), (summary.get("clamp_only"), _VERDICTS["clamp"])):
        if reference is None:
            continue
        base = rows[reference]
        for name, row in rows.items():
            if name in (summary["baseline"], reference) or reference not in row["paired"]:
                continue
            comparison = row["paired"][reference]
            n = comparison["seeds"]
            if n == 0:
                continue
            se = _fmt(comparison["standard_error"], " ± {:.3f} se", "")
            steps = _fmt(row["steps_to_threshold"], "{}", f">{row['final_step']}")
            base_steps = _fmt(base["steps_to_threshold"], "{}", f">{base['final_step']}")
            out.append(
                f"{row['label']} vs {base['label']}: mean accuracy {comparison['diff']:+.3f}{se} "
                f"(paired by seed, higher on {comparison['seeds_better']}/{n}) -> {words[judgement(comparison)]}; "
                f"final {row['final_accuracy']:.3f} vs {base['final_accuracy']:.3f}, "
                f"steps to {threshold:.2f} {steps} vs {base_steps}."
            )
    if out and any(row["seeds"] < MIN_VERDICT_SEEDS for row in rows.values()):
        out.append(
            f"No verdict from {min(row['seeds'] for row in rows.values())} seed(s): the differences above are "
            "what these seeds gave, not evidence; --seeds 5 for verdicts (docs/demo.md has five-seed tables)."
        )
    elif out and any(row["seeds"] < 5 for row in rows.values()):
        out.append(
            "Clear = a paired t-test at 5 % over the seeds; with few seeds only large, consistent differences are."
        )
    return out


def _without_home(value, home: str):
    """``value`` with every absolute path under ``home`` written ``~/...`` (metrics.json is shared)."""
    if isinstance(value, str):
        if value == home:
            return "~"
        return value.replace(home + os.sep, "~" + os.sep)
    if isinstance(value, dict):
        return {key: _without_home(item, home) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_home(item, home) for item in value]
    return value


def write_metrics(path: Path, run_info: dict, records: list[dict], summary: dict) -> None:
    """metrics.json: ``run``, ``summary`` and ``records``; paths under the home folder as ``~/...``."""
    document = {"run": run_info, "summary": summary, "records": [complete_record(r) for r in records]}
    home = str(Path.home())
    if home not in ("", os.sep):
        document = _without_home(document, home)
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


def plot_curves(path: Path | None, records: list[dict], methods: list[str], title: str, threshold: float | None = None):
    """Train reward and eval accuracy against step: seed mean (line) and min–max over seeds (band),
    and the accuracy threshold of "steps to X" (a dashed line, ``gid="threshold"``). Saves the figure
    to ``path`` (unless None) and returns it (closed: for inspection only)."""
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
    if threshold is not None:
        accuracy_axis.axhline(
            threshold,
            color="0.35",
            linestyle="--",
            linewidth=1,
            label=f"threshold {threshold:.2f} (steps to)",
            gid="threshold",
        )
    reward_axis.set(
        xlabel="RL step", ylabel=f"train reward ({REWARD_SMOOTHING}-step moving average)", title="Sampled responses"
    )
    accuracy_axis.set(xlabel="RL step", ylabel="greedy accuracy, held-out split", title="Evaluation")
    for axis in (reward_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure
