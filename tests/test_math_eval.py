"""The evaluation table: verl's validation metrics (file logger) -> one markdown table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from verl_lambda.math import eval as math_eval
from verl_lambda.math.eval import HEADER, read_scores, read_table, update_table

METRICS = Path(__file__).resolve().parent / "fixtures" / "val_metrics.jsonl"


def test_read_scores_takes_the_last_validation_record():
    scores, k = read_scores(str(METRICS))
    assert k == 16
    # amc23 reports acc and reward: acc wins, as in verl's val-core section
    assert scores == {
        "aime24": 0.125,
        "math500": 0.75,
        "olympiadbench": 0.375,
        "minerva_math": 0.25,
        "amc23": 0.55,
        "gsm8k": 0.875,
    }


def test_table_rows_are_added_and_replaced(tmp_path):
    table = tmp_path / "results.md"
    scores, k = read_scores(str(METRICS))
    update_table(str(table), "base", scores, k)
    update_table(str(table), "grpo-lambda", {"aime24": 0.2, "math500": 0.6}, 4)
    rows = read_table(str(table))
    # 12.5, 75.0, 37.5, 25.0, 55.0 -> average 205 / 5 = 41.0
    assert rows["base"] == ["base", "16", "12.5", "75.0", "37.5", "25.0", "55.0", "41.0"]
    # a run without all five benchmarks gets no average
    assert rows["grpo-lambda"] == ["grpo-lambda", "4", "20.0", "60.0", "", "", "", ""]
    update_table(
        str(table), "base", {s: 0.1 for s in ("aime24", "math500", "olympiadbench", "minerva_math", "amc23")}, 8
    )
    rows = read_table(str(table))
    assert list(rows) == ["base", "grpo-lambda"]
    assert rows["base"][1:] == ["8", "10.0", "10.0", "10.0", "10.0", "10.0", "10.0"]
    lines = table.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(HEADER) + " |"
    assert len(lines) == 4


def test_cli(tmp_path, capsys):
    table = tmp_path / "out" / "results.md"
    rc = math_eval.main(["--metrics", str(METRICS), "--label", "Qwen/Qwen2.5-7B | step 10", "--table", str(table)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| Qwen/Qwen2.5-7B / step 10 | 16 | 12.5 | 75.0 | 37.5 | 25.0 | 55.0 | 41.0 |" in out
    assert "note: other data sources: gsm8k 87.5" in out
    assert table.read_text() in out


PROG = "python -m verl_lambda.math.eval"
NOTES = "# my notes\n\nimportant text\n"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def run_eval(tmp_path, metrics, table) -> int:
    return math_eval.main(["--metrics", str(metrics), "--label", "m", "--table", str(table)])


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"step": 1, "data": {"actor/lr": 1e-6}}], "no val-core/<benchmark>/reward/mean@<k> metrics"),
        (
            [{"step": 0, "data": {"val-core/aime24/reward/mean@16": 0.1, "val-core/amc23/reward/mean@8": 0.2}}],
            "different k: [8, 16]",
        ),
    ],
)
def test_bad_metrics_files(tmp_path, capsys, records, message):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert math_eval.main(["--metrics", str(path), "--label", "x", "--table", str(tmp_path / "t.md")]) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"{PROG}: error: {path}: ") and message in err


GOOD_LINE = json.dumps({"step": 0, "data": {"val-core/aime24/reward/mean@4": 0.5}})
KEY = "val-core/math500/reward/mean@4"


@pytest.mark.parametrize(
    "line, message",
    [
        ("[1, 2]", "line 2: a JSON list, not an object (verl's file logger writes one object per line)"),
        ('"text"', "line 2: a JSON string, not an object"),
        ('{"step": 1, "data": [0.5]}', 'line 2: "data" is a JSON list, not an object'),
        ('{"step": 1, "data": {"val-core/math500/reward/mean@4": 0.5', "line 2: not JSON"),
        (json.dumps({"data": {KEY: None}}), f"line 2: {KEY} is null, not a fraction from 0 to 1"),
        (json.dumps({"data": {KEY: {"mean": 0.5}}}), f"line 2: {KEY} is object, not a fraction from 0 to 1"),
        (json.dumps({"data": {KEY: "0.5"}}), f"line 2: {KEY} is string, not a fraction from 0 to 1"),
        (json.dumps({"data": {KEY: True}}), f"line 2: {KEY} is true/false, not a fraction from 0 to 1"),
        (json.dumps({"data": {KEY: 1.7}}), f"line 2: {KEY} is 1.7, not a fraction from 0 to 1"),  # was 170 %
        (json.dumps({"data": {KEY: -0.1}}), f"line 2: {KEY} is -0.1, not a fraction from 0 to 1"),
        ('{"data": {"val-core/math500/reward/mean@4": NaN}}', f"line 2: {KEY} is nan, not a fraction from 0 to 1"),
    ],
)
def test_a_bad_metrics_line_gives_one_line_naming_file_line_and_key(tmp_path, capsys, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(GOOD_LINE + "\n" + line + "\n")
    assert run_eval(tmp_path, path, tmp_path / "t.md") == 2
    assert one_error_line(capsys).startswith(f"{PROG}: error: {path}: {message}")
    assert not (tmp_path / "t.md").exists()


def test_a_missing_metrics_file_gives_one_line(tmp_path, capsys):
    assert run_eval(tmp_path, tmp_path / "none.jsonl", tmp_path / "t.md") == 2
    assert one_error_line(capsys) == f"{PROG}: error: {tmp_path / 'none.jsonl'}: No such file or directory"


def test_the_other_lines_of_the_file_are_kept(tmp_path, capsys):
    notes = tmp_path / "notes.md"
    notes.write_text(NOTES)
    assert run_eval(tmp_path, METRICS, notes) == 0  # used to leave only the table
    text = notes.read_text()
    table = math_eval.render_table([["m", "16", "12.5", "75.0", "37.5", "25.0", "55.0", "41.0"]])
    assert text == NOTES + "\n" + table
    # text around an existing table stays too, byte for byte, and the table is updated in place
    before, after = "# Results\n\nintro text\n\n", "\n## Later\n\nmore text, no newline at the end"
    notes.write_text(before + table + after)
    update_table(str(notes), "n", {"aime24": 0.25}, 4)
    assert (
        notes.read_text()
        == before
        + math_eval.render_table(
            [["m", "16", "12.5", "75.0", "37.5", "25.0", "55.0", "41.0"], ["n", "4", "25.0", "", "", "", "", ""]]
        )
        + after
    )
    assert list(read_table(str(notes))) == ["m", "n"]


def test_another_table_is_kept_and_the_results_table_added_after_it(tmp_path):
    notes = tmp_path / "notes.md"
    other = "| a | b |\n| --- | --- |\n| 1 | 2 |\n"
    notes.write_text(other)
    update_table(str(notes), "x", {"aime24": 0.1}, 1)
    assert notes.read_text() == other + "\n" + math_eval.render_table([["x", "1", "10.0", "", "", "", "", ""]])


def test_a_table_in_a_code_block_is_not_the_results_table(tmp_path):
    notes = tmp_path / "notes.md"
    example = "```\n| " + " | ".join(HEADER) + " |\n| --- |\n| example | 1 | 2 |\n```\n"
    notes.write_text(example)
    update_table(str(notes), "x", {"aime24": 0.1}, 1)
    assert notes.read_text().startswith(example + "\n| run |")
    assert list(read_table(str(notes))) == ["x"]


RESULTS = math_eval.render_table([["base", "16", "1.0", "2.0", "3.0", "4.0", "5.0", "3.0"]])


@pytest.mark.parametrize(
    "content, message",
    [
        (RESULTS + "\ntext\n\n" + RESULTS, "has 2 results tables (line 1, line 7); keep one there"),
        (
            "notes\n\n| run | AIME24 | MATH500 |\n| --- | --- | --- |\n| a | 1 | 2 |\n",
            "line 3: a results table with other columns (run | AIME24 | MATH500)",
        ),
        (RESULTS.replace("| 3.0 |\n", "|\n"), "line 3: a row of 7 cells, not 8"),
        (RESULTS + "| base | 8 | | | | | | |\n", "line 4: the run 'base' is also on line 3"),
        (RESULTS.replace("| --- |", "| text |", 1), "line 2: the results table has no | --- | line under its header"),
    ],
)
def test_a_file_that_cannot_be_updated_safely_is_refused(tmp_path, capsys, content, message):
    table = tmp_path / "results.md"
    table.write_text(content)
    assert run_eval(tmp_path, METRICS, table) == 2
    err = one_error_line(capsys)
    assert err.startswith(f"{PROG}: error: {table}") and message in err, err
    assert table.read_text() == content


def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path):
    code = f"""
import os, signal, sys, time
from verl_lambda.math import eval as math_eval

def interrupted(path):  # Ctrl-C while the metrics are read
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(10)

math_eval.read_scores = interrupted
sys.exit(math_eval.main(["--metrics", {str(METRICS)!r}, "--label", "m", "--table", {str(tmp_path / "t.md")!r}]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130
    assert result.stderr.strip() == f"{PROG}: interrupted"
    assert not (tmp_path / "t.md").exists()
