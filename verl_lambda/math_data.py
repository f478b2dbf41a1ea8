"""Public math sets → verl's RL parquet format.

Every output row has verl's fields::

    data_source   short name of the set ("gsm8k", "math", "aime24", ...): validation metrics are
                  reported per data_source (val-core/<data_source>/...)
    prompt        [{"role": "user", "content": <problem> + instruction to box the final answer}]
    ability       "math"
    reward_model  {"style": "rule", "ground_truth": <final answer>}
    extra_info    {"split", "index", "question", "source_id"}

Training sets: gsm8k, math (MATH, 7.5k), deepscaler (DeepScaleR-Preview, 40k), numina
(NuminaMath-CoT, boxed answers only). Evaluation sets: aime24, math500, olympiadbench,
minerva_math, amc23.

Usage::

    python -m verl_lambda.math_data --all --out-dir ~/data/grpo_lambda        # from the hub
    python -m verl_lambda.math_data aime24 --input ./aime24.jsonl --output ./aime24.parquet
    python -m verl_lambda.math_data --all --input-dir ./raw --out-dir ./data  # <name>.{parquet,jsonl,json,csv}

Local files may be parquet, JSON lines, JSON or CSV with the columns of the hub copy (see
``SOURCES``; ``--problem-key`` / ``--answer-key`` name others).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from verl_lambda.math_reward import last_boxed

__all__ = ["Source", "SOURCES", "TRAIN_SETS", "EVAL_SETS", "INSTRUCTION", "load_rows", "convert", "write_parquet", "main"]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def _gsm8k_answer(text: str) -> Optional[str]:
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


@dataclass(frozen=True)
class Source:
    """Where a set lives on the hub and which columns hold the problem and the answer.

    The answer is the first non-empty of ``answer_keys`` (passed through ``answer_fn`` if given),
    else the last ``\\boxed{}`` of the first non-empty of ``solution_keys``.
    """

    name: str
    role: str  # "train" or "test"
    hub_id: str
    hub_config: Optional[str]
    hub_split: str
    problem_keys: tuple[str, ...]
    answer_keys: tuple[str, ...] = ()
    solution_keys: tuple[str, ...] = ()
    answer_fn: Optional[Callable[[str], Optional[str]]] = None
    id_keys: tuple[str, ...] = ("unique_id", "id", "ID", "url")


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source("gsm8k", "train", "openai/gsm8k", "main", "train", ("question",), ("answer",), answer_fn=_gsm8k_answer),
        Source("math", "train", "DigitalLearningGmbH/MATH-lighteval", None, "train", ("problem",), solution_keys=("solution",)),
        Source(
            "deepscaler", "train", "agentica-org/DeepScaleR-Preview-Dataset", None, "train",
            ("problem",), ("answer",), ("solution",),
        ),
        Source("numina", "train", "AI-MO/NuminaMath-CoT", None, "train", ("problem",), solution_keys=("solution",)),
        Source("aime24", "test", "HuggingFaceH4/aime_2024", None, "train", ("problem", "Problem"), ("answer", "Answer")),
        Source("math500", "test", "HuggingFaceH4/MATH-500", None, "test", ("problem",), ("answer",), ("solution",)),
        Source(
            "olympiadbench", "test", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train",
            ("question", "problem"), ("final_answer", "answer"),
        ),
        Source("minerva_math", "test", "math-ai/minervamath", None, "test", ("question", "problem"), ("answer",), ("solution",)),
        Source("amc23", "test", "math-ai/amc23", None, "test", ("question", "problem"), ("answer",)),
    ]
}
TRAIN_SETS = tuple(n for n, s in SOURCES.items() if s.role == "train" and n != "numina")
EVAL_SETS = tuple(n for n, s in SOURCES.items() if s.role == "test")
_LOCAL_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


def load_rows(source: Source, input_path: Optional[str] = None, split: Optional[str] = None) -> list[dict[str, Any]]:
    """Rows of a set as dicts: from ``input_path`` (local file) or from the Hugging Face hub."""
    if input_path is None:
        import datasets

        ds = datasets.load_dataset(source.hub_id, source.hub_config, split=split or source.hub_split)
        return [dict(r) for r in ds]
    import pandas as pd

    path = os.path.expanduser(input_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{source.name}: input file {input_path} does not exist")
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif path.endswith(".jsonl"):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
        frame = pd.DataFrame(data["data"] if isinstance(data, dict) and "data" in data else data)
    elif path.endswith(".csv"):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    else:
        raise ValueError(f"{source.name}: cannot read {input_path}: use one of {', '.join(_LOCAL_EXTENSIONS)}")
    return frame.to_dict(orient="records")


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
    rows: list[dict[str, Any]],
    split: str,
    problem_key: Optional[str] = None,
    answer_key: Optional[str] = None,
    instruction: str = INSTRUCTION,
    limit: Optional[int] = None,
) -> tuple[list[dict[str, Any]], int]:
    """verl rows for ``rows`` of ``source``; returns (rows, number of rows dropped for lack of an answer)."""
    problem_keys = (problem_key,) if problem_key else source.problem_keys
    answer_keys = (answer_key,) if answer_key else source.answer_keys
    solution_keys = () if answer_key else source.solution_keys
    if rows:
        columns = set().union(*(r.keys() for r in rows[:100]))
        if not columns & set(problem_keys):
            raise ValueError(
                f"{source.name}: no problem column {list(problem_keys)} in the input (columns: {sorted(columns)}); "
                "name it with --problem-key"
            )
        if not columns & set(answer_keys + solution_keys):
            raise ValueError(
                f"{source.name}: no answer column {list(answer_keys + solution_keys)} in the input "
                f"(columns: {sorted(columns)}); name it with --answer-key"
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


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    import pandas as pd

    path = os.path.expanduser(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def _local_input(input_dir: str, name: str) -> str:
    for ext in _LOCAL_EXTENSIONS:
        path = os.path.join(os.path.expanduser(input_dir), name + ext)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{name}: no {name}{{{','.join(_LOCAL_EXTENSIONS)}}} in --input-dir {input_dir}"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m verl_lambda.math_data",
        description="Convert public math sets to verl's RL parquet format (prompt as chat list, "
        "data_source, reward_model.ground_truth, extra_info).",
    )
    p.add_argument("datasets", nargs="*", help=f"sets to convert: {', '.join(SOURCES)}")
    p.add_argument("--all", action="store_true", help=f"every training ({', '.join(TRAIN_SETS)}) and evaluation set")
    p.add_argument("--train", action="store_true", help="the training sets")
    p.add_argument("--eval", action="store_true", help="the evaluation sets")
    p.add_argument("--out-dir", default=None, help="write <out-dir>/<name>.parquet")
    p.add_argument("--output", default=None, help="output file (one set only)")
    p.add_argument("--input", default=None, help="local file to convert instead of the hub copy (one set only)")
    p.add_argument("--input-dir", default=None, help="read <input-dir>/<name>.{parquet,jsonl,json,csv} instead of the hub")
    p.add_argument("--split", default=None, help="hub split to read (default: the set's usual split)")
    p.add_argument("--problem-key", default=None, help="column with the problem text")
    p.add_argument("--answer-key", default=None, help="column with the final answer")
    p.add_argument("--instruction", default=INSTRUCTION, help="text appended to every problem")
    p.add_argument("--limit", type=int, default=None, help="keep at most this many rows per set")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    names = list(args.datasets)
    if args.all or args.train:
        names += [n for n in TRAIN_SETS if n not in names]
    if args.all or args.eval:
        names += [n for n in EVAL_SETS if n not in names]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        print(f"math_data: error: unknown set {unknown[0]!r}; choose from {', '.join(SOURCES)}", file=sys.stderr)
        return 2
    if not names:
        print("math_data: error: name at least one set, or pass --all/--train/--eval", file=sys.stderr)
        return 2
    if (args.output or args.input) and len(names) != 1:
        print("math_data: error: --output and --input take exactly one set; use --out-dir/--input-dir", file=sys.stderr)
        return 2
    if not args.output and not args.out_dir:
        print("math_data: error: pass --out-dir (or --output for one set)", file=sys.stderr)
        return 2
    for name in names:
        source = SOURCES[name]
        try:
            input_path = args.input or (_local_input(args.input_dir, name) if args.input_dir else None)
            rows = load_rows(source, input_path, split=args.split)
            out, dropped = convert(
                source,
                rows,
                split=source.role,
                problem_key=args.problem_key,
                answer_key=args.answer_key,
                instruction=args.instruction,
                limit=args.limit,
            )
        except (OSError, ValueError) as err:
            print(f"math_data: error: {err}", file=sys.stderr)
            return 1
        if not out:
            print(f"math_data: error: {name}: no row has both a problem and an answer", file=sys.stderr)
            return 1
        path = args.output or os.path.join(args.out_dir, f"{name}.parquet")
        write_parquet(out, path)
        origin = input_path or f"{source.hub_id}" + (f"/{source.hub_config}" if source.hub_config else "")
        note = f" ({dropped} row{'' if dropped == 1 else 's'} without an answer dropped)" if dropped else ""
        print(f"{name}: {len(out)} rows from {origin} -> {path}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
