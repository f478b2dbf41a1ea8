"""``verl-lambda demo``: GRPO against GRPO-λ on a tiny model and a verifiable task, on a CPU.

A tiny transformers model learns two-digit addition with a check (a supervised warm-up, then RL);
every method of a seed starts from the same warmed-up weights and updates through verl's own
advantage and policy-loss code. The default compares GRPO, the clamp-only ablation (GRPO-λ with
λ = 0: only its negative-advantage clamp) and GRPO-λ with the recent and both traces.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from verl_lambda.cli import LaunchError, cpu_model
from verl_lambda.core.settings import GRPOLambdaSettings, Number, OneOf, setting_fields
from verl_lambda.demo.methods import DEFAULT_METHODS, METHODS
from verl_lambda.demo.options import (
    ARCHITECTURES,
    HEAD_SIZE,
    MAX_EVAL_SIZE,
    TASKS,
    ModelSize,
    RLSettings,
    SFTSettings,
    default_cache_dir,
)

__all__ = ["add_arguments", "check", "run", "setting_flag", "DEFAULT_METHODS", "DEFAULT_TASK"]

DEFAULT_TASK = "answer_last"
DEFAULT_SEEDS = 2
#: the measured length of the default run on a 2-core CPU (docs/demo.md, "Results")
DEFAULT_RUN_TIME = (
    "about 5.5 minutes on a 2-core CPU, warm-up included (5 min 37 s measured on a quiet one, load 1.0; "
    "8.5 minutes on one shared with other jobs, load 3.4)"
)
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def setting_flag(name: str) -> str:
    """The demo flag of a GRPO-λ setting: ``trace_norm`` -> ``--trace-norm``."""
    return "--" + name.replace("_", "-")


def method_list(text: str) -> list[str]:
    """Comma-separated method names, each checked against :data:`METHODS`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return names


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _describe_fixed(method) -> str:
    if not method.is_grpo_lambda:
        return "no GRPO-λ setting applies"
    fixed = GRPOLambdaSettings.from_values(method.fixed_settings).to_strings()
    return (
        "fixes " + ", ".join(f"{name}={fixed[name]}" for name in method.fixed_settings)
        if method.fixed
        else "fixes nothing"
    )


def _epilog() -> str:
    import textwrap

    width = max(len(name) for name in METHODS)
    lines = ["methods (a GRPO-λ method fixes the settings in brackets; the flags set every other one):"]
    for name, method in METHODS.items():
        text = f"{method.description} [{_describe_fixed(method)}]"
        wrapped = textwrap.wrap(text, 96 - width)
        lines.append(f"  {name:<{width}}  {wrapped[0]}")
        lines.extend(f"  {'':<{width}}  {line}" for line in wrapped[1:])
    lines += [
        "",
        "writes: OUT/metrics.json (the command, every setting, one record per method, seed and step, the",
        "summary) and OUT/curves.png (train reward and held-out accuracy per method, with the accuracy",
        "threshold of 'steps to X'); prints the summary table and its verdict lines.",
        "",
        *textwrap.wrap(f"time: the default run takes {DEFAULT_RUN_TIME}; it grows with seeds × methods × steps.", 100),
    ]
    return _escape("\n".join(lines))


def add_setting_flags(group) -> None:
    """One flag per field of :class:`GRPOLambdaSettings`: name, choices, default and help come from it.

    The flags default to None ("not given"); :func:`check` reads the given strings with the settings'
    own parsers and checks (:meth:`GRPOLambdaSettings.from_strings`)."""
    for f in setting_fields():
        allowed = f.metadata["allowed"]
        default = allowed.render(f.default)
        if isinstance(allowed, OneOf):
            kwargs: dict[str, Any] = dict(choices=allowed.values, help=f"{f.metadata['help']} (default {default})")
        elif isinstance(allowed, Number):
            metavar = "X|none" if allowed.optional else "X"
            kwargs = dict(metavar=metavar, help=f"{f.metadata['help']}; {allowed.describe('none')} (default {default})")
        else:  # a new kind of allowed value: its strings are checked by from_strings
            kwargs = dict(help=f"{f.metadata['help']} (default {default})")
        kwargs["help"] = _escape(kwargs["help"])
        group.add_argument(setting_flag(f.name), dest=f.name, default=None, **kwargs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (and its description, usage and epilog) on ``parser``."""
    rl_defaults, sft_defaults, size = RLSettings(), SFTSettings(), ModelSize()
    parser.description = __doc__.split("\n", 1)[1].strip()
    parser.epilog = _epilog()
    parser.usage = "%(prog)s [OPTION ...]  (all options: %(prog)s --help)"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    run = parser.add_argument_group("run")
    run.add_argument(
        "--task",
        default=DEFAULT_TASK,
        choices=list(TASKS),
        help="; ".join(f"{t.name}: {t.description} (decisive tokens {t.decisive})" for t in TASKS.values())
        + f" (default {DEFAULT_TASK})",
    )
    run.add_argument(
        "--methods",
        nargs="+",
        type=method_list,
        default=[list(DEFAULT_METHODS)],
        metavar="METHOD",
        help=f"methods to compare, space- or comma-separated; valid: {', '.join(METHODS)} (listed below) "
        f"(default: {' '.join(DEFAULT_METHODS)})",
    )
    run.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        default=DEFAULT_SEEDS,
        help=f"number of seeds, 0..N-1 (default {DEFAULT_SEEDS})",
    )
    run.add_argument(
        "--steps",
        type=int,
        metavar="N",
        default=rl_defaults.steps,
        help=f"RL steps per run (default {rl_defaults.steps})",
    )
    run.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    run.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default cpu)")
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        default=1,
        help="torch CPU threads; 1 is fastest for this tiny model (default 1)",
    )

    rl = parser.add_argument_group("RL (the same for every method)")
    d = rl_defaults
    rl.add_argument(
        "--prompts-per-step",
        type=int,
        metavar="N",
        default=d.prompts_per_step,
        help=f"prompts per RL step (default {d.prompts_per_step})",
    )
    rl.add_argument(
        "--group-size",
        type=int,
        metavar="N",
        default=d.group_size,
        help=f"sampled responses per prompt, G ≥ 2 (default {d.group_size})",
    )
    rl.add_argument(
        "--mini-batches",
        type=int,
        metavar="N",
        default=d.mini_batches,
        help=f"PPO mini-batch updates per step (default {d.mini_batches})",
    )
    rl.add_argument(
        "--lr",
        type=float,
        metavar="LR",
        default=d.lr,
        help=f"AdamW learning rate, the same for every method (default {d.lr:g})",
    )
    rl.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        default=d.eval_every,
        help=f"steps between greedy evaluations (default {d.eval_every})",
    )
    rl.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="accuracy for 'steps to threshold' (default: start accuracy + 0.10)",
    )

    add_setting_flags(
        parser.add_argument_group("GRPO-λ settings (GRPOLambdaSettings; a method may fix some, see below)")
    )

    warmup = parser.add_argument_group("model and warm-up")
    warmup.add_argument("--arch", choices=ARCHITECTURES, default="qwen2", help="model architecture (default qwen2)")
    warmup.add_argument(
        "--hidden-size",
        type=int,
        metavar="N",
        default=size.hidden_size,
        help=f"model width, a multiple of the head size {HEAD_SIZE} (default {size.hidden_size})",
    )
    warmup.add_argument(
        "--num-layers",
        type=int,
        metavar="N",
        default=size.num_layers,
        help=f"transformer layers (default {size.num_layers})",
    )
    warmup.add_argument(
        "--sft-target",
        type=float,
        default=sft_defaults.target_accuracy,
        help=f"stop the warm-up at this greedy accuracy (default {sft_defaults.target_accuracy})",
    )
    warmup.add_argument(
        "--sft-max-steps",
        type=int,
        metavar="N",
        default=sft_defaults.max_steps,
        help=f"warm-up step limit (default {sft_defaults.max_steps})",
    )
    warmup.add_argument(
        "--eval-size",
        type=int,
        metavar="N",
        default=512,
        help=f"held-out problems, at most {MAX_EVAL_SIZE} (default 512)",
    )
    warmup.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="warm-up checkpoint cache (default $XDG_CACHE_HOME/verl-lambda/demo or ~/.cache/verl-lambda/demo)",
    )


def setting_notes(methods: list[str], given: dict[str, str], flags: GRPOLambdaSettings) -> list[str]:
    """Notes on GRPO-λ flags that some selected methods do not take (they fix that setting).

    Raises ValueError (one line) for a flag that changes none of the selected methods."""
    traced = [METHODS[name] for name in methods if METHODS[name].is_grpo_lambda]
    value_of = flags.to_strings()
    notes = []
    for name, text in given.items():
        flag, value = setting_flag(name), value_of[name]
        if not traced:
            raise ValueError(f"{flag} {text} changes nothing: --methods has no GRPO-λ method (e.g. grpo_lambda)")
        takers = [m for m in traced if name not in m.fixed_settings]
        others = [m for m in traced if name in m.fixed_settings and m.settings(flags).to_strings()[name] != value]
        fixed = "; ".join(f"{m.name} fixes {name}={m.settings(flags).to_strings()[name]}" for m in others)
        if not takers and others:
            raise ValueError(
                f"{flag} {text} changes none of the selected methods ({fixed}); add grpo_lambda to --methods"
            )
        if others:
            notes.append(f"note: {flag} {text} does not apply to {', '.join(m.name for m in others)} ({fixed})")
    return notes


def _check_writable(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {folder}: cannot write there ({err.strerror or err})") from None


def _check(args: argparse.Namespace) -> None:
    """Every check of :func:`check`; raises ValueError with the one-line message."""
    counts = ("seeds", "steps", "threads", "prompts_per_step", "mini_batches", "eval_every", "eval_size")
    for name in (*counts, "sft_max_steps", "num_layers", "hidden_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.group_size < 2:
        raise ValueError(
            f"--group-size must be at least 2 (GRPO compares responses within a group), got {args.group_size}"
        )
    if args.eval_size > MAX_EVAL_SIZE:
        raise ValueError(
            f"--eval-size must be at most {MAX_EVAL_SIZE} (the rest of the problems train), got {args.eval_size}"
        )
    if args.hidden_size % HEAD_SIZE:
        raise ValueError(f"--hidden-size must be a multiple of the head size {HEAD_SIZE}, got {args.hidden_size}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 < args.sft_target <= 1:
        raise ValueError(f"--sft-target must be in (0, 1], got {args.sft_target}")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.prompts_per_step % args.mini_batches:
        raise ValueError(
            f"--prompts-per-step ({args.prompts_per_step}) must be a multiple of --mini-batches ({args.mini_batches})"
        )
    args.methods = list(dict.fromkeys(name for group in args.methods for name in group))
    if not args.methods:
        raise ValueError(f"--methods is empty; valid: {', '.join(METHODS)}")

    names = [f.name for f in setting_fields()]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    flags = GRPOLambdaSettings.from_strings(given, {name: setting_flag(name) for name in names})
    args.setting_notes = setting_notes(args.methods, given, flags)
    args.grpo_lambda = flags
    for name in names:
        setattr(args, name, flags.values()[name])

    if not _DEVICE.fullmatch(args.device):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    _check_writable(args.out, "--out")
    if args.cache_dir is None:
        args.cache_dir = default_cache_dir()
    _check_writable(args.cache_dir, "--cache-dir")
    if args.device != "cpu":  # the only check that imports torch
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available in this torch build or machine")
        index = int(args.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check every argument before any work: a bad one is a :class:`~verl_lambda.cli.LaunchError`
    (one line, exit status 2).

    Resolves ``args.methods`` (a flat list), ``args.grpo_lambda`` (the settings the flags give),
    the settings' attributes (parsed values), ``args.setting_notes`` and ``args.cache_dir``."""
    try:
        _check(args)
    except ValueError as err:
        raise LaunchError(str(err)) from None


def set_up_torch(device_name: str, threads: int):
    """Threads, determinism and the device.

    ``torch.use_deterministic_algorithms(True, warn_only=True)``: an operation without a
    deterministic implementation warns instead of failing (none does in this demo on a CPU)."""
    import torch

    if device_name.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(device_name)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _settings_line(settings: GRPOLambdaSettings | None) -> str:
    if settings is None:
        return "verl's grpo estimator and vanilla loss"
    defaults, values = GRPOLambdaSettings().to_strings(), settings.to_strings()
    changed = [f"{name}={value}" for name, value in values.items() if value != defaults[name]]
    return "GRPO-λ, " + (", ".join(changed) if changed else "every setting at its default")


#: written into the output folder when a run starts and removed when it has written its outputs, so
#: outputs of an earlier run are never mistaken for this one's after a Ctrl-C, a kill or a crash
UNFINISHED = "UNFINISHED.txt"


def run(args: argparse.Namespace) -> dict:
    """Warm up, train every method × seed, write the outputs and print the summary. Returns the summary."""
    from datetime import datetime, timezone

    marker = args.out / UNFINISHED
    marker.write_text(
        f"A verl-lambda demo run started here at {datetime.now(timezone.utc).isoformat(timespec='seconds')} and has "
        "not finished (it is running, or it was interrupted): metrics.json and curves.png in this folder, if any, "
        "are from an earlier run.\n",
        encoding="utf-8",
    )
    summary = _run(args)
    marker.unlink(missing_ok=True)
    return summary


def _run(args: argparse.Namespace) -> dict:
    import platform
    import shlex
    import time
    from dataclasses import asdict
    from datetime import datetime, timezone

    load_at_start = _load_average()
    started = time.time()
    device = set_up_torch(args.device, args.threads)
    import torch
    import transformers

    from verl_lambda.demo import report
    from verl_lambda.demo.model import build_model, count_parameters, model_config
    from verl_lambda.demo.rl import import_verl, train
    from verl_lambda.demo.sft import load_or_warm_up
    from verl_lambda.demo.tasks import TaskData
    from verl_lambda.demo.tokenizer import CharTokenizer

    transformers.logging.set_verbosity_error()
    import_verl()  # fail early, before any training, if verl's trainer module cannot be imported
    import verl

    flags = getattr(args, "grpo_lambda", None) or GRPOLambdaSettings()
    method_settings = {name: METHODS[name].settings(flags) for name in args.methods}
    task = TASKS[args.task]
    tokenizer = CharTokenizer()
    data = TaskData(task, tokenizer, eval_size=args.eval_size)
    size = ModelSize(hidden_size=args.hidden_size, num_layers=args.num_layers)
    config_kwargs = model_config(args.arch, tokenizer.vocab_size, size, tokenizer)
    parameters = count_parameters(build_model(args.arch, config_kwargs))
    sft_settings = SFTSettings(target_accuracy=args.sft_target, max_steps=args.sft_max_steps)
    rl_settings = RLSettings(
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        mini_batches=args.mini_batches,
        lr=args.lr,
        eval_every=args.eval_every,
    )
    cache_dir = args.cache_dir or default_cache_dir()
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)

    width = max(len(METHODS[name].label) for name in args.methods)
    print(
        f"task {task.name} ({task.description}; decisive tokens {task.decisive}); "
        f"{len(data.train_problems)} train / {len(data.eval_problems)} held-out problems\n"
        f"model {args.arch}, {parameters / 1e6:.2f}M parameters; seeds {seeds}; "
        f"{args.steps} RL steps of {args.prompts_per_step}×{args.group_size} responses; device {device}\n"
        + "\n".join(f"  {METHODS[n].label:<{width}}  {_settings_line(method_settings[n])}" for n in args.methods),
        flush=True,
    )
    for note in getattr(args, "setting_notes", []):
        print(note, flush=True)
    records, sft_info = [], {}
    for seed in seeds:
        start_weights, info = load_or_warm_up(args.arch, config_kwargs, data, sft_settings, seed, cache_dir, device)
        sft_info[seed] = info
        origin = "cached" if info["cached"] else "trained"
        note = "" if info["reached_target"] else f" (target {args.sft_target} not reached)"
        print(
            f"seed {seed}: warm-up {origin}, {info['steps']} steps, probe accuracy {info['probe_accuracy']:.2f}{note}",
            flush=True,
        )
        for name in args.methods:
            records.extend(
                train(
                    METHODS[name],
                    seed,
                    args.arch,
                    config_kwargs,
                    start_weights,
                    data,
                    rl_settings,
                    device,
                    method_settings[name],
                )
            )

    completed = [report.complete_record(r) for r in records]
    summary = report.summarise(completed, args.methods, args.threshold)
    elapsed = time.time() - started
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "verl": getattr(verl, "__version__", None),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_start": load_at_start,
        "load_average_end": _load_average(),
        "device": str(device),
        "threads": args.threads,
        "seconds": round(elapsed, 1),
    }
    run_info = {
        "command": shlex.join(["verl-lambda", *getattr(args, "argv", ["demo"])]),
        "arguments": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key not in ("handler", "check", "argv", "grpo_lambda", "setting_notes", *flags.values())
        },
        "grpo_lambda": {
            "flags": flags.values(),
            "methods": {name: None if s is None else s.values() for name, s in method_settings.items()},
            "notes": getattr(args, "setting_notes", []),
        },
        "task": {"name": task.name, "decisive": task.decisive, "description": task.description},
        "model": {"arch": args.arch, "parameters": parameters, "config": config_kwargs},
        "sft": {"settings": asdict(sft_settings), "cache_dir": str(cache_dir), "per_seed": sft_info},
        "rl": asdict(rl_settings),
        "environment": environment,
    }
    report.write_metrics(args.out / "metrics.json", run_info, records, summary)
    title = (
        f"verl-lambda demo, task {task.name} (decisive tokens {task.decisive}): {len(seeds)} seed(s) x {args.steps} RL "
        f"steps of {args.prompts_per_step}x{args.group_size} responses, lr {args.lr:g}\n"
        "line: mean over seeds; band: min-max over seeds; dotted: the accuracy threshold of 'steps to'"
    )
    report.plot_curves(args.out / "curves.png", completed, args.methods, title, summary["threshold"])
    print()
    print(report.summary_table(summary, report.machine_line(environment)))
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'curves.png'} in {elapsed / 60:.1f} min", flush=True)
    return summary
