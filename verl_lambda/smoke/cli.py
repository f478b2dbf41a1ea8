"""``verl-lambda smoke -- <your training command>``: one or two real verl training steps on this CPU.

Run it on a laptop before renting GPUs. It takes your own command line, for example

    verl-lambda smoke -- bash recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh
    verl-lambda smoke -- python -m verl_lambda.launch.main_ppo algorithm.adv_estimator=grpo_lambda ...

builds a tiny random model and a tiny dataset in a temp folder, appends the CPU-harness overrides
after your arguments (they win: model, data, tiny sizes, the transformers ``hf`` rollout, FSDP2,
SDPA, fake Ray GPUs on a new local Ray cluster, console logging, no checkpoints, no validation),
runs verl 0.9.1's real trainer for the given steps, and prints the GRPO-λ loss metrics of every
step and what the run did and did not exercise. The exit status is 0 when every step ran, 1 when
the run failed (the log's tail is printed), 2 when the command cannot be smoke-tested here. Every
Ray process of the run is ended, whatever happens.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from verl_lambda.smoke import UnsupportedVerl, require_supported_verl

# The harness modules are imported when a check or a run needs them: an unsupported verl then
# ends the command with one line (UnsupportedVerl), not an import traceback.

__all__ = ["add_arguments", "check", "run", "main", "SHOWN_METRICS", "check_command", "problem_with"]

PROG = "verl-lambda smoke"
#: Metrics printed per step (those the run logged), then any other ``actor/grpo_lambda/*`` metric.
SHOWN_METRICS = [
    "actor/pg_loss",
    "actor/ppo_kl",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
    "actor/grpo_lambda/trace_abs_mean",
    "actor/grpo_lambda/trace_abs_max",
    "actor/grpo_lambda/guard_frac",
    "actor/grpo_lambda/token_guard_frac",
    "actor/kl_loss",
    "actor/entropy",
    "actor/grad_norm",
    "critic/advantages/mean",
    "critic/advantages/min",
    "critic/advantages/max",
    "critic/score/mean",
    "timing_s/step",
]
_NOT_ON_CPU = ("megatron", "multinode", "multi_node")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The smoke command's options; the training command follows ``--``."""
    parser.add_argument("--steps", type=int, default=2, help="training steps, 1-5 (default 2)")
    parser.add_argument(
        "--gpus",
        type=int,
        default=1,
        help="fake GPUs = actor ranks; e.g. 2 for a command with ulysses_sequence_parallel_size=2 (default 1)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="wall-time limit of the run in seconds (default 900)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work folder (tiny model, data, log) after success"
    )
    parser.add_argument("--log-lines", type=int, default=60, help="log lines shown when the run fails (default 60)")
    parser.add_argument(
        "training_command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND",
        help="your training command, e.g. -- bash recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh [overrides]",
    )


def _strip_separator(command: Sequence[str]) -> list[str]:
    command = list(command)
    return command[1:] if command[:1] == ["--"] else command


def check_command(command: Sequence[str]) -> str | None:
    """Why ``command`` cannot be smoke-tested on the CPU harness, or None when it can."""
    if not command:
        return "no training command: put it after --, e.g. verl-lambda smoke -- bash recipes/run_<model>_grpo_lambda.sh"
    for word in command:
        low = word.lower()
        name = Path(low).name
        script = low.endswith(".sh") and any(mark in name for mark in _NOT_ON_CPU)
        engine = low.lstrip("+") == "model_engine=megatron" or "ppo_megatron_trainer" in low
        if script or engine or low in ("megatron", "megatron_multinode"):
            twin = Path(word).name.replace("_megatron_multinode", "").replace("_megatron", "")
            hint = f" (its FSDP twin: {twin})" if script and twin != Path(word).name else ""
            return f"'{word}': Megatron and multi-node runs cannot run on the CPU harness; smoke the FSDP recipe{hint}"
    if Path(command[0]).name in ("bash", "sh") and len(command) > 1 and command[1].endswith(".sh"):
        script = Path(command[1])
        if not script.is_file():
            return f"no such script: {script}"
        if '"$@"' not in script.read_text(errors="replace"):
            return f'{script} does not pass its arguments on ("$@"), so the harness overrides cannot reach verl'
    return None


def _format_value(value: float) -> str:
    return f"{value:.4g}" if value == value else "nan"


def _metrics_table(steps: dict[int, dict[str, float]]) -> list[str]:
    logged = set().union(*steps.values()) if steps else set()
    names = [n for n in SHOWN_METRICS if n in logged]
    names += sorted(n for n in logged if n.startswith("actor/grpo_lambda/") and n not in names)
    order = sorted(steps)
    width = max((len(n) for n in names), default=10)
    lines = ["  " + "metric".ljust(width) + "".join(f"{'step ' + str(s):>14}" for s in order)]
    for name in names:
        lines.append(
            "  " + name.ljust(width) + "".join(f"{_format_value(steps[s].get(name, float('nan'))):>14}" for s in order)
        )
    if not any(n.startswith("actor/grpo_lambda/") for n in logged):
        lines.append("  (no actor/grpo_lambda/* metric: this command did not use the GRPO-λ loss)")
    return lines


def _exercised(sizes) -> list[str]:
    return [
        "What this run exercised:",
        "  your command line as written (its launcher, Hydra config composition and checks, your estimator, loss,",
        "  KL, padding and batching switches) inside verl 0.9.1's real trainer: v1 TaskRunner, TransferQueue,",
        "  agent loop, reward loop, FSDP2 actor (and reference model) over gloo, advantage estimator, policy loss,",
        f"  optimizer steps and the weight sync to the rollout, for {sizes.steps} step(s).",
        "What it did NOT exercise:",
        "  - vLLM / SGLang rollout: a transformers 'hf' rollout generated instead;",
        "  - Megatron, multi-node Ray clusters, `ray job submit`;",
        "  - GPU kernels, NCCL, flash-attention, GPU memory and bf16 numerics at scale;",
        "  - your model, data and reward: a tiny random Llama, one-digit additions and a toy reward replaced them;",
        f"  - your sizes: {sizes.train_batch_size} prompts x {sizes.rollout_n} responses per step, "
        f"{sizes.train_batch_size // sizes.ppo_mini_batch_size} mini-batches, prompt {sizes.max_prompt_length} / "
        f"response {sizes.max_response_length} tokens, {sizes.ranks} fake GPU(s), lr {sizes.lr:g} replaced them.",
    ]


def _stop_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt, so the run's clean-up runs; returns the previous handler.

    Off the main thread (where handlers cannot be set) nothing changes and None is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def problem_with(args: argparse.Namespace) -> str | None:
    """Why ``args`` cannot run (one line), or None: verl version, the command, steps, GPUs, Ray address."""
    try:
        require_supported_verl(PROG)
        from verl_lambda.smoke.harness import HarnessError, refuse_foreign_ray
    except UnsupportedVerl as err:
        return str(err)
    command = _strip_separator(args.training_command)
    problem = check_command(command)
    if problem is None and not 1 <= args.steps <= 5:
        problem = f"--steps must be 1-5, got {args.steps}"
    if problem is None and args.gpus < 1:
        problem = f"--gpus must be at least 1, got {args.gpus}"
    if problem is None and args.timeout <= 0:
        problem = f"--timeout must be positive, got {args.timeout:g}"
    if problem is None:
        try:
            refuse_foreign_ray(argv=command)
        except HarnessError as err:
            problem = str(err)
    return problem


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """End the command with one line and exit status 2 when :func:`problem_with` finds a problem."""
    problem = problem_with(args)
    if problem is not None:
        parser.exit(2, f"{PROG}: error: {problem}\n")


def run(args: argparse.Namespace) -> int:
    """Run the smoke check described by ``args`` (see :func:`add_arguments`); returns the exit status."""
    problem = problem_with(args)
    if problem is not None:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    from verl_lambda.smoke.harness import (
        HarnessSizes,
        harness_env,
        harness_overrides,
        make_ray_temp_dir,
        merge_registration_args,
        parse_step_metrics,
        run_logged,
    )

    command = _strip_separator(args.training_command)
    sizes = HarnessSizes(steps=args.steps, ranks=args.gpus)
    work = Path(tempfile.mkdtemp(prefix="verl-lambda-smoke-"))
    keep = args.keep
    try:
        from verl_lambda.smoke.assets import build_assets

        print(f"[smoke] building a tiny random model and dataset in {work}", flush=True)
        assets = build_assets(work)
        ray_temp_dir = make_ray_temp_dir()
        overrides = harness_overrides(assets.model, assets.train_file, assets.val_file, ray_temp_dir, work, sizes)
        argv = merge_registration_args(command) + overrides
        log_path = work / "train.log"
        print(f"[smoke] running: {' '.join(command)}", flush=True)
        print(f"[smoke]   + {len(overrides)} CPU-harness overrides; log: {log_path}", flush=True)
        started = time.monotonic()

        def progress(line: str) -> None:
            if line.startswith("[verl_lambda.launch.main_ppo]"):
                print(f"[smoke]   {line}", flush=True)
            elif "Started a local Ray instance" in line:
                print(f"[smoke] Ray started ({time.monotonic() - started:.0f} s)", flush=True)
            elif " - " in line and "step:" in line:
                step = line.split("step:", 1)[1].split(" ", 1)[0]
                print(f"[smoke] step {step}/{sizes.steps} done ({time.monotonic() - started:.0f} s)", flush=True)

        previous = _stop_on_sigterm()
        try:
            result = run_logged(
                argv, harness_env(), log_path, args.timeout, ray_temp_dir=ray_temp_dir, on_line=progress
            )
        except KeyboardInterrupt:
            keep = True
            print(f"\n[smoke] interrupted; the run's processes were ended. Log: {log_path}", file=sys.stderr)
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        steps = parse_step_metrics(result.log_text())
        missing = [s for s in range(1, sizes.steps + 1) if s not in steps]
        if not result.ok or missing:
            keep = True
            if result.timed_out:
                how = f"did not finish within {args.timeout:.0f} s"
            elif not result.ok:
                how = f"exited with status {result.returncode} after {result.wall_s:.0f} s"
            else:
                how = f"exited 0 but logged no metrics for step(s) {missing}"
            print(f"[smoke] FAILED: the training command {how}. Last {args.log_lines} log lines:", file=sys.stderr)
            print(result.tail(args.log_lines), file=sys.stderr)
            print(f"[smoke] full log: {log_path} (work folder kept: {work})", file=sys.stderr)
            return 1
        print(f"[smoke] OK: {sizes.steps} training step(s) of verl's real trainer in {result.wall_s:.0f} s")
        print("[smoke] loss and advantage metrics per step (console logger):")
        for line in _metrics_table(steps):
            print(line)
        for line in _exercised(sizes):
            print(f"[smoke] {line}")
        if keep:
            print(f"[smoke] work folder kept: {work}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m verl_lambda.smoke [options] -- COMMAND``."""
    parser = argparse.ArgumentParser(
        prog="python -m verl_lambda.smoke",
        description="Run one or two real verl 0.9.1 training steps of your command on this CPU (tiny model and data).",
    )
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    check(parser, args)
    return run(args)
