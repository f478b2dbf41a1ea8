"""One results table for the five math benchmarks, from a verl validation run.

``recipes/eval_math.sh`` runs verl's trainer in validation-only mode with ``N_SAMPLES`` sampled
responses per problem and verl's file logger on. verl then logs, per ``data_source``,
``val-core/<data_source>/<acc|reward>/mean@<k>``: the mean score over the k responses of each
problem, averaged over problems, i.e. pass@1 averaged over k samples. This module reads that log
and writes (or updates) one markdown table with a row per evaluated model::

    python -m verl_lambda.math.eval --metrics eval/metrics.jsonl --label qwen7b-grpo-lambda --table eval/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

__all__ = ["BENCHMARKS", "read_scores", "read_table", "render_table", "update_table", "main"]

BENCHMARKS = (
    ("aime24", "AIME24"),
    ("math500", "MATH500"),
    ("olympiadbench", "OlympiadBench"),
    ("minerva_math", "Minerva Math"),
    ("amc23", "AMC23"),
)
HEADER = ["run", "samples k"] + [title for _, title in BENCHMARKS] + ["average"]
_METRIC = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean@(?P<k>\d+)$")


def read_scores(metrics_path: str) -> tuple[dict[str, float], int]:
    """pass@1 (a fraction) per data source and the sample count k, from verl's file-logger JSONL.

    Uses the last logged record that holds validation metrics; ``acc`` wins over ``reward`` where
    a reward function reports both (as verl's own ``val-core`` section does).
    """
    with open(os.path.expanduser(metrics_path)) as f:
        records = [json.loads(line) for line in f if line.strip()]
    for record in reversed(records):
        data = record.get("data", record)
        found: dict[str, tuple[str, int, float]] = {}
        for key, value in data.items():
            match = _METRIC.match(key)
            if match is None:
                continue
            source, var, k = match["source"], match["var"], int(match["k"])
            if source not in found or (var == "acc" and found[source][0] != "acc"):
                found[source] = (var, k, float(value))
        if found:
            ks = {k for _, k, _ in found.values()}
            if len(ks) != 1:
                raise ValueError(f"{metrics_path}: benchmarks were sampled with different k: {sorted(ks)}")
            return {source: v for source, (_, _, v) in found.items()}, ks.pop()
    raise ValueError(
        f"{metrics_path}: no val-core/<benchmark>/reward/mean@<k> metrics; run the evaluation with "
        "trainer.val_only=True and trainer.logger including 'file' (recipes/eval_math.sh does)"
    )


def read_table(path: str) -> dict[str, list[str]]:
    """Rows of a table written by :func:`render_table`, keyed by run label (empty if no file)."""
    if not os.path.exists(path):
        return {}
    rows: dict[str, list[str]] = {}
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip().startswith("|")]
    if not lines:
        return {}
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    if header != HEADER:
        raise ValueError(f"{path} is not a results table of this tool (header {header})")
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def _row(label: str, scores: dict[str, float], k: int) -> list[str]:
    values = [scores.get(source) for source, _ in BENCHMARKS]
    cells = ["" if v is None else f"{100 * v:.1f}" for v in values]
    average = "" if any(v is None for v in values) else f"{100 * sum(values) / len(values):.1f}"
    return [label, str(k)] + cells + [average]


def render_table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | " + " | ".join("---:" for _ in HEADER[1:]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def update_table(path: str, label: str, scores: dict[str, float], k: int) -> str:
    """Add (or replace) the row ``label`` in the table at ``path``; returns the table text."""
    rows = read_table(path)
    rows[label] = _row(label, scores, k)
    text = render_table(list(rows.values()))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m verl_lambda.math.eval",
        description="Write pass@1 (averaged over k samples) on AIME24, MATH500, OlympiadBench, "
        "Minerva Math and AMC23 from a verl validation log into one markdown table.",
    )
    p.add_argument("--metrics", required=True, help="verl file-logger JSONL of the validation run")
    p.add_argument("--label", required=True, help="row name, e.g. the model or checkpoint")
    p.add_argument("--table", required=True, help="markdown table to create or update")
    args = p.parse_args(argv)
    label = " ".join(args.label.replace("|", "/").split())
    try:
        scores, k = read_scores(args.metrics)
        text = update_table(args.table, label, scores, k)
    except (OSError, ValueError) as err:
        print(f"math_eval: error: {err}", file=sys.stderr)
        return 1
    missing = [title for source, title in BENCHMARKS if source not in scores]
    others = sorted(set(scores) - {source for source, _ in BENCHMARKS})
    print(text, end="")
    if missing:
        print(f"note: no score for {', '.join(missing)} in {args.metrics}")
    if others:
        print("note: other data sources: " + ", ".join(f"{s} {100 * scores[s]:.1f}" for s in others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
