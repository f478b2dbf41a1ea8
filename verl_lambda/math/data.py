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

Local files may be parquet, JSON lines, JSON or CSV (UTF-8, with or without a byte order mark)
with the columns of the hub copy (see ``SOURCES``; ``--problem-key`` / ``--answer-key`` name
others). Every row must be a record (an object with named fields). A problem or answer cell must
be text, or something with one meaning as text: UTF-8 bytes are decoded, integers and finite
decimals written out (a whole-number float as an integer, which it must hold exactly: below 2**53),
a list joined with ", "; each such conversion is counted in the summary line. A row with any other
value there (true/false, an object, infinity, a list with an empty item, bytes that are not UTF-8)
is refused, naming the set, the row and the column: it would become a ground truth no answer can
match. Any error (a usage error, an unreadable input, a refused row, an unwritable output) exits
with status 2 and one line on stderr; Ctrl-C with one line and status 130. An output file is
written beside its final name and renamed into place, so a failed or interrupted run leaves the
previous file as it was.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from verl_lambda.cli import ArgumentParser, LaunchError, command_main
from verl_lambda.math._files import replace_file
from verl_lambda.math.reward import last_boxed

__all__ = [
    "Source",
    "SOURCES",
    "TRAIN_SETS",
    "EVAL_SETS",
    "PAPER_SETS",
    "INSTRUCTION",
    "Records",
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


class Records(list):
    """The records of a file, and for JSON lines the line each came from (``lines``; else None)."""

    lines: list[int] | None = None

    def where(self, i: int) -> str:
        """Where record ``i`` (from 0) is in its file: ``line N`` or ``row N`` (from 1)."""
        if self.lines is not None and i < len(self.lines):
            return f"line {self.lines[i]}"
        return f"row {i + 1}"


def _read_local(path: str) -> Records:
    """The records of a local parquet / JSON lines / JSON / CSV file (dicts, or lists for pair layouts)."""
    import pandas as pd

    if path.endswith(".parquet"):
        return Records(pd.read_parquet(path).to_dict(orient="records"))
    if path.endswith(".csv"):
        return Records(pd.read_csv(path, dtype=str, keep_default_na=False).to_dict(orient="records"))
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte order mark (Windows exports) is skipped
        if path.endswith(".jsonl"):
            records, numbers = Records(), []
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ValueError(f"line {number}: {err.msg} (column {err.colno})") from err
                    numbers.append(number)
            records.lines = numbers
            return records
        data = json.load(f)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of records (or {{'data': [...]}}), got a JSON {type(data).__name__}")
    return Records(data)


def load_rows(source: Source, input_path: str | None = None, split: str | None = None) -> list[Any]:
    """Raw records of a set: from ``input_path`` (local file) or from the Hugging Face hub.

    Raises FileNotFoundError for a missing file and ValueError, naming the set and the file, for
    one that cannot be read.
    """
    if input_path is None and source.hub_file is None:
        import datasets

        ds = datasets.load_dataset(source.hub_id, source.hub_config, split=split or source.hub_split)
        return Records(dict(r) for r in ds)
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


# Whole-number floats are written as integers only where a float holds every integer exactly.
_EXACT_FLOAT_INTEGERS = 2**53


class _OddCell(ValueError):
    """A cell with no single meaning as answer or problem text; the message says what it holds."""


def _kind(value: Any) -> str:
    """A value's type in words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _cell_text(value: Any, conversions: Counter | None = None) -> str:
    """A problem or answer cell as text ("" when missing: None, NaN, blank).

    Text is stripped (and an enclosing ``$...$`` removed); UTF-8 bytes are decoded and numbers
    written out, each counted in ``conversions``; a list is its items' texts joined with ", ".
    Raises :class:`_OddCell` for anything else (see the module docstring).
    """
    if value is None:
        return ""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        texts = [_cell_text(v, conversions) for v in value]
        if any(texts) and not all(texts):  # one part of a multi-part answer is missing
            raise _OddCell(f"{_short_repr(value)} (a list with an empty item)")
        return ", ".join(texts)
    if isinstance(value, bool):
        raise _OddCell(f"{value!r} (true/false, not an answer)")
    if isinstance(value, float):
        if value != value:  # NaN: pandas' missing value
            return ""
        if math.isinf(value):
            raise _OddCell(f"{value!r} (an infinite number)")
        if value.is_integer() and abs(value) >= _EXACT_FLOAT_INTEGERS:
            raise _OddCell(f"{value!r} (a whole number too large to be exact as a float: store it as text)")
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, (int, Decimal)):
        if isinstance(value, Decimal) and not value.is_finite():
            raise _OddCell(f"{value!r} (not a finite number)")
        text = str(value)
    elif isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _OddCell(f"{_short_repr(value)} (bytes that are not UTF-8 text)") from None
        if conversions is not None:
            conversions["bytes decoded as UTF-8"] += 1
        return _strip_dollars(text.strip())
    elif isinstance(value, str):
        return _strip_dollars(value.strip())
    else:
        what = "an object" if isinstance(value, dict) else f"a {_kind(value)}"
        raise _OddCell(f"{_short_repr(value)} ({what}, not text)")
    if conversions is not None:
        conversions["numbers written as text"] += 1
    return text


def _short_repr(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _strip_dollars(text: str) -> str:
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text


def _text(value: Any) -> str:
    """A cell as text for the record's id: like :func:`_cell_text`, anything else as ``str()``."""
    try:
        return _cell_text(value)
    except _OddCell:
        return str(value)


def _first(row: dict[str, Any], keys: Sequence[str], conversions: Counter | None = None, role: str = "answer") -> str:
    """The text of the first of ``keys`` whose cell in ``row`` is not empty ("" if none).

    Raises :class:`_OddCell` naming the column, for a cell that cannot be read as text.
    """
    for key in keys:
        local: Counter = Counter()
        try:
            text = _cell_text(row.get(key), local)
        except _OddCell as err:
            raise _OddCell(f"the {role} column {key!r} holds {err}") from None
        if text:
            if conversions is not None:
                conversions.update({f"{what} ({role})": n for what, n in local.items()})
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
    conversions: Counter | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """verl rows for ``rows`` of ``source``.

    Returns (rows, number of rows dropped for lack of a problem or an answer); the cells converted
    to text (bytes, numbers) are counted in ``conversions`` when given. Raises ValueError when the
    rows lack the problem or answer columns, or when a row is not a record or holds a problem or
    answer that is not text (see the module docstring); ``origin`` names the rows' file in it.
    """
    where = rows.where if isinstance(rows, Records) else (lambda i: f"row {i + 1}")
    if source.row_fn is not None:
        rows = [source.row_fn(r) for r in rows]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(
                f"{source.name}: {where(i)} of {origin} is a {_kind(row)}, not a record (an object with named fields)"
            )
    problem_keys = (problem_key,) if problem_key else source.problem_keys
    answer_keys = (answer_key,) if answer_key else source.answer_keys
    solution_keys = () if answer_key else source.solution_keys
    if rows:
        columns = set().union(*(r.keys() for r in rows))
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
    counted: Counter = Counter()
    for i, row in enumerate(rows):
        try:
            problem = _first(row, problem_keys, counted, role="problem")
            answer = _first(row, answer_keys, counted)
            if answer and source.answer_fn is not None and not answer_key:
                answer = source.answer_fn(answer) or ""
            if not answer:
                solution = _first(row, solution_keys, counted, role="solution")
                answer = (last_boxed(solution) or "").strip() if solution else ""
        except _OddCell as err:
            raise ValueError(f"{source.name}: {where(i)} of {origin}: {err}; fix or remove the row") from None
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
                    "source_id": _first_id(row, source.id_keys),
                },
            }
        )
        if limit is not None and len(out) >= limit:
            break
    if conversions is not None:
        conversions.update(counted)
    return out, dropped


def _first_id(row: dict[str, Any], keys: Sequence[str]) -> str:
    for key in keys:
        text = _text(row.get(key))
        if text:
            return text
    return ""


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
    """Write verl rows to a parquet file: to a new file beside ``path``, renamed to ``path`` once complete.

    Raises ValueError (before writing anything) when a row has no ``reward_model.ground_truth``,
    and OSError naming ``path`` when the file cannot be written; then (as on Ctrl-C) a file that was
    at ``path`` is left as it was, and no temporary file is left behind.
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
    frame = pd.DataFrame(rows)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        if os.path.isdir(target):
            raise IsADirectoryError(21, "Is a directory")
        replace_file(target, lambda temporary: frame.to_parquet(temporary, index=False))
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
    p = ArgumentParser(
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


def _conversion_note(dropped: int, conversions: Counter) -> str:
    notes = [f"{dropped} row{'' if dropped == 1 else 's'} without a problem or an answer dropped"] if dropped else []
    notes += [f"{what}: {n}" for what, n in sorted(conversions.items())]
    return f" ({'; '.join(notes)})" if notes else ""


def _run(argv: Sequence[str] | None) -> int:
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
        raise LaunchError(f"unknown set {unknown[0]!r}; choose from {', '.join(SOURCES)}")
    if not names:
        raise LaunchError("name at least one set, or pass --all/--train/--eval/--paper (--list shows them)")
    if (args.output or args.input) and len(names) != 1:
        raise LaunchError("--output and --input take exactly one set; use --out-dir/--input-dir")
    if not args.output and not args.out_dir:
        raise LaunchError("pass --out-dir (or --output for one set)")
    for name in names:
        source = SOURCES[name]
        path = args.output or os.path.join(args.out_dir, f"{name}.parquet")
        conversions: Counter = Counter()
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
                conversions=conversions,
            )
            if not out:
                raise LaunchError(f"{name}: no row of {origin} has both a problem and an answer")
            write_parquet(out, path)
        except (OSError, ValueError) as err:
            message = _one_line(err)
            raise LaunchError(message if message.startswith(f"{name}:") else f"{name}: {message}") from err
        print(f"{name}: {len(out)} rows from {origin} -> {path}{_conversion_note(dropped, conversions)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0; 2 with one line on stderr; 130 on Ctrl-C)."""
    return command_main(PROG, lambda: _run(argv))


if __name__ == "__main__":
    sys.exit(main())
