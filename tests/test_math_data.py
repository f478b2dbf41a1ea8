"""Data preparation: local fixture files → verl's RL parquet rows (no hub access)."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from verl_lambda import math_data
from verl_lambda.math_data import EVAL_SETS, INSTRUCTION, SOURCES, TRAIN_SETS, convert, load_rows

RAW = Path(__file__).resolve().parent / "fixtures" / "math_raw"

# Ground truths each fixture row must produce, written out by hand (None: the row has no answer).
EXPECTED_ANSWERS = {
    "gsm8k": ["1236", "9"],  # "#### 1,236" -> thousands separator removed; the third row has no "####"
    "math": [r"\frac{1}{2}", r"\frac{\sqrt{3}}{2}"],  # last \boxed{} of the solution; third row has none
    "deepscaler": ["4", "5"],  # second row: empty answer column, boxed solution
    "aime24": ["24", "9"],  # 9 is an integer cell
    "math500": [r"\left( 3, \frac{\pi}{2} \right)", "2"],
    "olympiadbench": [r"\frac{1}{2}", "3, 5"],  # list of $...$ answers
    "minerva_math": ["10", "619.9"],
    "amc23": ["27", "0.25"],  # float cells
}
EXPECTED_DROPPED = {"gsm8k": 1, "math": 1}


def test_every_training_and_evaluation_set_is_known():
    assert set(TRAIN_SETS) == {"gsm8k", "math", "deepscaler"}
    assert set(EVAL_SETS) == {"aime24", "math500", "olympiadbench", "minerva_math", "amc23"}
    assert SOURCES["numina"].role == "train"


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_convert_fixture(name):
    source = SOURCES[name]
    raw = [json.loads(line) for line in (RAW / f"{name}.jsonl").read_text().splitlines()]
    rows, dropped = convert(source, load_rows(source, str(RAW / f"{name}.jsonl")), split=source.role)
    assert [r["reward_model"]["ground_truth"] for r in rows] == EXPECTED_ANSWERS[name]
    assert dropped == EXPECTED_DROPPED.get(name, 0)
    problems = [r.get("problem") or r.get("question") for r in raw]
    for i, row in enumerate(rows):
        assert row["data_source"] == name
        assert row["ability"] == "math"
        assert row["reward_model"]["style"] == "rule"
        assert row["prompt"] == [{"role": "user", "content": f"{problems[i]}\n\n{INSTRUCTION}"}]
        assert row["extra_info"]["index"] == i
        assert row["extra_info"]["question"] == problems[i]
        assert row["extra_info"]["split"] == ("train" if name in TRAIN_SETS else "test")


def test_cli_writes_parquet_that_verl_style_readers_load(tmp_path):
    out = tmp_path / "out"
    rc = math_data.main(["aime24", "olympiadbench", "--input-dir", str(RAW), "--out-dir", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["aime24.parquet", "olympiadbench.parquet"]
    frame = pd.read_parquet(out / "olympiadbench.parquet")
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert frame["reward_model"].iloc[1]["ground_truth"] == "3, 5"
    assert frame["extra_info"].iloc[0]["source_id"] == "1606"
    # verl's RLHFDataset reads parquet through datasets.load_dataset("parquet")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out / "aime24.parquet"), cache_dir=str(tmp_path / "hf"))["train"]
    assert len(ds) == 2
    assert ds[0]["prompt"][0]["role"] == "user"
    assert ds[1]["reward_model"]["ground_truth"] == "9"


@pytest.mark.parametrize("suffix", [".parquet", ".json", ".csv"])
def test_other_local_formats(tmp_path, suffix):
    frame = pd.read_json(RAW / "minerva_math.jsonl", lines=True, dtype=False)
    path = tmp_path / f"minerva_math{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    else:
        frame.to_csv(path, index=False)
    rows, _ = convert(SOURCES["minerva_math"], load_rows(SOURCES["minerva_math"], str(path)), split="test")
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["10", "619.9"]


def test_custom_columns_limit_and_instruction(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"What is {i}+{i}?", "final": str(2 * i)}) for i in range(5)) + "\n")
    out = tmp_path / "amc.parquet"
    rc = math_data.main(
        ["amc23", "--input", str(path), "--output", str(out), "--problem-key", "q", "--answer-key", "final",
         "--limit", "3", "--instruction", "Box it."]
    )
    assert rc == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 3
    assert frame["prompt"].iloc[2][0]["content"] == "What is 2+2?\n\nBox it."
    assert [r["ground_truth"] for r in frame["reward_model"]] == ["0", "2", "4"]


def test_missing_columns_fail_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "aime24.jsonl"
    path.write_text(json.dumps({"text": "no problem column", "answer": "1"}) + "\n")
    rc = math_data.main(["aime24", "--input", str(path), "--output", str(tmp_path / "x.parquet")])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1
    assert "no problem column ['problem', 'Problem']" in err and "--problem-key" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--out-dir", "x"], "name at least one set"),
        (["aime25", "--out-dir", "x"], "unknown set 'aime25'"),
        (["aime24", "math500", "--output", "x.parquet"], "exactly one set"),
        (["aime24"], "--out-dir"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert math_data.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_input_file(tmp_path, capsys):
    rc = math_data.main(["math", "--input-dir", str(tmp_path), "--out-dir", str(tmp_path)])
    assert rc == 1
    assert "no math{.parquet,.jsonl,.json,.csv} in --input-dir" in capsys.readouterr().err


def test_prepare_data_script_on_local_fixtures(run_script, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(RAW, raw)
    data_dir = tmp_path / "data"
    result = run_script("prepare_data.sh", env={"DATA_DIR": str(data_dir), "INPUT_DIR": str(raw)})
    assert result.returncode == 0, result.stderr
    written = sorted(p.stem for p in data_dir.glob("*.parquet"))
    assert written == sorted(EXPECTED_ANSWERS)
    for name, answers in EXPECTED_ANSWERS.items():
        frame = pd.read_parquet(data_dir / f"{name}.parquet")
        assert [r["ground_truth"] for r in frame["reward_model"]] == answers


def test_hub_loading_asks_for_the_right_set(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return [{"question": "Find x.", "final_answer": ["$2$"]}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert math_data.main(["olympiadbench", "--out-dir", str(tmp_path)]) == 0
    # the fake rows have no "answer" column for gsm8k: a clear error, still after asking for the right split
    assert math_data.main(["gsm8k", "--split", "test", "--output", str(tmp_path / "g.parquet")]) == 1
    assert calls == [("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"), ("openai/gsm8k", "main", "test")]
    assert pd.read_parquet(tmp_path / "olympiadbench.parquet")["reward_model"].iloc[0]["ground_truth"] == "2"
