"""Data preparation: local fixture files → verl's RL parquet rows (no hub access)."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from verl_lambda.math import data as math_data
from verl_lambda.math.data import EVAL_SETS, INSTRUCTION, PAPER_SETS, SOURCES, TRAIN_SETS, convert, load_rows

REPO = Path(__file__).resolve().parents[1]
RAW = Path(__file__).resolve().parent / "fixtures" / "math_raw"
PROG = "python -m verl_lambda.math.data"

# Ground truths each fixture row must produce, written out by hand.
EXPECTED_ANSWERS = {
    "gsm8k": ["1236", "9"],  # "#### 1,236" -> thousands separator removed; the third row has no "####"
    "math": [r"\frac{1}{2}", r"\frac{\sqrt{3}}{2}"],  # last \boxed{} of the solution; third row has none
    "deepscaler": ["4", "5"],  # second row: empty answer column, boxed solution
    "aime24": ["24", "9"],  # 9 is an integer cell
    "math500": [r"\left( 3, \frac{\pi}{2} \right)", "2"],
    "olympiadbench": [r"\frac{1}{2}", "3, 5"],  # list of $...$ answers
    "minerva_math": ["10", "619.9"],
    "amc23": ["27", "0.25"],  # float cells
    "math12k": ["70", "15", "-3"],  # third row: empty answer
    "math_rl_16k": [r"\frac{5}{2}", "12", "7"],  # "solution" holds the answer; the third one is boxed in a sentence
    "orz_57k": ["9", r"\frac{1}{3}", "6"],  # [human, assistant] pairs; the third pair's ground truth is empty
}
# Index of the fixture rows that have no answer, so are dropped.
EXPECTED_DROPPED = {"gsm8k": [2], "math": [2], "math12k": [2], "orz_57k": [2]}
DEFAULT_SETS = ["gsm8k", "math", "deepscaler", "aime24", "math500", "olympiadbench", "minerva_math", "amc23"]


def fixture_path(name: str) -> Path:
    """The fixture file of a set (JSON lines, or JSON for the pair layout)."""
    return next(p for p in (RAW / f"{name}.jsonl", RAW / f"{name}.json") if p.is_file())


def raw_problems(name: str) -> list:
    """The problem text of every fixture row, read straight from the file."""
    path = fixture_path(name)
    if path.suffix == ".json":
        return [pair[0]["value"] for pair in json.loads(path.read_text())]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r.get("problem") or r.get("question") for r in records]


def test_every_training_and_evaluation_set_is_known():
    assert set(TRAIN_SETS) == {"gsm8k", "math", "deepscaler"}
    assert set(EVAL_SETS) == {"aime24", "math500", "olympiadbench", "minerva_math", "amc23"}
    assert SOURCES["numina"].role == "train"
    # the GRPO-λ authors' training sets
    assert PAPER_SETS == ("gsm8k", "math12k", "math_rl_16k", "orz_57k")
    assert all(SOURCES[n].role == "train" for n in PAPER_SETS)
    assert SOURCES["math12k"].hub_id == "hiyouga/math12k"
    assert SOURCES["math_rl_16k"].hub_id == "riddickz/math-rl-16k"
    assert SOURCES["orz_57k"].hub_file == "orz_math_57k_collected.json"


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_convert_fixture(name):
    source = SOURCES[name]
    rows, dropped = convert(source, load_rows(source, str(fixture_path(name))), split=source.role)
    assert [r["reward_model"]["ground_truth"] for r in rows] == EXPECTED_ANSWERS[name]
    assert dropped == len(EXPECTED_DROPPED.get(name, []))
    problems = [p for i, p in enumerate(raw_problems(name)) if i not in EXPECTED_DROPPED.get(name, [])]
    assert len(problems) == len(rows)
    for i, row in enumerate(rows):
        assert row["data_source"] == name
        assert row["ability"] == "math"
        assert row["reward_model"]["style"] == "rule"
        assert row["prompt"] == [{"role": "user", "content": f"{problems[i]}\n\n{INSTRUCTION}"}]
        assert row["extra_info"]["index"] == i
        assert row["extra_info"]["question"] == problems[i]
        assert row["extra_info"]["split"] == ("train" if source.role == "train" else "test")


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

    ds = datasets.load_dataset("parquet", data_files=str(out / "aime24.parquet"), cache_dir=str(tmp_path / "hf"))[
        "train"
    ]
    assert len(ds) == 2
    assert ds[0]["prompt"][0]["role"] == "user"
    assert ds[1]["reward_model"]["ground_truth"] == "9"


def test_the_authors_training_sets(tmp_path, capsys):
    """--paper converts the GRPO-λ authors' four training sets, with the same fields as every other set."""
    out = tmp_path / "out"
    assert math_data.main(["--paper", "--input-dir", str(RAW), "--out-dir", str(out)]) == 0
    assert sorted(p.stem for p in out.iterdir()) == sorted(PAPER_SETS)
    reference = pd.read_parquet(out / "gsm8k.parquet")
    for name in PAPER_SETS:
        frame = pd.read_parquet(out / f"{name}.parquet")
        assert list(frame.columns) == list(reference.columns)
        assert [r["ground_truth"] for r in frame["reward_model"]] == EXPECTED_ANSWERS[name]
        assert {r["style"] for r in frame["reward_model"]} == {"rule"}
        assert set(frame["data_source"]) == {name}
    assert "orz_57k: 3 rows from" in capsys.readouterr().out


def test_the_list_names_every_set_and_its_source(capsys):
    assert math_data.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name, source in SOURCES.items():
        line = next(line for line in listing.splitlines() if line.startswith(name + " "))
        assert source.hub_id in line
    assert "--paper: gsm8k math12k math_rl_16k orz_57k" in listing
    assert "Tonic/OpenReasonerZero:orz_math_57k_collected.json" in listing


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


def test_orz_pairs_in_other_files(tmp_path):
    """The ORZ pairs as JSON lines, or as columns "0" and "1" (how pandas / the datasets library load them)."""
    pairs = json.loads((RAW / "orz_57k.json").read_text())
    jsonl = tmp_path / "orz_57k.jsonl"
    jsonl.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    parquet = tmp_path / "orz_57k.parquet"
    pd.DataFrame(pairs).rename(columns=str).to_parquet(parquet)
    for path in (jsonl, parquet):
        rows, dropped = convert(SOURCES["orz_57k"], load_rows(SOURCES["orz_57k"], str(path)), split="train")
        assert [r["reward_model"]["ground_truth"] for r in rows] == EXPECTED_ANSWERS["orz_57k"], path
        assert dropped == 1


def test_orz_flattened_copy_with_override_flags(tmp_path):
    # e.g. a copy of the set with one column per field: the override flags name them
    path = tmp_path / "orz.jsonl"
    path.write_text(json.dumps({"question": "What is 2+2?", "final": "4"}) + "\n")
    out = tmp_path / "orz.parquet"
    rc = math_data.main(
        ["orz_57k", "--input", str(path), "--output", str(out), "--problem-key", "question", "--answer-key", "final"]
    )
    assert rc == 0
    assert pd.read_parquet(out)["reward_model"].iloc[0]["ground_truth"] == "4"


def test_custom_columns_limit_and_instruction(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"What is {i}+{i}?", "final": str(2 * i)}) for i in range(5)) + "\n")
    out = tmp_path / "amc.parquet"
    argv = ["amc23", "--input", str(path), "--output", str(out), "--problem-key", "q", "--answer-key", "final"]
    rc = math_data.main([*argv, "--limit", "3", "--instruction", "Box it."])
    assert rc == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 3
    assert frame["prompt"].iloc[2][0]["content"] == "What is 2+2?\n\nBox it."
    assert [r["ground_truth"] for r in frame["reward_model"]] == ["0", "2", "4"]


@pytest.mark.parametrize("limit", ["0", "-1", "two"])
def test_limit_must_be_positive(limit, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        math_data.main(["aime24", "--input-dir", str(RAW), "--out-dir", str(tmp_path), "--limit", limit])
    assert exit_info.value.code == 2
    assert f"{PROG}: error: argument --limit: must be a whole number >= 1, got '{limit}'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def one_error_line(capsys) -> str:
    """The one line the command wrote to stderr."""
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_missing_columns_fail_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "aime24.jsonl"
    path.write_text(json.dumps({"text": "no problem column", "answer": "1"}) + "\n")
    rc = math_data.main(["aime24", "--input", str(path), "--output", str(tmp_path / "x.parquet")])
    err = one_error_line(capsys)
    assert rc == 2
    assert err.startswith(f"{PROG}: error: aime24: no problem column ['problem', 'Problem']") and "--problem-key" in err


@pytest.mark.parametrize(
    "file_name, content",
    [
        ("aime24.jsonl", '{"problem": "1+1?", "answer": "2"}\n{not json\n'),
        ("aime24.json", '{"problem": "a JSON object, not a list of records"}'),
        ("aime24.json", "[1, 2"),
        ("aime24.parquet", "PAR1 not really parquet"),
        ("aime24.csv", 'problem,answer\n"unclosed quote,1\n'),
        ("aime24.jsonl", "[1, 2]\n"),
    ],
)
def test_a_malformed_input_gives_one_line_naming_the_set_and_file(tmp_path, capsys, file_name, content):
    path = tmp_path / file_name
    path.write_text(content)
    rc = math_data.main(["aime24", "--input", str(path), "--output", str(tmp_path / "out.parquet")])
    err = one_error_line(capsys)
    assert rc == 2
    assert err.startswith(f"{PROG}: error: aime24: ")
    assert str(path) in err
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("kind", ["parent is a file", "output is a directory"])
def test_an_unwritable_output_gives_one_line_naming_the_set_and_file(tmp_path, capsys, kind):
    if kind == "parent is a file":
        (tmp_path / "file").write_text("")
        output = tmp_path / "file" / "aime24.parquet"
    else:
        output = tmp_path / "aime24.parquet"
        output.mkdir()
    rc = math_data.main(["aime24", "--input-dir", str(RAW), "--output", str(output)])
    err = one_error_line(capsys)
    assert rc == 2
    assert err.startswith(f"{PROG}: error: aime24: cannot write {output}: ")


def test_rows_without_a_ground_truth_are_never_written(tmp_path):
    rows, _ = convert(SOURCES["aime24"], [{"problem": "Find x.", "answer": "3"}], split="test")
    for truth in (None, "", "  ", float("nan"), []):
        bad = [*rows, {**rows[0], "reward_model": {"style": "rule", "ground_truth": truth}}]
        path = tmp_path / "bad.parquet"
        with pytest.raises(ValueError, match="row 1 \\(aime24\\) has no reward_model.ground_truth"):
            math_data.write_parquet(bad, str(path))
        assert not path.exists()
    # convert itself drops them: a missing answer never becomes the text "None"
    converted, dropped = convert(SOURCES["aime24"], [{"problem": "Find x.", "answer": None}], split="test")
    assert converted == [] and dropped == 1


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
    err = one_error_line(capsys)
    assert err.startswith(f"{PROG}: error: ") and message in err


def test_missing_input_file(tmp_path, capsys):
    rc = math_data.main(["math", "--input-dir", str(tmp_path), "--out-dir", str(tmp_path)])
    assert rc == 2
    assert "math: no math{.parquet,.jsonl,.json,.csv} in --input-dir" in one_error_line(capsys)


def test_prepare_data_script_on_local_fixtures(run_script, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(RAW, raw)
    data_dir = tmp_path / "data"
    result = run_script("prepare_data.sh", env={"DATA_DIR": str(data_dir), "INPUT_DIR": str(raw)})
    assert result.returncode == 0, result.stderr
    written = sorted(p.stem for p in data_dir.glob("*.parquet"))
    assert written == sorted(DEFAULT_SETS)
    for name in DEFAULT_SETS:
        frame = pd.read_parquet(data_dir / f"{name}.parquet")
        assert [r["ground_truth"] for r in frame["reward_model"]] == EXPECTED_ANSWERS[name]


def test_prepare_data_script_selects_the_authors_sets(run_script, tmp_path):
    data_dir = tmp_path / "data"
    env = {"DATA_DIR": str(data_dir), "INPUT_DIR": str(RAW), "DATASETS": " ".join(PAPER_SETS)}
    result = run_script("prepare_data.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.stem for p in data_dir.glob("*.parquet")) == sorted(PAPER_SETS)


def test_hub_loading_asks_for_the_right_set(monkeypatch, tmp_path, capsys):
    import datasets

    hub = {
        "Hothan/OlympiadBench": [{"question": "Find x.", "final_answer": ["$2$"]}],
        "openai/gsm8k": [{"question": "Find x.", "final_answer": ["$2$"]}],  # no "answer" column
        "hiyouga/math12k": [{"problem": "Find y.", "answer": "3"}],
        "riddickz/math-rl-16k": [{"problem": "Find z.", "solution": "4", "reward": 0.5, "question_token_count": 3}],
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return hub[path]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert math_data.main(["olympiadbench", "--out-dir", str(tmp_path)]) == 0
    # gsm8k's fake rows have no "answer" column: a clear error, still after asking for the right split
    assert math_data.main(["gsm8k", "--split", "test", "--output", str(tmp_path / "g.parquet")]) == 2
    assert "gsm8k: no answer column ['answer'] in openai/gsm8k/main" in capsys.readouterr().err
    assert math_data.main(["math12k", "math_rl_16k", "--out-dir", str(tmp_path)]) == 0
    assert calls == [
        ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
        ("openai/gsm8k", "main", "test"),
        ("hiyouga/math12k", None, "train"),
        ("riddickz/math-rl-16k", None, "train"),
    ]
    assert pd.read_parquet(tmp_path / "olympiadbench.parquet")["reward_model"].iloc[0]["ground_truth"] == "2"
    assert pd.read_parquet(tmp_path / "math12k.parquet")["reward_model"].iloc[0]["ground_truth"] == "3"
    assert pd.read_parquet(tmp_path / "math_rl_16k.parquet")["reward_model"].iloc[0]["ground_truth"] == "4"


def test_orz_is_read_from_its_hub_file(monkeypatch, tmp_path, capsys):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, repo_type=None, **kwargs):
        calls.append((repo_id, filename, repo_type))
        return str(RAW / "orz_57k.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert math_data.main(["orz_57k", "--out-dir", str(tmp_path)]) == 0
    assert calls == [("Tonic/OpenReasonerZero", "orz_math_57k_collected.json", "dataset")]
    frame = pd.read_parquet(tmp_path / "orz_57k.parquet")
    assert [r["ground_truth"] for r in frame["reward_model"]] == EXPECTED_ANSWERS["orz_57k"]
    assert "from Tonic/OpenReasonerZero:orz_math_57k_collected.json" in capsys.readouterr().out
    assert math_data.main(["orz_57k", "--split", "test", "--out-dir", str(tmp_path)]) == 2
    assert "--split does not apply" in one_error_line(capsys)


# ---------------------------------------------------------------------------------------------- robustness


def write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("line", [6, 151])
def test_a_row_that_is_not_a_record_gives_one_line_wherever_it_is(tmp_path, capsys, line):
    # only the first 100 rows used to be checked: a list at line 151 gave an AttributeError traceback
    records = [{"problem": f"{i}+1?", "answer": str(i + 1)} for i in range(200)]
    records[line - 1] = [1, 2]
    path = tmp_path / "aime24.jsonl"
    write_jsonl(path, records)
    rc = math_data.main(["aime24", "--input", str(path), "--output", str(tmp_path / "out.parquet")])
    err = one_error_line(capsys)
    assert rc == 2
    assert err == f"{PROG}: error: aime24: line {line} of {path} is a list, not a record (an object with named fields)"
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_byte_order_mark_is_accepted(tmp_path, capsys, suffix):
    """A Windows export starts with a UTF-8 byte order mark; it used to be refused ("Unexpected UTF-8 BOM")."""
    records = [{"problem": "What is 2+2?", "answer": "4"}, {"problem": "What is 3+3?", "answer": "6"}]
    if suffix == ".jsonl":
        text = "".join(json.dumps(r) + "\n" for r in records)
    elif suffix == ".json":
        text = json.dumps(records)
    else:
        text = "problem,answer\nWhat is 2+2?,4\nWhat is 3+3?,6\n"
    path = tmp_path / f"amc23{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    out = tmp_path / "amc23.parquet"
    assert math_data.main(["amc23", "--input", str(path), "--output", str(out)]) == 0, capsys.readouterr().err
    assert [r["ground_truth"] for r in pd.read_parquet(out)["reward_model"]] == ["4", "6"]


def existing_output(tmp_path: Path) -> tuple[Path, bytes]:
    out = tmp_path / "aime24.parquet"
    assert math_data.main(["aime24", "--input-dir", str(RAW), "--output", str(out)]) == 0
    return out, out.read_bytes()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, capsys, monkeypatch):
    out, good = existing_output(tmp_path)
    capsys.readouterr()

    def half_write(self, path, *args, **kwargs):  # writes part of a file, then the disk is full
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    rc = math_data.main(["aime24", "--input-dir", str(RAW), "--output", str(out)])
    assert rc == 2
    assert one_error_line(capsys) == f"{PROG}: error: aime24: cannot write {out}: No space left on device"
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aime24.parquet"]


def run_command(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (Ctrl-C ends the whole process: never inside pytest's)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_ctrl_c_while_writing_leaves_the_old_file_and_no_temporary_file(tmp_path):
    out, good = existing_output(tmp_path)
    result = run_command(
        f"""
        import os, signal, sys, time
        from pathlib import Path
        import pandas as pd
        from verl_lambda.math import data

        def half_write(self, path, *args, **kwargs):  # Ctrl-C half way through the file
            Path(path).write_bytes(b"PAR1 half a file")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)

        pd.DataFrame.to_parquet = half_write
        sys.exit(data.main(["aime24", "--input-dir", {str(RAW)!r}, "--output", {str(out)!r}]))
        """
    )
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip() == f"{PROG}: interrupted"
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aime24.parquet"]


def test_ctrl_c_ends_with_one_line_and_status_130(tmp_path):
    result = run_command(
        f"""
        import os, signal, sys, time
        from verl_lambda.math import data

        def interrupted(*args, **kwargs):  # Ctrl-C while the set is read
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)

        data.load_rows = interrupted
        sys.exit(data.main(["aime24", "--input-dir", {str(RAW)!r}, "--out-dir", {str(tmp_path)!r}]))
        """
    )
    assert result.returncode == 130
    assert result.stderr.strip() == f"{PROG}: interrupted"
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_new_output_file_gets_the_usual_mode(tmp_path):
    import os

    out, _ = existing_output(tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    out.chmod(0o640)
    assert math_data.main(["aime24", "--input-dir", str(RAW), "--output", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


@pytest.mark.parametrize(
    "answer, shown",
    [
        (True, "True (true/false, not an answer)"),  # used to become the ground truth 'True'
        ({"value": 5}, "{'value': 5} (an object, not text)"),  # used to become "{'value': 5}"
        (float("inf"), "inf (an infinite number)"),  # JSON's Infinity; used to become 'inf'
        (["3", False], "False (true/false, not an answer)"),
        (["3", None], "['3', None] (a list with an empty item)"),  # used to become the answer '3'
        (
            12345678901234567.0,
            "1.2345678901234568e+16 (a whole number too large to be exact as a float: store it as text)",
        ),
    ],
)
def test_an_answer_that_is_not_text_is_refused(tmp_path, capsys, answer, shown):
    records = [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "What is x?", "answer": answer}]
    path = tmp_path / "aime24.jsonl"
    write_jsonl(path, records)
    rc = math_data.main(["aime24", "--input", str(path), "--output", str(tmp_path / "out.parquet")])
    err = one_error_line(capsys)
    assert rc == 2
    assert err == (
        f"{PROG}: error: aime24: line 2 of {path}: the answer column 'answer' holds {shown}; fix or remove the row"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_bytes_and_numbers_become_text_and_are_counted(tmp_path, capsys):
    """Bytes used to become the ground truth "b'2'"; now they are decoded, and each conversion is counted."""
    path = tmp_path / "amc23.parquet"
    # a binary parquet column (pyarrow reads it back as bytes)
    frame = pd.DataFrame({"problem": [b"What is 1+1?", b"What is 1+2?", b"What is 1+3?"], "answer": [b"2", b"3", b"4"]})
    frame.to_parquet(path)
    out = tmp_path / "out.parquet"
    assert math_data.main(["amc23", "--input", str(path), "--output", str(out)]) == 0
    written = pd.read_parquet(out)
    assert [r["ground_truth"] for r in written["reward_model"]] == ["2", "3", "4"]
    assert written["extra_info"].iloc[1]["question"] == "What is 1+2?"
    assert capsys.readouterr().out == (
        f"amc23: 3 rows from {path} -> {out} "
        "(bytes decoded as UTF-8 (answer): 3; bytes decoded as UTF-8 (problem): 3)\n"
    )
    # integer cells (the hub copies of aime24 and amc23 have them) are written out, and counted
    assert math_data.main(["aime24", "--input-dir", str(RAW), "--output", str(out)]) == 0
    assert "(numbers written as text (answer): 1)" in capsys.readouterr().out


def test_undecodable_bytes_are_refused(tmp_path, capsys):
    path = tmp_path / "amc23.parquet"
    pd.DataFrame({"problem": ["What is 1+1?"], "answer": [b"\xff\xfe"]}).to_parquet(path)
    assert math_data.main(["amc23", "--input", str(path), "--output", str(tmp_path / "o.parquet")]) == 2
    assert one_error_line(capsys) == (
        f"{PROG}: error: amc23: row 1 of {path}: the answer column 'answer' holds b'\\xff\\xfe' "
        "(bytes that are not UTF-8 text); fix or remove the row"
    )
