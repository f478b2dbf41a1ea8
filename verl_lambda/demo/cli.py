"""``verl-lambda demo``: GRPO against GRPO-λ on a tiny model and a verifiable task, on a CPU."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from verl_lambda.demo.methods import METHODS
from verl_lambda.demo.model import ARCHITECTURES, ModelSize
from verl_lambda.demo.rl import RLSettings
from verl_lambda.demo.sft import SFTSettings
from verl_lambda.demo.tasks import TASKS

DEFAULT_METHODS = ["grpo", "grpo_lambda_recent", "grpo_lambda_both"]
DEFAULT_TASK = "answer_last"


def method_list(text: str) -> list[str]:
    """Comma-separated method names, each checked against :data:`METHODS`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return names


def optional_float(text: str):
    """A float, or None for 'none'."""
    return None if text.lower() == "none" else float(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    rl_defaults, sft_defaults, size = RLSettings(), SFTSettings(), ModelSize()
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
        default=[DEFAULT_METHODS],
        metavar="METHOD",
        help=f"methods to compare, space- or comma-separated; valid: {', '.join(METHODS)} (default: {' '.join(DEFAULT_METHODS)})",
    )
    run.add_argument("--seeds", type=int, default=2, help="number of seeds, 0..N-1 (default 2)")
    run.add_argument("--steps", type=int, default=rl_defaults.steps, help=f"RL steps per run (default {rl_defaults.steps})")
    run.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default ./demo_output)")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    run.add_argument("--threads", type=int, default=1, help="torch CPU threads; 1 is fastest for this tiny model (default 1)")

    rl = parser.add_argument_group("RL")
    d = rl_defaults
    rl.add_argument("--prompts-per-step", type=int, default=d.prompts_per_step, help=f"prompts per RL step (default {d.prompts_per_step})")
    rl.add_argument("--group-size", type=int, default=d.group_size, help=f"sampled responses per prompt, G (default {d.group_size})")
    rl.add_argument("--mini-batches", type=int, default=d.mini_batches, help=f"PPO mini-batch updates per step (default {d.mini_batches})")
    rl.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate, the same for every method (default {d.lr:g})")
    rl.add_argument("--eval-every", type=int, default=d.eval_every, help=f"steps between greedy evaluations (default {d.eval_every})")
    rl.add_argument("--lam", type=float, default=d.lam, help=f"GRPO-λ trace λ; 0 leaves only the advantage clamp (default {d.lam})")
    rl.add_argument(
        "--trace-norm",
        choices=["none", "sum"],
        default=d.trace_norm,
        help=f"GRPO-λ trace normalisation: none (the paper's form) or sum (GRPO's gradient scale) (default {d.trace_norm})",
    )
    rl.add_argument(
        "--adv-clamp",
        type=optional_float,
        default=d.adv_clamp,
        help=f"GRPO-λ negative-advantage clamp, a number ≤ 0 or 'none' (default {d.adv_clamp})",
    )
    rl.add_argument(
        "--threshold", type=float, default=None, help="accuracy for 'steps to threshold' (default: start accuracy + 0.10)"
    )

    warmup = parser.add_argument_group("model and warm-up")
    warmup.add_argument("--arch", choices=ARCHITECTURES, default="qwen2", help="model architecture (default qwen2)")
    warmup.add_argument("--hidden-size", type=int, default=size.hidden_size, help=f"model width (default {size.hidden_size})")
    warmup.add_argument("--num-layers", type=int, default=size.num_layers, help=f"transformer layers (default {size.num_layers})")
    warmup.add_argument(
        "--sft-target",
        type=float,
        default=sft_defaults.target_accuracy,
        help=f"stop the warm-up at this greedy accuracy (default {sft_defaults.target_accuracy})",
    )
    warmup.add_argument(
        "--sft-max-steps", type=int, default=sft_defaults.max_steps, help=f"warm-up step limit (default {sft_defaults.max_steps})"
    )
    warmup.add_argument("--eval-size", type=int, default=512, help="held-out problems (default 512)")
    warmup.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="warm-up checkpoint cache (default $XDG_CACHE_HOME/verl-lambda/demo or ~/.cache/verl-lambda/demo)",
    )


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = ("seeds", "steps", "threads", "prompts_per_step", "mini_batches", "eval_every", "eval_size", "sft_max_steps")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.group_size < 2:
        parser.error("--group-size must be at least 2 (GRPO compares responses within a group)")
    if args.adv_clamp is not None and args.adv_clamp > 0:
        parser.error("--adv-clamp must be ≤ 0 or 'none'")
    if args.prompts_per_step % args.mini_batches:
        parser.error("--prompts-per-step must be a multiple of --mini-batches")
    args.methods = list(dict.fromkeys(name for group in args.methods for name in group))
    if not args.methods:
        parser.error(f"--methods is empty; valid: {', '.join(METHODS)}")


def set_up_torch(device_name: str, threads: int):
    """Threads, determinism and the device; fails with one line when the device is missing."""
    import torch

    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device_name}: CUDA is not available in this torch build or machine")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(device_name)


def run(args: argparse.Namespace) -> dict:
    """Warm up, train every method × seed, write the outputs and print the summary. Returns the summary."""
    device = set_up_torch(args.device, args.threads)
    import torch
    import transformers

    from verl_lambda.demo import report
    from verl_lambda.demo.model import build_model, count_parameters, model_config
    from verl_lambda.demo.rl import import_verl, train
    from verl_lambda.demo.sft import default_cache_dir, load_or_warm_up
    from verl_lambda.demo.tasks import TaskData
    from verl_lambda.demo.tokenizer import CharTokenizer

    transformers.logging.set_verbosity_error()
    started = time.time()
    import_verl()  # fail early, before any training, if verl's trainer module cannot be imported
    import verl

    task = TASKS[args.task]
    tokenizer = CharTokenizer()
    data = TaskData(task, tokenizer, eval_size=args.eval_size)
    size = ModelSize(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=max(1, args.hidden_size // 32))
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
        lam=args.lam,
        trace_norm=args.trace_norm,
        adv_clamp=args.adv_clamp,
    )
    cache_dir = args.cache_dir or default_cache_dir()
    seeds = list(range(args.seeds))
    args.out.mkdir(parents=True, exist_ok=True)

    print(
        f"task {task.name} ({task.description}; decisive tokens {task.decisive}); "
        f"{len(data.train_problems)} train / {len(data.eval_problems)} held-out problems\n"
        f"model {args.arch}, {parameters / 1e6:.2f}M parameters; methods {', '.join(args.methods)}; "
        f"seeds {seeds}; {args.steps} RL steps of {args.prompts_per_step}×{args.group_size} responses; device {device}",
        flush=True,
    )
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
            records.extend(train(METHODS[name], seed, args.arch, config_kwargs, start_weights, data, rl_settings, device))

    summary = report.summarise([report.complete_record(r) for r in records], args.methods, args.threshold)
    elapsed = time.time() - started
    run_info = {
        "command": shlex.join(["verl-lambda", *getattr(args, "argv", ["demo"])]),
        "arguments": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key not in ("handler", "check", "argv")
        },
        "task": {"name": task.name, "decisive": task.decisive, "description": task.description},
        "model": {"arch": args.arch, "parameters": parameters, "config": config_kwargs},
        "sft": {"settings": asdict(sft_settings), "per_seed": sft_info},
        "rl": asdict(rl_settings),
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "verl": getattr(verl, "__version__", None),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": str(device),
            "threads": args.threads,
            "seconds": round(elapsed, 1),
        },
    }
    report.write_metrics(args.out / "metrics.json", run_info, records, summary)
    title = f"{task.name}: {task.description}; {len(seeds)} seed(s), line = mean, band = min–max"
    report.plot_curves(args.out / "curves.png", [report.complete_record(r) for r in records], args.methods, title)
    print()
    print(report.summary_table(summary))
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'curves.png'} in {elapsed / 60:.1f} min", flush=True)
    return summary
