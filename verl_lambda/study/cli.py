"""``verl-lambda study``: when does the GRPO-λ trace itself, not the clamp, change learning?

A credit-assignment study on a CPU. Responses of --length tokens (default 128) earn a reward that
depends only on K = 4 decisive tokens placed early, in the middle, late or spread over the
response; the other tokens are high-entropy filler that cannot change it. A tiny policy (an MLP
shared by every position) learns it with GRPO, with the negative-advantage clamp alone, and with
every GRPO-λ reading (anchor token/end × application ratio/weight, two λ, and the both/early
styles), paired on the same seeds, in an on-policy arm (one update per batch: the traced ratio is
1 and only its gradient changes) and an off-policy arm (2 epochs × 4 mini-batches: the ratio itself
is traced), all through verl's compute_advantage and get_policy_loss_fn.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from verl_lambda.cli import LaunchError, command_main, cpu_model
from verl_lambda.study.options import ARMS, CLAMP_ONLY, FULL, GRPO, POSITIONS, QUICK, StudyConfig, study_methods

__all__ = ["add_arguments", "check", "run", "QUICK_POSITIONS", "FULL_SEEDS", "QUICK_SEEDS"]

PROG = "verl-lambda study"
FULL_SEEDS = 8
QUICK_SEEDS = 5
QUICK_POSITIONS = ("early", "middle", "late")
MIN_LENGTH, MAX_LENGTH = 64, 256
#: measured (docs/credit-study.md); the help text repeats it
RUN_TIME = (
    "full mode: about 45 minutes of CPU time per core on 2 idle cores (2 workers); --quick: about 7 minutes; "
    "more on a shared machine (the run prints and records its load average)"
)


def _words(values) -> list[str]:
    return [word.strip() for value in values for word in value.split(",") if word.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n", 1)[1].strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    methods = study_methods()
    parser.epilog = (
        "methods: " + ", ".join(methods) + "\n"
        "writes OUT/results.csv (one row per setting × method × seed), OUT/summary.csv (one row per setting ×\n"
        "method: mean final reward, paired differences against clamp_only and grpo with 95 % t-intervals),\n"
        "OUT/curves.csv, OUT/credit.csv, OUT/run.json and the plots OUT/*.png.\n"
        f"time: {RUN_TIME}."
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"fewer steps ({QUICK.steps} on-policy / {QUICK.off_steps} off-policy instead of "
                             f"{FULL.steps} / {FULL.off_steps}), {QUICK_SEEDS} seeds, positions "
                             f"{' '.join(QUICK_POSITIONS)}; the same code path")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("study_output"), help="output folder (default ./study_output)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help=f"seeds 0..N-1 (default {FULL_SEEDS}; --quick {QUICK_SEEDS})")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="RL steps of the on-policy arm")
    parser.add_argument("--off-steps", type=int, default=None, metavar="N", help="RL steps of the off-policy arm")
    parser.add_argument("--positions", nargs="+", default=None, metavar="POS",
                        help=f"where the decisive tokens are: {', '.join(POSITIONS)} (default all; --quick "
                             f"{' '.join(QUICK_POSITIONS)})")  # fmt: skip
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        metavar="ARM",
        help="; ".join(f"{a.name}: {a.description}" for a in ARMS.values()) + " (default both)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        metavar="METHOD",
        help="methods to run (default all, listed below); grpo and clamp_only are always added",
    )
    parser.add_argument(
        "--length",
        type=int,
        default=None,
        metavar="L",
        help=f"response length, {MIN_LENGTH}..{MAX_LENGTH} (default {FULL.length})",
    )
    parser.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {FULL.lr:g})")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"exact expected reward for steps-to-threshold (default {FULL.threshold:g})",
    )
    parser.add_argument(
        "--workers", type=int, default=2, metavar="N", help="worker processes, one torch thread each (default 2)"
    )


def _check(args: argparse.Namespace) -> None:
    base = QUICK if args.quick else FULL
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else FULL_SEEDS
    for name in ("seeds", "steps", "off_steps", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise LaunchError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.length is not None and not MIN_LENGTH <= args.length <= MAX_LENGTH:
        raise LaunchError(f"--length must be in {MIN_LENGTH}..{MAX_LENGTH}, got {args.length}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise LaunchError(f"--lr must be a finite number > 0, got {args.lr}")
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise LaunchError(f"--threshold must be in (0, 1], got {args.threshold}")
    positions = _words(args.positions) if args.positions else list(QUICK_POSITIONS if args.quick else POSITIONS)
    for position in positions:
        if position not in POSITIONS:
            raise LaunchError(f"unknown position {position!r}; valid: {', '.join(POSITIONS)}")
    arms = _words(args.arms) if args.arms else list(ARMS)
    for arm in arms:
        if arm not in ARMS:
            raise LaunchError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    known = study_methods()
    methods = _words(args.methods) if args.methods else list(known)
    for method in methods:
        if method not in known:
            raise LaunchError(f"unknown method {method!r}; valid: {', '.join(known)}")
    args.positions = list(dict.fromkeys(positions))
    args.arms = list(dict.fromkeys(arms))
    args.methods = [m for m in known if m in {GRPO, CLAMP_ONLY, *methods}]
    args.config = base.with_values(
        steps=args.steps, off_steps=args.off_steps, length=args.length, lr=args.lr, threshold=args.threshold
    )
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=args.out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise LaunchError(f"--out {args.out}: cannot write there ({err.strerror or err})") from None


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every argument checked before torch or verl is imported: one line and exit status 2."""
    status = command_main(PROG, lambda: _check(args))
    if status:
        sys.exit(status)


# ---------------------------------------------------------------------------------------------- workers

_WORKER_READY = False


def _init_worker() -> None:
    """One torch thread, determinism, verl imported once per process."""
    global _WORKER_READY
    if _WORKER_READY:
        return
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    from verl_lambda.demo.rl import import_verl

    import_verl()
    _WORKER_READY = True


def _job(job: tuple) -> dict:
    from verl_lambda.study.train import run_one

    _init_worker()
    config, position, arm, method_name, seed = job
    return run_one(config, position, arm, study_methods()[method_name], seed)


def _jobs(args) -> list[tuple]:
    """Longest first within nothing fancy: setting by setting, then seed, then method (pairs finish together)."""
    return [
        (args.config, position, arm, method, seed)
        for position in args.positions
        for arm in args.arms
        for seed in range(args.seeds)
        for method in args.methods
    ]


def _run_jobs(args, jobs: list[tuple]) -> list[dict]:
    from tqdm.auto import tqdm

    settings = [f"{p}/{a}" for p in args.positions for a in args.arms]
    per_setting = {s: sum(1 for j in jobs if f"{j[1]}/{j[2]}" == s) for s in settings}
    overall = tqdm(total=len(jobs), desc="all runs", position=0, dynamic_ncols=True)
    bars = {
        s: tqdm(total=n, desc=f"  {s:<12}", position=i + 1, leave=True, dynamic_ncols=True)
        for i, (s, n) in enumerate(per_setting.items())
    }
    results = []

    def done(result: dict) -> None:
        results.append(result)
        bars[result["setting"]].update(1)
        bars[result["setting"]].set_postfix(last=f"{result['method']} s{result['seed']} {result['final_reward']:.2f}")
        overall.update(1)

    try:
        if args.workers == 1:
            _init_worker()
            for job in jobs:
                done(_job(job))
        else:
            import multiprocessing

            os.environ.setdefault("OMP_NUM_THREADS", "1")
            context = multiprocessing.get_context("spawn")
            with context.Pool(args.workers, initializer=_init_worker) as pool:
                for result in pool.imap_unordered(_job, jobs, chunksize=1):
                    done(result)
    finally:
        for bar in (*bars.values(), overall):
            bar.close()
    order = {(j[1], j[2], j[3], j[4]): i for i, j in enumerate(jobs)}
    return sorted(results, key=lambda r: order[(r["position"], r["arm"], r["method"], r["seed"])])


# ---------------------------------------------------------------------------------------------- run


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _credits(args) -> dict[str, list[float]]:
    """Per-position gradient weight at ρ = 1 of each method through verl's loss (log π = −log V)."""
    from verl_lambda.study.train import credit_through_verl

    methods = study_methods()
    log_prob = -math.log(args.config.vocab)
    return {name: credit_through_verl(methods[name], args.config.length, log_prob) for name in args.methods}


def _body(args) -> int:
    import json
    import platform
    from datetime import datetime, timezone

    from verl_lambda.study import report
    from verl_lambda.study.options import decisive_positions

    started, load_start = time.time(), _load()
    cpu_start = time.process_time()
    config: StudyConfig = args.config
    jobs = _jobs(args)
    print(
        f"{PROG}: {len(args.positions)} position(s) × {len(args.arms)} arm(s) × {len(args.methods)} methods × "
        f"{args.seeds} seeds = {len(jobs)} runs on {args.workers} worker(s); response length {config.length}, "
        f"{config.decisive} decisive tokens, vocabulary {config.vocab}; steps on/off "
        f"{config.steps}/{config.off_steps}; load average {load_start}",
        flush=True,
    )
    _init_worker()  # verl importable (and the credit curves need it) before the workers start
    credits = _credits(args)
    decisive = {p: decisive_positions(p, config.length, config.decisive) for p in args.positions}
    predictions = {(p, m): report.predicted_snr(credits[m], decisive[p]) for p in args.positions for m in args.methods}

    results = _run_jobs(args, jobs)

    out = args.out
    rows = [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in results]
    report.write_csv(out / "results.csv", rows, report.RESULT_COLUMNS)
    summary = report.summarise(report.read_csv(out / "results.csv"), predictions)
    report.write_csv(out / "summary.csv", summary, report.SUMMARY_COLUMNS)
    curves = []
    for r in results:
        expected, train = r["expected_curve"], r["train_curve"]
        last = len(expected) - 1
        for step in sorted({*range(0, last + 1, config.curve_every), last}):
            window = train[max(0, step - config.smooth) : step] if step else []
            curves.append({
                "setting": r["setting"], "method": r["method"], "seed": r["seed"], "step": step,
                "expected_reward": expected[step],
                "train_reward_smoothed": sum(window) / len(window) if window else None,
            })  # fmt: skip
    report.write_csv(out / "curves.csv", curves, ("setting", "method", "seed", "step", "expected_reward",
                                                  "train_reward_smoothed"))  # fmt: skip
    credit_rows = [
        {"method": m, "position": k, "credit": c, "credit_over_rms": c / math.sqrt(sum(v * v for v in cs) / len(cs))}
        for m, cs in credits.items()
        for k, c in enumerate(cs)
    ]
    report.write_csv(out / "credit.csv", credit_rows, ("method", "position", "credit", "credit_over_rms"))

    plots = []
    for arm in args.arms:
        name = f"curves_{arm}.png"
        if report.plot_curves(out / name, curves, arm, args.positions, args.methods,
                              f"{ARMS[arm].description}; mean over {args.seeds} seeds, band ± 1 s.e."):  # fmt: skip
            plots.append(name)
    for key, name, what in (
        ("diff_vs_clamp", "diff_vs_clamp.png", "final exact expected reward"),
        ("auc_diff_vs_clamp", "auc_diff_vs_clamp.png", "mean expected reward over all steps (area under the curve)"),
    ):
        if report.plot_differences(out / name, summary, key, f"method − clamp_only, {what}, paired by seed"):
            plots.append(name)
    if report.plot_credit(out / "credit.png", credits, decisive,
                          f"per-position gradient weight at ρ = 1 through verl's loss, n = {config.length}, "
                          f"log π = −log {config.vocab} (weight application)"):  # fmt: skip
        plots.append("credit.png")
    if report.plot_prediction(out / "prediction.png", summary, "auc_diff_vs_clamp",
                              "prediction (x) against the measured paired difference in mean reward (y)"):  # fmt: skip
        plots.append("prediction.png")

    import torch
    import verl

    elapsed = time.time() - started
    cpu_runs = sum(r["cpu_seconds"] for r in results)
    environment = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["verl-lambda", *getattr(args, "argv", ["study"])]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "verl": getattr(verl, "__version__", None),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "workers": args.workers,
        "load_average_start": load_start,
        "load_average_end": _load(),
        "wall_seconds": round(elapsed, 1),
        "run_cpu_seconds": round(cpu_runs, 1),
        "main_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "run_wall_seconds": round(sum(r["seconds"] for r in results), 1),
    }
    from dataclasses import asdict

    (out / "run.json").write_text(json.dumps({
        "environment": environment, "config": asdict(config), "positions": args.positions, "arms": args.arms,
        "methods": {m: study_methods()[m].settings().values() if study_methods()[m].fixed else None
                    for m in args.methods},
        "decisive": decisive, "seeds": list(range(args.seeds)),
    }, indent=2, ensure_ascii=False) + "\n")  # fmt: skip

    print(report.summary_table(summary, config.threshold))
    print(
        f"\nΔ = method − clamp_only (or − grpo) on the same seed, mean over {args.seeds} seeds, 95 % t-interval; "
        f"final = exact expected reward of the final policy; AUC = mean over all steps; SNR = predicted "
        "decisive-token signal-to-noise against uniform credit, from the ρ = 1 gradient weight."
    )
    print(
        f"\nwrote {out}/results.csv, summary.csv, curves.csv, credit.csv, run.json and {', '.join(plots) or 'no plots'}"
        f" in {elapsed / 60:.1f} min (runs: {cpu_runs / 60:.1f} CPU-min; load average {load_start} at the start, "
        f"{environment['load_average_end']} at the end)",
        flush=True,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    return command_main(PROG, lambda: _body(args))
