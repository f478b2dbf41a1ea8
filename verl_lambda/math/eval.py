"""One results table for the five math benchmarks, from a verl validation run.

``recipes/eval_math.sh`` runs verl's trainer in validation-only mode with ``N_SAMPLES`` sampled
responses per problem and verl's file logger on. verl then logs, per ``data_source``,
``val-core/<data_source>/<acc|reward>/mean@<k>``: the mean score over the k responses of each
problem, averaged over problems, i.e. pass@1 averaged over k samples. This module reads that log
and writes (or updates) one markdown table with a row per evaluated model::

    python -m verl_lambda.math.eval --metrics eval/metrics.jsonl --label qwen7b-grpo-lambda --table eval/results.md

The table may sit in a markdown file with other text: only its lines change (a file without one
gets it at the end). A file that cannot be updated safely is refused: two results tables (tables
whose first column is ``run``), or one with other columns or malformed rows. A metric must be a
number from 0 to 1. Every refusal is one line on stderr and exit status 2; Ctrl-C is one line and
status 130.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from verl_lambda.cli import ArgumentParser, LaunchError, command_main, one_line
from verl_lambda.math._files import replace_file

__all__ = ["BENCHMARKS", "HEADER", "read_scores", "read_table", "render_table", "update_table", "main"]

PROG = "python -m verl_lambda.math.eval"
BENCHMARKS = (
    ("aime24", "AIME24"),
    ("math500", "MATH500"),
    ("olympiadbench", "OlympiadBench"),
    ("minerva_math", "Minerva Math"),
    ("amc23", "AMC23"),
)
HEADER = ["run", "samples k"] + [title for _, title in BENCHMARKS] + ["average"]
_METRIC = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean@(?P<k>\d+)$")
_SEPARATOR_CELL = re.compile(r":?-{3,}:?")
_FENCE = re.compile(r"\s*(```|~~~)")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    return {dict: "object", list: "list", str: "string"}.get(type(value), "number")


def _fraction(path: str, line: int, key: str, value: Any) -> float:
    """A pass@1 metric's value: a number from 0 to 1, else ValueError naming the file, line and key."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1:
        return float(value)
    shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _json_kind(value)
    raise ValueError(
        f"{path}: line {line}: {key} is {shown}, not a fraction from 0 to 1; "
        "check that the file is the verl file-logger output of the validation run"
    )


def read_scores(metrics_path: str) -> tuple[dict[str, float], int]:
    """pass@1 (a fraction) per data source and the sample count k, from verl's file-logger JSONL.

    Uses the last logged record that holds validation metrics; ``acc`` wins over ``reward`` where
    a reward function reports both (as verl's own ``val-core`` section does). Raises ValueError,
    naming the file and the line, for a line that is not a JSON object and for a metric that is
    not a number from 0 to 1.
    """
    records: list[tuple[int, dict[str, Any]]] = []
    with open(os.path.expanduser(metrics_path), encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{metrics_path}: line {number}: not JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{metrics_path}: line {number}: a JSON {_json_kind(record)}, not an object "
                    "(verl's file logger writes one object per line)"
                )
            data = record.get("data", record)
            if not isinstance(data, dict):
                raise ValueError(f'{metrics_path}: line {number}: "data" is a JSON {_json_kind(data)}, not an object')
            records.append((number, data))
    for number, data in reversed(records):
        found: dict[str, tuple[str, int, float]] = {}
        for key, value in data.items():
            match = _METRIC.match(key)
            if match is None:
                continue
            source, var, k = match["source"], match["var"], int(match["k"])
            value = _fraction(metrics_path, number, key, value)
            if source not in found or (var == "acc" and found[source][0] != "acc"):
                found[source] = (var, k, value)
        if found:
            ks = {k for _, k, _ in found.values()}
            if len(ks) != 1:
                raise ValueError(f"{metrics_path}: benchmarks were sampled with different k: {sorted(ks)}")
            return {source: v for source, (_, _, v) in found.items()}, ks.pop()
    raise ValueError(
        f"{metrics_path}: no val-core/<benchmark>/reward/mean@<k> metrics; run the evaluation with "
        "trainer.val_only=True and trainer.logger including 'file' (recipes/eval_math.sh does)"
    )


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


class _Table:
    """A markdown file and the results table in it: lines ``start`` to ``end`` (None when it has none)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8", newline="") as f:
                    self.lines = f.read().splitlines(keepends=True)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not UTF-8 text (byte {err.start}); pass another --table") from None
        self.start: int | None = None
        self.end: int | None = None
        self.rows: dict[str, list[str]] = {}
        found = [(start, end) for start, end in self._tables() if _cells(self.lines[start])[0] == HEADER[0]]
        if len(found) > 1:
            where = ", ".join(f"line {start + 1}" for start, _ in found)
            raise ValueError(
                f"{path} has {len(found)} results tables ({where}); keep one there, or pass another --table"
            )
        if found:
            self.start, self.end = found[0]
            self._read_rows()

    def _tables(self) -> list[tuple[int, int]]:
        """(first line, line after the last) of every block of table lines outside fenced code."""
        blocks: list[tuple[int, int]] = []
        fence: str | None = None
        start = None
        for i, line in enumerate([*self.lines, ""]):
            opening = _FENCE.match(line)
            if fence is not None:
                if opening and opening.group(1) == fence:
                    fence = None
                continue
            if line.strip().startswith("|"):
                if start is None:
                    start = i
                continue
            if start is not None:
                blocks.append((start, i))
                start = None
            if opening:
                fence = opening.group(1)
        return blocks

    def _refuse(self, i: int, what: str) -> ValueError:
        return ValueError(
            f"{self.path}: line {i + 1}: {what}; the results table has the columns {' | '.join(HEADER)}: "
            "fix it, or pass another --table"
        )

    def _read_rows(self) -> None:
        assert self.start is not None and self.end is not None
        header = _cells(self.lines[self.start])
        if header != HEADER:
            raise self._refuse(self.start, f"a results table with other columns ({' | '.join(header)})")
        separator = self.start + 1
        if separator >= self.end or not all(_SEPARATOR_CELL.fullmatch(c) for c in _cells(self.lines[separator])):
            raise self._refuse(separator, "the results table has no | --- | line under its header")
        first_line: dict[str, int] = {}
        for i in range(separator + 1, self.end):
            cells = _cells(self.lines[i])
            if len(cells) != len(HEADER):
                raise self._refuse(i, f"a row of {len(cells)} cells, not {len(HEADER)}")
            if cells[0] in first_line:
                raise self._refuse(i, f"the run {cells[0]!r} is also on line {first_line[cells[0]] + 1}")
            first_line[cells[0]] = i
            self.rows[cells[0]] = cells

    def text_with(self, table: str) -> str:
        """The file's text with ``table`` in place of its results table (appended when it has none)."""
        lines = list(self.lines)
        newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        table_lines = [line + newline for line in table.splitlines()]
        if self.start is not None and self.end is not None:
            lines[self.start : self.end] = table_lines
        else:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += newline
            if lines and lines[-1].strip():
                lines.append(newline)
            lines += table_lines
        return "".join(lines)


def read_table(path: str) -> dict[str, list[str]]:
    """Rows of the results table in the markdown file ``path``, keyed by run label (empty if none).

    Raises ValueError for a file that cannot be updated safely: two results tables, or a results
    table (a table whose first column is ``run``) with other columns or malformed rows.
    """
    return _Table(path).rows


def _label(label: str) -> str:
    return " ".join(label.replace("|", "/").split())


def _row(label: str, scores: dict[str, float], k: int) -> list[str]:
    values = [scores.get(source) for source, _ in BENCHMARKS]
    cells = ["" if v is None else f"{100 * v:.1f}" for v in values]
    average = "" if any(v is None for v in values) else f"{100 * sum(values) / len(values):.1f}"
    return [_label(label), str(k)] + cells + [average]


def render_table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "| --- | " + " | ".join("---:" for _ in HEADER[1:]) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def update_table(path: str, label: str, scores: dict[str, float], k: int) -> str:
    """Add (or replace) the row ``label`` in the results table in ``path``; returns the table text.

    Every other line of the file stays as it was; a file without a results table gets one at its
    end, and a missing file is created. The file is replaced in one step (written beside it, then
    renamed). Raises ValueError, before writing, for a file that :func:`read_table` refuses.
    """
    table = _Table(path)
    row = _row(label, scores, k)
    table.rows[row[0]] = row
    text = render_table(list(table.rows.values()))
    content = table.text_with(text)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(content)

    replace_file(path, write)
    return text


def _run(argv: Sequence[str] | None) -> int:
    p = ArgumentParser(
        prog=PROG,
        description="Write pass@1 (averaged over k samples) on AIME24, MATH500, OlympiadBench, "
        "Minerva Math and AMC23 from a verl validation log into one markdown table.",
    )
    p.add_argument("--metrics", required=True, help="verl file-logger JSONL of the validation run")
    p.add_argument("--label", required=True, help="row name, e.g. the model or checkpoint")
    p.add_argument("--table", required=True, help="markdown file to create or update (its other lines are kept)")
    args = p.parse_args(argv)
    label = _label(args.label)
    if not label:
        raise LaunchError("--label must name the run (it is empty)")
    try:
        scores, k = read_scores(args.metrics)
        text = update_table(args.table, label, scores, k)
    except OSError as err:
        reason = err.strerror or one_line(err)
        raise LaunchError(f"{err.filename}: {reason}" if err.filename else reason) from err
    except ValueError as err:
        raise LaunchError(str(err)) from err
    missing = [title for source, title in BENCHMARKS if source not in scores]
    others = sorted(set(scores) - {source for source, _ in BENCHMARKS})
    print(text, end="")
    if missing:
        print(f"note: no score for {', '.join(missing)} in {args.metrics}")
    if others:
        print("note: other data sources: " + ", ".join(f"{s} {100 * scores[s]:.1f}" for s in others))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0; 2 with one line on stderr; 130 on Ctrl-C)."""
    return command_main(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
