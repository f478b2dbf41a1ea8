"""``verl-lambda smoke -- <your training command>``: one or two real verl training steps on this CPU.

Run it on a laptop before renting GPUs. It takes your own command line, for example

    verl-lambda smoke -- bash recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh
    verl-lambda smoke -- bash recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh
    verl-lambda smoke -- bash recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh
    verl-lambda smoke -- python -m verl_lambda.launch.main_ppo algorithm.adv_estimator=grpo_lambda ...

builds a tiny random model and a tiny dataset in a temp folder, appends the CPU-harness overrides
after your arguments (they win: model, data, tiny sizes, the transformers ``hf`` rollout, FSDP2 or
Megatron on gloo, fake Ray GPUs on a new local Ray cluster, this Python for Ray's workers, console
logging, no checkpoints, no validation), runs verl 0.9.1's real trainer for the given steps, and
prints the GRPO-λ loss metrics of every step, what it replaced (one line each) and what the run
did and did not exercise. The launcher's checks apply to every command line, plain
``verl.trainer.main_ppo`` included. A Megatron command keeps its tensor and pipeline parallel sizes
(4 fake GPUs by default: the recipes' TP 2 x PP 2). A multi-node recipe (``ray job submit``) runs
against a 2-node Ray cluster the harness starts on this machine (2 fake GPUs each) and always ends.
The exit status is 0 when every step ran, 1 when the run failed (the log's tail is printed), 2 when
the command cannot be smoke-tested here or the launcher refuses it. Every Ray process of the run is
ended, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from verl_lambda.cli import LaunchError
from verl_lambda.smoke import UnsupportedVerl, require_supported_verl

# The harness modules are imported when a check or a run needs them: an unsupported verl then
# ends the command with one line (UnsupportedVerl), not an import traceback.

__all__ = [
    "add_arguments",
    "check",
    "run",
    "main",
    "SHOWN_METRICS",
    "check_command",
    "problem_with",
    "engine_of",
    "is_multinode",
]

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
_MULTINODE_MARKS = ("multinode", "multi_node")
#: fake GPUs of a Megatron smoke run unless --gpus says otherwise: the recipes' TP 2 x PP 2
MEGATRON_DEFAULT_GPUS = 4
#: the cluster of a multi-node smoke run: nodes x fake GPUs each (the recipes' TP 2, CP 1 -> DP 2)
MULTINODE_NODES, MULTINODE_GPUS_PER_NODE = 2, 2
#: What the harness needs importable, per engine, and how to get it.
_NEEDS = {
    "fsdp": (("transfer_queue", "zmq", "msgspec", "cachetools", "fastapi"), "pip install 'verl-lambda[smoke]'"),
    "megatron": (("megatron.core", "mbridge"), "pip install 'verl-lambda[megatron]'"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The smoke command's options; the training command follows ``--``."""
    parser.add_argument("--steps", type=int, default=2, help="training steps, 1-5 (default 2)")
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="fake GPUs = actor ranks; e.g. 2 for a command with ulysses_sequence_parallel_size=2 "
        f"(default 1; {MEGATRON_DEFAULT_GPUS} for a Megatron command: TP 2 x PP 2; a multi-node recipe runs on "
        f"{MULTINODE_NODES} nodes x {MULTINODE_GPUS_PER_NODE})",
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


def engine_of(command: Sequence[str]) -> str:
    """``"megatron"`` when ``command`` runs verl's Megatron engine (a ``*megatron*`` script, the
    ``ppo_megatron_trainer`` config or ``model_engine=megatron``), else ``"fsdp"``."""
    for word in command:
        low = word.lower()
        if low.lstrip("+") == "model_engine=megatron" or "ppo_megatron_trainer" in low:
            return "megatron"
        if low.endswith(".sh") and "megatron" in Path(low).name:
            return "megatron"
    return "fsdp"


def is_multinode(command: Sequence[str]) -> bool:
    """Whether ``command`` is a multi-node recipe (a script named ``*multinode*``: ``ray job submit``)."""
    return any(w.lower().endswith(".sh") and any(m in Path(w.lower()).name for m in _MULTINODE_MARKS) for w in command)


def _script(command: Sequence[str]) -> Path | None:
    if Path(command[0]).name in ("bash", "sh") and len(command) > 1 and command[1].endswith(".sh"):
        return Path(command[1])
    return None


def check_command(command: Sequence[str]) -> str | None:
    """Why ``command`` cannot be smoke-tested on the CPU harness, or None when it can."""
    if not command:
        return "no training command: put it after --, e.g. verl-lambda smoke -- bash recipes/run_<model>_grpo_lambda.sh"
    program = command[0]
    if shutil.which(program) is None and not Path(program).is_file():
        return f"{program}: no such program on PATH"
    script = _script(command)
    if script is not None:
        if not script.is_file():
            return f"no such script: {script}"
        if '"$@"' not in script.read_text(errors="replace"):
            return f'{script} does not pass its arguments on ("$@"), so the harness overrides cannot reach verl'
    if is_multinode(command) and (script is None or "runtime_env" not in _recipe_text(script)):
        what = " ".join(command[:2])
        return f"'{what}': a multi-node command is rehearsed through a recipe of recipes/ (ray job submit)"
    return None


def _recipe_text(script: Path) -> str:
    """The script and the recipe body it runs (``recipes/run.sh`` and ``lib.sh`` beside it)."""
    texts = [script.read_text(errors="replace")]
    for name in ("run.sh", "lib.sh"):
        if (script.parent / name).is_file():
            texts.append((script.parent / name).read_text(errors="replace"))
    return "\n".join(texts)


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def problem_with(args: argparse.Namespace) -> str | None:
    """Why ``args`` cannot run (one line), or None: verl version, the command, what the harness needs,
    steps, GPUs, time limit, Ray address."""
    try:
        require_supported_verl(PROG)
        from verl_lambda.smoke.harness import HarnessError, refuse_foreign_ray
    except UnsupportedVerl as err:
        return str(err)
    command = _strip_separator(args.training_command)
    problem = check_command(command)
    if problem is None:
        engines = ["fsdp"] + (["megatron"] if engine_of(command) == "megatron" else [])
        for engine in engines:
            modules, fix = _NEEDS[engine]
            missing = [name for name in modules if not _importable(name)]
            if missing:
                return f"{PROG} of this command needs {', '.join(missing)}, which is not installed here: {fix}"
    if problem is None and not 1 <= args.steps <= 5:
        problem = f"--steps must be 1-5, got {args.steps}"
    if problem is None and args.gpus is not None and args.gpus < 1:
        problem = f"--gpus must be at least 1, got {args.gpus}"
    if problem is None and args.gpus is not None and is_multinode(command):
        problem = (
            f"--gpus does not apply to a multi-node recipe: it runs on {MULTINODE_NODES} x {MULTINODE_GPUS_PER_NODE}"
        )
    if problem is None and not (math.isfinite(args.timeout) and args.timeout > 0):
        problem = f"--timeout must be a positive number of seconds, got {args.timeout:g}"
    if problem is None:
        try:
            refuse_foreign_ray(argv=command)
        except HarnessError as err:
            problem = str(err)
    return problem


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


def _exercised(sizes, engine: str, multinode: bool) -> list[str]:
    if engine == "megatron":
        engine_lines = [
            "  Megatron engine (a megatron-core GPTModel built by mbridge from the HF config, your TP x PP over gloo,",
            "  Megatron's pipeline schedule, its DDP and distributed optimizer, the reference model),",
        ]
    else:
        engine_lines = ["  FSDP2 actor (and reference model) over gloo,"]
    cluster = (
        f"  a {MULTINODE_NODES}-node Ray cluster on this machine, your recipe's `ray job submit` with its runtime env,"
        if multinode
        else "  one local Ray cluster,"
    )
    return [
        "What this run exercised:",
        "  your command line as written (its launcher, Hydra config composition and checks, your estimator, loss,",
        "  KL, padding and batching switches) inside verl 0.9.1's real trainer: v1 TaskRunner, TransferQueue,",
        "  agent loop, reward loop,",
        *engine_lines,
        "  advantage estimator, policy loss, optimizer steps and the weight sync to the rollout,",
        f"{cluster} for {sizes.steps} step(s).",
        "What it did NOT exercise:",
        "  - vLLM / SGLang rollout: a transformers 'hf' rollout generated instead;",
        *(
            [
                "  - TransformerEngine, Megatron-Bridge, Megatron-FSDP, context parallelism, fused kernels"
                " (see 'replaced' above);"
            ]
            if engine == "megatron"
            else ["  - Megatron (smoke a *_megatron.sh recipe for it);"]
        ),
        *([] if multinode else ["  - several nodes, `ray job submit` (smoke a *_multinode.sh recipe for them);"]),
        "  - GPU kernels, NCCL, flash-attention, GPU memory and bf16 numerics at scale;",
        "  - your model, data and reward: a tiny random Llama, one-digit additions and a toy reward replaced them;",
        f"  - your sizes: {sizes.train_batch_size} prompts x {sizes.rollout_n} responses per step, "
        f"{sizes.train_batch_size // sizes.ppo_mini_batch_size} mini-batches, prompt {sizes.max_prompt_length} / "
        f"response {sizes.max_response_length} tokens, {sizes.ranks} fake GPU(s), lr {sizes.lr:g} replaced them.",
    ]


def _replaced(command: Sequence[str], engine: str, multinode: bool, runtime_env: Path | None) -> list[str]:
    """What this run replaces of the command, one line each."""
    from verl_lambda.smoke.harness import MEGATRON_REPLACED, UV_SWITCH

    lines = [
        "rollout -> a transformers 'hf' rollout on the CPU (no vLLM / SGLang here)",
        "model, data, reward, sizes -> a tiny random Llama, one-digit additions, a toy reward, tiny batches",
        "GPUs -> fake Ray GPUs; collectives -> gloo; platform -> verl's device layer on the CPU",
    ]
    if engine == "fsdp":
        lines.append("actor strategy -> fsdp2 (FSDP1 refuses CPU parameters), attention -> SDPA")
    else:
        lines += MEGATRON_REPLACED
    script = _script(command)
    text = _recipe_text(script) if script is not None else " ".join(command)
    if "uv run" in text or UV_SWITCH in text:
        lines.append(f"a `uv run` launcher -> this Python ({UV_SWITCH}=0; ray_init.runtime_env.py_executable)")
    if multinode:
        lines += [
            f"your cluster -> {MULTINODE_NODES} Ray nodes on this machine, {MULTINODE_GPUS_PER_NODE} fake GPUs each "
            "(NNODES, N_GPUS_PER_NODE, RAY_ADDRESS set for the recipe; CP=1)",
            f"runtime env -> {runtime_env}: the recipe's own, with the harness's variables and modules added",
        ]
    return lines


def _stop_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt, so the run's clean-up runs; returns the previous handler.

    Off the main thread (where handlers cannot be set) nothing changes and None is returned.
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A :class:`~verl_lambda.cli.LaunchError` (one line, exit status 2) when :func:`problem_with` finds a problem."""
    problem = problem_with(args)
    if problem is not None:
        raise LaunchError(problem)


def _job_runtime_env(script: Path, env: dict, work: Path) -> Path:
    """The recipe's runtime env (``RUNTIME_ENV``, else ``runtime_env.yaml`` beside it) with the harness's
    variables added and its modules put first, written to ``work``; what every process of the job gets."""
    import yaml

    from verl_lambda.smoke.harness import HARNESS_MODULES, REFUSAL_ENV
    from verl_lambda.smoke.platform import RAY_RESOURCE_ENV
    from verl_lambda.smoke.worker import HARNESS_ENV
    from verl_lambda.verl.keys import MODULES_ENV, REGISTER_MODULE

    source = Path(env.get("RUNTIME_ENV") or script.parent / "runtime_env.yaml")
    runtime_env = yaml.safe_load(source.read_text()) if source.is_file() else {}
    variables = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    modules = [*HARNESS_MODULES, *env[MODULES_ENV].split(","), *variables.get(MODULES_ENV, REGISTER_MODULE).split(",")]
    variables[MODULES_ENV] = ",".join(dict.fromkeys(m.strip() for m in modules if m.strip()))
    for key in (HARNESS_ENV, "VERL_PLATFORM", "VERL_ENGINE_DEVICE", "TOKENIZERS_PARALLELISM", "HYDRA_FULL_ERROR",
                "WANDB_MODE", "PYTHONUNBUFFERED", "PYTHONPATH", REFUSAL_ENV):  # fmt: skip
        if key in env:
            variables[key] = env[key]
    variables[RAY_RESOURCE_ENV] = "GPU"  # each node's placement group on that node's fake GPUs
    runtime_env["env_vars"] = variables
    path = work / "runtime_env.yaml"
    path.write_text(json.dumps(runtime_env, indent=1))  # JSON is YAML
    return path


def run(args: argparse.Namespace) -> int:
    """Run the smoke check described by ``args`` (see :func:`add_arguments`); returns the exit status."""
    check(None, args)
    from verl_lambda.smoke.harness import (
        MEGATRON_VOCAB_MULTIPLE,
        HarnessSizes,
        cluster_overrides,
        harness_env,
        harness_overrides,
        make_ray_temp_dir,
        merge_registration_args,
        parse_step_metrics,
        run_logged,
    )

    command = _strip_separator(args.training_command)
    engine, multinode = engine_of(command), is_multinode(command)
    if multinode:
        gpus = MULTINODE_NODES * MULTINODE_GPUS_PER_NODE
    else:
        gpus = args.gpus if args.gpus is not None else (MEGATRON_DEFAULT_GPUS if engine == "megatron" else 1)
    sizes = HarnessSizes(steps=args.steps, ranks=gpus)
    work = Path(tempfile.mkdtemp(prefix="verl-lambda-smoke-"))
    keep = args.keep
    cluster = None
    try:
        from verl_lambda.smoke.assets import build_assets

        print(f"[smoke] building a tiny random model and dataset in {work}", flush=True)
        assets = build_assets(work, vocab_multiple=MEGATRON_VOCAB_MULTIPLE if engine == "megatron" else 1)
        ray_temp_dir = make_ray_temp_dir()
        overrides = harness_overrides(
            assets.model, assets.train_file, assets.val_file, ray_temp_dir, work, sizes, engine=engine
        )
        refusal = work / "refused.txt"
        env = harness_env(engine=engine, refusal_file=refusal)
        runtime_env = None
        if multinode:
            from verl_lambda.smoke.cluster import LocalCluster

            overrides = cluster_overrides(overrides, MULTINODE_NODES, MULTINODE_GPUS_PER_NODE)
            runtime_env = _job_runtime_env(_script(command), env, work)
            cluster = LocalCluster(MULTINODE_NODES, MULTINODE_GPUS_PER_NODE, env, work / "cluster.log")
            print(f"[smoke] starting {MULTINODE_NODES} Ray nodes on this machine", flush=True)
            address = cluster.start()
            env = dict(cluster.env, RAY_ADDRESS=address, RUNTIME_ENV=str(runtime_env), CP="1")
            env.update(NNODES=str(MULTINODE_NODES), N_GPUS_PER_NODE=str(MULTINODE_GPUS_PER_NODE))
        argv = merge_registration_args(command) + overrides
        log_path = work / "train.log"
        print(f"[smoke] running: {' '.join(command)}", flush=True)
        print(f"[smoke]   + {len(overrides)} CPU-harness overrides; log: {log_path}", flush=True)
        for line in _replaced(command, engine, multinode, runtime_env):
            print(f"[smoke] replaced: {line}", flush=True)
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
            result = run_logged(argv, env, log_path, args.timeout, ray_temp_dir=ray_temp_dir, on_line=progress)
            if multinode and result.ok:
                result = _follow_the_job(result, env, work, args.timeout, progress)
        except KeyboardInterrupt:
            keep = True
            print(f"\n[smoke] interrupted; the run's processes were ended. Log: {log_path}", file=sys.stderr)
            return 130
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if refusal.is_file():  # the launcher's checks refused the command line before Ray started
            raise LaunchError(refusal.read_text(encoding="utf-8").strip().split(": error: ", 1)[-1])
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
            print(f"[smoke] full log: {result.log_path} (work folder kept: {work})", file=sys.stderr)
            return 1
        print(f"[smoke] OK: {sizes.steps} training step(s) of verl's real trainer in {result.wall_s:.0f} s")
        print("[smoke] loss and advantage metrics per step (console logger):")
        for line in _metrics_table(steps):
            print(line)
        for line in _exercised(sizes, engine, multinode):
            print(f"[smoke] {line}")
        if keep:
            print(f"[smoke] work folder kept: {work}")
        return 0
    finally:
        if cluster is not None:
            cluster.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _follow_the_job(submitted, env: dict, work: Path, timeout_s: float, progress):
    """The submitting script's run turned into the job's: follow the job it submitted (``--no-wait``)."""
    from verl_lambda.smoke.cluster import JOB_ID, follow_job
    from verl_lambda.smoke.harness import RunResult

    found = JOB_ID.findall(submitted.log_text())
    if not found:
        return RunResult(returncode=1, wall_s=submitted.wall_s, log_path=submitted.log_path)
    job_log = work / "job.log"
    started = time.monotonic()
    status = follow_job(env["RAY_ADDRESS"], found[-1], env, job_log, timeout_s)
    for line in job_log.read_text(errors="replace").splitlines():
        progress(line)
    print(f"[smoke] job {found[-1]}: {status}", flush=True)
    return RunResult(
        returncode=0 if status == "SUCCEEDED" else 1,
        wall_s=submitted.wall_s + time.monotonic() - started,
        log_path=job_log,
        timed_out=status == "TIMED OUT",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m verl_lambda.smoke [options] -- COMMAND``."""
    from verl_lambda.cli import ArgumentParser, command_main

    parser = ArgumentParser(
        prog="python -m verl_lambda.smoke",
        description="Run one or two real verl 0.9.1 training steps of your command on this CPU (tiny model and data).",
    )
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return command_main(PROG, lambda: run(args))
