"""Public math sets → verl's RL parquet format.

Every output row has verl's fields::

    data_source   short name of the set ("gsm8k", "math", "aime24", ...): validation metrics are
                  reported per data_source (val-core/<data_source>/...)
    prompt        [{"role": "user", "content": <problem> + instruction to box the final answer}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <final answer>}
    extra_info    {"split", "index", "question", "source_id"}

Rows without a problem or a final answer are dropped (and counted); no row is ever written
without a ground truth.

Training sets: gsm8k, math (MATH, 7.5k), deepscaler (DeepScaleR-Preview, 40k), numina
(NuminaMath-CoT, boxed answers only), and the GRPO-λ authors' four (``--paper``): gsm8k, math12k
(hiyouga/math12k), math_rl_16k (riddickz/math-rl-16k) and orz_57k (Open-Reasoner-Zero's 57k set:
``orz_math_57k_collected.json``, a JSON list of ``[{"from": "human", "value": problem},
{"from": "assistant", "ground_truth": {"value": answer}}]`` pairs, read from the hub mirror
Tonic/OpenReasonerZero; the original lives in github.com/Open-Reasoner-Zero/Open-Reasoner-Zero
under data/). Evaluation sets: aime24, math500, olympiadbench, minerva_math, amc23.

Usage::

    python -m verl_lambda.math.data --list                                    # the sets and their sources
    python -m verl_lambda.math.data --all --out-dir ~/data/grpo_lambda        # from the hub
    python -m verl_lambda.math.data --paper --out-dir ~/data/grpo_lambda      # the authors' training sets
    python -m verl_lambda.math.data aime24 --input ./aime24.jsonl --output ./aime24.parquet
    python -m verl_lambda.math.data --all --input-dir ./raw --out-dir ./data  # <name>.{parquet,jsonl,json,csv}

Local files may be parquet, JSON lines, JSON or CSV with the columns of the hub copy (see
``SOURCES``; ``--problem-key`` / ``--answer-key`` name others). Any error (a usage error, an
unreadable input, an unwritable output) exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from verl_lambda.math.reward import last_boxed

__all__ = [
    "Source",
    "SOURCES",
    "TRAIN_SETS",
    "EVAL_SETS",
    "PAPER_SETS",
    "INSTRUCTION",
    "load_rows",
    "convert",
    "write_parquet",
    "main",
]

PROG = "python -m verl_lambda.math.data"
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _gsm8k_answer(text: str) -> str | None:
    """The number after GSM8K's final ``####``, thousands separators removed."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def _boxed_or_whole(text: str) -> str | None:
    """The last ``\\boxed{}`` of ``text`` when it has one, else the whole text (already a final answer)."""
    boxed = last_boxed(text)
    return boxed.strip() if boxed is not None else text


def _orz_row(record: Any) -> Any:
    """An Open-Reasoner-Zero record as ``{"problem": ..., "answer": ...}``.

    A record is a conversation pair ``[{"from": "human", "value": problem}, {"from": "assistant",
    "ground_truth": {"value": answer, "pass_at_n": ...}}]``: as a list (the JSON file), or as a
    row with columns ``"0"`` and ``"1"`` (how pandas and the datasets library load that file).
    Any other record (a file with other columns, see ``--problem-key``) is returned unchanged.
    """
    if isinstance(record, dict):
        if "0" in record and "1" in record:
            turns = [record["0"], record["1"]]
        elif 0 in record and 1 in record:
            turns = [record[0], record[1]]
        else:
            return record
    elif isinstance(record, (list, tuple)) or hasattr(record, "tolist"):
        turns = record.tolist() if hasattr(record, "tolist") else list(record)
    else:
        return record
    turns = [t for t in turns if isinstance(t, dict)]
    human = [t for t in turns if t.get("from") == "human"] or turns[:1]
    answered = [t for t in turns if t.get("ground_truth") is not None]
    answer = answered[0]["ground_truth"] if answered else None
    if isinstance(answer, dict):
        answer = answer.get("value")
    return {"problem": human[0].get("value") if human else None, "answer": answer}


@dataclass(frozen=True)
class Source:
    """Where a set lives on the hub and which columns hold the problem and the answer.

    The answer is the first non-empty of ``answer_keys`` (passed through ``answer_fn`` if given),
    else the last ``\\boxed{}`` of the first non-empty of ``solution_keys``. ``row_fn`` first turns
    each raw record into such columns, for layouts that are not one column per field.
    ``hub_file`` names one file of the hub repository to download and read as a local file
    instead of loading the repository with the datasets library. ``answer_note`` says where the
    answer comes from (for ``--list``), when the key names alone do not.
    """

    name: str
    role: str  # "train" or "test"
    hub_id: str
    hub_config: str | None
    hub_split: str
    problem_keys: tuple[str, ...]
    answer_keys: tuple[str, ...] = ()
    solution_keys: tuple[str, ...] = ()
    answer_fn: Callable[[str], str | None] | None = None
    id_keys: tuple[str, ...] = ("unique_id", "id", "ID", "url")
    row_fn: Callable[[Any], Any] | None = None
    hub_file: str | None = None
    answer_note: str = ""

    @property
    def origin(self) -> str:
        """The hub copy, as printed: ``repo[/config]`` or ``repo:file``."""
        if self.hub_file:
            return f"{self.hub_id}:{self.hub_file}"
        return self.hub_id + (f"/{self.hub_config}" if self.hub_config else "")


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "gsm8k",
            "train",
            "openai/gsm8k",
            "main",
            "train",
            ("question",),
            ("answer",),
            answer_fn=_gsm8k_answer,
            answer_note="answer, after its last ####",
        ),
        Source(
            "math",
            "train",
            "DigitalLearningGmbH/MATH-lighteval",
            None,
            "train",
            ("problem",),
            solution_keys=("solution",),
        ),
        Source(
            "deepscaler",
            "train",
            "agentica-org/DeepScaleR-Preview-Dataset",
            None,
            "train",
            ("problem",),
            ("answer",),
            ("solution",),
        ),
        Source("numina", "train", "AI-MO/NuminaMath-CoT", None, "train", ("problem",), solution_keys=("solution",)),
        Source("math12k", "train", "hiyouga/math12k", None, "train", ("problem",), ("answer",), ("solution",)),
        Source(
            "math_rl_16k",
            "train",
            "riddickz/math-rl-16k",
            None,
            "train",
            ("problem",),
            ("solution",),
            answer_fn=_boxed_or_whole,
            answer_note="solution (a final answer; its last \\boxed{} if it has one)",
        ),
        Source(
            "orz_57k",
            "train",
            "Tonic/OpenReasonerZero",
            None,
            "train",
            ("problem",),
            ("answer",),
            row_fn=_orz_row,
            hub_file="orz_math_57k_collected.json",
            answer_note="ground_truth.value of the assistant turn ([human, assistant] pairs)",
        ),
        Source(
            "aime24", "test", "HuggingFaceH4/aime_2024", None, "train", ("problem", "Problem"), ("answer", "Answer")
        ),
        Source("math500", "test", "HuggingFaceH4/MATH-500", None, "test", ("problem",), ("answer",), ("solution",)),
        Source(
            "olympiadbench",
            "test",
            "Hothan/OlympiadBench",
            "OE_TO_maths_en_COMP",
            "train",
            ("question", "problem"),
            ("final_answer", "answer"),
        ),
        Source(
            "minerva_math",
            "test",
            "math-ai/minervamath",
            None,
            "test",
            ("question", "problem"),
            ("answer",),
            ("solution",),
        ),
        Source("amc23", "test", "math-ai/amc23", None, "test", ("question", "problem"), ("answer",)),
    ]
}
# --train / --all: the training sets of the recipes; --paper: the GRPO-λ authors' training sets.
TRAIN_SETS = ("gsm8k", "math", "deepscaler")
PAPER_SETS = ("gsm8k", "math12k", "math_rl_16k", "orz_57k")
EVAL_SETS = tuple(n for n, s in SOURCES.items() if s.role == "test")
_LOCAL_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


def _one_line(err: BaseException) -> str:
    """An exception as one line of text: its first non-empty line, or its type."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _read_local(path: str) -> list[Any]:
    """The records of a local parquet / JSON lines / JSON / CSV file (dicts, or lists for pair layouts)."""
    import pandas as pd

    if path.endswith(".parquet"):
        return pd.read_parquet(path).to_dict(orient="records")
    if path.endswith(".csv"):
        return pd.read_csv(path, dtype=str, keep_default_na=False).to_dict(orient="records")
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            records = []
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"line {number}: {err.msg} (column {err.colno})") from err
            return records
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of records (or {{'data': [...]}}), got a JSON {type(data).__name__}")
    return data


def load_rows(source: Source, input_path: str | None = None, split: str | None = None) -> list[Any]:
    """Raw records of a set: from ``input_path`` (local file) or from the Hugging Face hub.

    Raises FileNotFoundError for a missing file and ValueError, naming the set and the file, for
    one that cannot be read.
    """
    if input_path is None and source.hub_file is None:
        import datasets

        ds = datasets.load_dataset(source.hub_id, source.hub_config, split=split or source.hub_split)
        return [dict(r) for r in ds]
    if input_path is None:
        if split and split != source.hub_split:
            raise ValueError(f"{source.name}: the hub copy is one file ({source.origin}); --split does not apply")
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id=source.hub_id, filename=source.hub_file, repo_type="dataset")
        shown = source.origin
    else:
        path = os.path.expanduser(input_path)
        shown = input_path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{source.name}: input file {input_path} does not exist")
        if not path.endswith(_LOCAL_EXTENSIONS):
            raise ValueError(f"{source.name}: cannot read {input_path}: use one of {', '.join(_LOCAL_EXTENSIONS)}")
    try:
        return _read_local(path)
    except Exception as err:  # noqa: BLE001 - pandas / pyarrow / json errors, reported in one line
        raise ValueError(f"{source.name}: cannot read {shown}: {_one_line(err)}") from err


def _text(value: Any) -> str:
    """A cell as answer text: lists joined with ", ", whole floats as ints, $…$ stripped."""
    if value is None:
        return ""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(t for t in (_text(v) for v in value) if t)
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def _first(row: dict[str, Any], keys: Sequence[str]) -> str:
    for key in keys:
        text = _text(row.get(key))
        if text:
            return text
    return ""


def convert(
    source: Source,
    rows: list[Any],
    split: str,
    problem_key: str | None = None,
    answer_key: str | None = None,
    instruction: str = INSTRUCTION,
    limit: int | None = None,
    origin: str = "the input",
) -> tuple[list[dict[str, Any]], int]:
    """verl rows for ``rows`` of ``source``.

    Returns (rows, number of rows dropped for lack of a problem or an answer). Raises ValueError
    when the rows lack the problem or answer columns; ``origin`` names the rows' file in it.
    """
    if source.row_fn is not None:
        rows = [source.row_fn(r) for r in rows]
    not_records = [r for r in rows[:100] if not isinstance(r, dict)]
    if not_records:
        raise ValueError(
            f"{source.name}: expected one record (an object with named fields) per row in {origin}, "
            f"got a {type(not_records[0]).__name__}"
        )
    problem_keys = (problem_key,) if problem_key else source.problem_keys
    answer_keys = (answer_key,) if answer_key else source.answer_keys
    solution_keys = () if answer_key else source.solution_keys
    if rows:
        columns = set().union(*(r.keys() for r in rows[:100]))
        if not columns & set(problem_keys):
            raise ValueError(
                f"{source.name}: no problem column {list(problem_keys)} in {origin} "
                f"(columns: {sorted(map(str, columns))}); name it with --problem-key"
            )
        if not columns & set(answer_keys + solution_keys):
            raise ValueError(
                f"{source.name}: no answer column {list(answer_keys + solution_keys)} in {origin} "
                f"(columns: {sorted(map(str, columns))}); name it with --answer-key"
            )
    out: list[dict[str, Any]] = []
    dropped = 0
    for row in rows:
        problem = _first(row, problem_keys)
        answer = _first(row, answer_keys)
        if answer and source.answer_fn is not None and not answer_key:
            answer = source.answer_fn(answer) or ""
        if not answer:
            solution = _first(row, solution_keys)
            answer = (last_boxed(solution) or "").strip() if solution else ""
        if not problem or not answer:
            dropped += 1
            continue
        out.append(
            {
                "data_source": source.name,
                "prompt": [{"role": "user", "content": f"{problem}\n\n{instruction}" if instruction else problem}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {
                    "split": split,
                    "index": len(out),
                    "question": problem,
                    "source_id": _first(row, source.id_keys),
                },
            }
        )
        if limit is not None and len(out) >= limit:
            break
    return out, dropped


def _missing(value: Any) -> bool:
    """Whether a ground truth is absent: None, NaN, blank text, or a list of such."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    if isinstance(value, str):
        return not value.strip()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return all(_missing(v) for v in value)
    return False


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    """Write verl rows to a parquet file.

    Raises ValueError (before writing anything) when a row has no ``reward_model.ground_truth``,
    and OSError naming ``path`` when the file cannot be written.
    """
    for i, row in enumerate(rows):
        reward_model = row.get("reward_model")
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        if _missing(truth):
            raise ValueError(
                f"row {i} ({row.get('data_source', '?')}) has no reward_model.ground_truth ({truth!r}); "
                f"refusing to write {path}"
            )
    import pandas as pd

    target = os.path.expanduser(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        pd.DataFrame(rows).to_parquet(target, index=False)
    except Exception as err:  # noqa: BLE001 - OS / pyarrow errors, reported in one line
        reason = err.strerror if isinstance(err, OSError) and err.strerror else _one_line(err)
        raise OSError(f"cannot write {path}: {reason}") from err


def _local_input(input_dir: str, name: str) -> str:
    for ext in _LOCAL_EXTENSIONS:
        path = os.path.join(os.path.expanduser(input_dir), name + ext)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name}: no {name}{{{','.join(_LOCAL_EXTENSIONS)}}} in --input-dir {input_dir}")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return number


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert public math sets to verl's RL parquet format (prompt as chat list, "
        "data_source, reward_model.ground_truth, extra_info).",
    )
    p.add_argument("datasets", nargs="*", help=f"sets to convert: {', '.join(SOURCES)} (see --list)")
    p.add_argument("--list", action="store_true", help="list the sets, their hub sources and answer columns, and exit")
    p.add_argument("--all", action="store_true", help=f"every training ({', '.join(TRAIN_SETS)}) and evaluation set")
    p.add_argument("--train", action="store_true", help="the training sets")
    p.add_argument("--eval", action="store_true", help="the evaluation sets")
    p.add_argument("--paper", action="store_true", help=f"the GRPO-λ authors' training sets ({', '.join(PAPER_SETS)})")
    p.add_argument("--out-dir", default=None, help="write <out-dir>/<name>.parquet")
    p.add_argument("--output", default=None, help="output file (one set only)")
    p.add_argument("--input", default=None, help="local file to convert instead of the hub copy (one set only)")
    p.add_argument(
        "--input-dir", default=None, help="read <input-dir>/<name>.{parquet,jsonl,json,csv} instead of the hub"
    )
    p.add_argument("--split", default=None, help="hub split to read (default: the set's usual split)")
    p.add_argument("--problem-key", default=None, help="column with the problem text")
    p.add_argument("--answer-key", default=None, help="column with the final answer")
    p.add_argument("--instruction", default=INSTRUCTION, help="text appended to every problem")
    p.add_argument("--limit", type=_positive_int, default=None, help="keep at most this many rows per set (>= 1)")
    return p


def _answer_description(source: Source) -> str:
    if source.answer_note:
        return source.answer_note
    parts = [" or ".join(source.answer_keys)] if source.answer_keys else []
    if source.solution_keys:
        parts.append(f"last \\boxed{{}} of {' or '.join(source.solution_keys)}")
    return ", else ".join(parts)


def _print_list() -> None:
    rows = [("name", "use", "hub source", "answer")]
    for s in SOURCES.values():
        split = "" if s.hub_file else f" ({s.hub_split})"
        rows.append(
            (s.name, "training" if s.role == "train" else "evaluation", s.origin + split, _answer_description(s))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:3])) + "  " + r[3])
    print(f"\n--train: {' '.join(TRAIN_SETS)}\n--eval: {' '.join(EVAL_SETS)}\n--paper: {' '.join(PAPER_SETS)}")


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 with one line on stderr)."""
    args = _parser().parse_args(argv)
    if args.list:
        _print_list()
        return 0
    names = list(args.datasets)
    for flag, group in (
        (args.all or args.train, TRAIN_SETS),
        (args.paper, PAPER_SETS),
        (args.all or args.eval, EVAL_SETS),
    ):
        if flag:
            names += [n for n in group if n not in names]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        return _error(f"unknown set {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    if not names:
        return _error("name at least one set, or pass --all/--train/--eval/--paper (--list shows them)")
    if (args.output or args.input) and len(names) != 1:
        return _error("--output and --input take exactly one set; use --out-dir/--input-dir")
    if not args.output and not args.out_dir:
        return _error("pass --out-dir (or --output for one set)")
    for name in names:
        source = SOURCES[name]
        path = args.output or os.path.join(args.out_dir, f"{name}.parquet")
        try:
            input_path = args.input or (_local_input(args.input_dir, name) if args.input_dir else None)
            rows = load_rows(source, input_path, split=args.split)
            origin = input_path or source.origin
            out, dropped = convert(
                source,
                rows,
                split=source.role,
                problem_key=args.problem_key,
                answer_key=args.answer_key,
                instruction=args.instruction,
                limit=args.limit,
                origin=origin,
            )
            if not out:
                return _error(f"{name}: no row of {origin} has both a problem and an answer")
            write_parquet(out, path)
        except (OSError, ValueError) as err:
            message = _one_line(err)
            return _error(message if message.startswith(f"{name}:") else f"{name}: {message}")
        note = (
            f" ({dropped} row{'' if dropped == 1 else 's'} without a problem or an answer dropped)" if dropped else ""
        )
        print(f"{name}: {len(out)} rows from {origin} -> {path}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
