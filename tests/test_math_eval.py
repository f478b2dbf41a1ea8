"""The evaluation table: verl's validation metrics (file logger) -> one markdown table."""

import json
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
    assert math_eval.main(["--metrics", str(path), "--label", "x", "--table", str(tmp_path / "t.md")]) == 1
    assert message in capsys.readouterr().err


def test_refuses_to_overwrite_another_table(tmp_path):
    table = tmp_path / "notes.md"
    table.write_text("| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    with pytest.raises(ValueError, match="not a results table"):
        update_table(str(table), "x", {"aime24": 0.1}, 1)
