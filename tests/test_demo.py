"""Smoke test of ``verl-lambda demo``: tiny sizes, a few steps, through the CLI entry function."""

from __future__ import annotations

import json

import pytest

from verl_lambda.__main__ import main
from verl_lambda.demo.methods import METHODS
from verl_lambda.demo.report import RECORD_FIELDS
from verl_lambda.demo.tasks import TASKS

TINY = [
    "demo",
    "--task", "answer_first",
    "--methods", "grpo,grpo_lambda_recent,grpo_lambda_both",
    "--seeds", "1",
    "--steps", "3",
    "--eval-every", "2",
    "--prompts-per-step", "2",
    "--group-size", "4",
    "--mini-batches", "2",
    "--hidden-size", "32",
    "--num-layers", "1",
    "--sft-max-steps", "30",
    "--eval-size", "16",
]  # fmt: skip


def run_tiny(tmp_path, name):
    out = tmp_path / name
    assert main([*TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    return out


def test_demo_runs_end_to_end_and_is_deterministic(tmp_path):
    out = run_tiny(tmp_path, "first")

    document = json.loads((out / "metrics.json").read_text())
    records = document["records"]
    assert len(records) == len(METHODS) * (3 + 1)  # step 0 (start) and 3 RL steps per method
    for record in records:
        assert set(record) == set(RECORD_FIELDS)
    assert {r["method"] for r in records} == set(METHODS)
    for record in records:
        if record["step"] > 0:
            assert 0.0 <= record["train_reward"] <= 1.0
            assert record["loss"] is not None
    traced = [r for r in records if r["method"] != "grpo" and r["step"] > 0]
    assert all(r["trace_abs_mean"] is not None for r in traced)
    evaluated = {(r["method"], r["step"]) for r in records if r["eval_accuracy"] is not None}
    assert {step for _, step in evaluated} == {0, 2, 3}

    summary = document["summary"]
    assert set(summary["methods"]) == set(METHODS)
    assert summary["methods"]["grpo"]["final_accuracy_ratio"] in (None, 1.0)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("sft-answer_first-*.pt"))) == 1

    again = run_tiny(tmp_path, "second")  # warm-up now comes from the cache
    assert json.loads((again / "metrics.json").read_text())["records"] == records


@pytest.mark.parametrize(
    ("flag", "value", "valid"),
    [("--methods", "grpo,not_a_method", list(METHODS)), ("--task", "not_a_task", list(TASKS))],
)
def test_unknown_name_fails_listing_the_valid_ones(flag, value, valid, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert value.split(",")[-1] in error
    for name in valid:
        assert name in error
