"""GRPO-λ loss cost against verl's `vanilla` loss, in the same run.

    python benchmarks/bench_loss.py                      # the full grid, CPU
    python benchmarks/bench_loss.py --quick              # 64 × 8k only
    python benchmarks/bench_loss.py --issue              # every setting at 64 × 8k, paired, fp32 and autocast
    python benchmarks/bench_loss.py --device cuda        # on a GPU

For every batch × length × dtype it times forward + backward of verl's registered `vanilla` loss and
of the registered `grpo_lambda` loss in each trace style, and the peak memory each adds above its
inputs; the L×L weight-matrix form that public ports use runs as a second baseline where it fits.
Prints ratios to `vanilla`, writes JSON and a PNG (time and memory against length, log axes).
Also times the `grpo_lambda` advantage estimator against verl's `grpo_vectorized` on one input.

`--grid` replaces the named styles by every trace style × anchor × application of
`verl_lambda.core.choices`, each plain, with ε = 0.01, (end anchor) with the authors' ε = 1e-7, and
each of those with `trace_norm=sum`. `--pairs N` times each method in N interleaved pairs with
`vanilla` (the order alternating) and reports the median of the N ratios. `--issue` is the
acceptance measurement: `--grid --pairs 15` at 64 × 8k in float32, plain and inside
`torch.autocast(bfloat16)`. `--threads` and `--clock cpu` (process CPU time of one thread) give a
reading that a busy shared machine disturbs less; the load average is recorded at start and end.

CPU peak memory is the process's resident high-water mark (reset through /proc before each
measurement; glibc is told to return large blocks to the system so frees show up).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # fixed threshold: freed blocks go back to the OS
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402
import torch  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import get_policy_loss_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402

import verl_lambda.core.objective as objective  # noqa: E402
from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_NORMS, TRACE_STYLES  # noqa: E402
from verl_lambda.verl.config import GRPOLambdaLossConfig  # noqa: E402

STYLES = {
    "recent": dict(trace="recent"),
    "both": dict(trace="both"),
    "recent+eps": dict(trace="recent", trace_epsilon=0.01),
    "both+eps": dict(trace="both", trace_epsilon=0.01),
    "recent+sum": dict(trace="recent", trace_norm="sum"),
    "both+eps+sum": dict(trace="both", trace_epsilon=0.01, trace_norm="sum"),
    "early": dict(trace="early"),
    "recent+weight": dict(trace="recent", trace_application="weight"),
    # the authors' conventions: weights counted from the response's end, ε = 1e-7
    "end": dict(trace="recent", trace_anchor="end", trace_epsilon=1e-7),
    "end-both": dict(trace="both", trace_anchor="end", trace_epsilon=1e-7),
    "end+weight": dict(trace="recent", trace_anchor="end", trace_epsilon=1e-7, trace_application="weight"),
}
AUTHORS = "end"  # the style the authors' dense form computes


def grid() -> dict[str, dict]:
    """Every style × anchor × application of verl_lambda.core.choices: plain, ε = 0.01, and for the
    end anchor the authors' ε = 1e-7; each also with every other trace_norm. Label
    ``style/anchor/application[+epsε][+norm]``."""
    methods = {}
    for style, anchor, application in itertools.product(TRACE_STYLES, TRACE_ANCHORS, TRACE_APPLICATIONS):
        epsilons = [0.0, 0.01] + ([1e-7] if anchor == "end" else [])
        for epsilon, norm in itertools.product(epsilons, TRACE_NORMS):
            label = f"{style}/{anchor}/{application}" + (f"+eps{epsilon:g}" if epsilon else "")
            label += "" if norm == "none" else f"+{norm}"
            methods[label] = dict(
                trace=style, trace_anchor=anchor, trace_application=application, trace_epsilon=epsilon, trace_norm=norm
            )
    return methods


GRID = grid()
METHODS = {**STYLES, **GRID}


class PeakMemory:
    """Peak bytes allocated above the starting point, for CPU (resident set) or CUDA."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM
            self.start = self._status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = self._status("VmHWM") - self.start

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{key} not in /proc/self/status")


def make_inputs(batch, length, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=g) * 2
    new = old + torch.randn(batch, length, generator=g) * 0.02
    adv = torch.randn(batch, 1, generator=g).expand(batch, length).contiguous()
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    to = dict(device=device)
    return old.to(dtype=dtype, **to), new.to(dtype=dtype, **to), adv.to(dtype=dtype, **to), mask.to(**to)


def step(name, policy_loss, inputs):
    old, new, adv, mask = inputs
    cfg = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss)
    x = new.clone().requires_grad_(True)
    loss, _ = get_policy_loss_fn(name)(
        old_log_prob=old, log_prob=x, advantages=adv, response_mask=mask, loss_agg_mode="token-mean", config=cfg
    )
    loss.backward()
    return x.grad


def _with_autocast(ctx, device):
    @contextlib.contextmanager
    def both():
        with ctx(), torch.autocast(device.type, dtype=torch.bfloat16):
            yield

    return both


@contextlib.contextmanager
def always_compact():
    """The trace as it runs on an accelerator: rows are always compacted (a scatter and a gather),
    since asking whether a row has holes would cost a device-to-host sync."""
    from verl_lambda.core import trace

    probe = trace._has_gaps
    trace._has_gaps = lambda valid: valid.shape[-1] >= 2
    try:
        yield
    finally:
        trace._has_gaps = probe


def _with_always_compact(ctx):
    @contextlib.contextmanager
    def both():
        with ctx(), always_compact():
            yield

    return both


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _peaks(methods, inputs, device):
    """Peak memory of one step per method, after a warm-up step."""
    peaks = {}
    for label, loss_name, cfg, ctx in methods:
        with ctx():
            step(loss_name, cfg, inputs)  # warm-up
            with PeakMemory(device) as mem:
                step(loss_name, cfg, inputs)
        peaks[label] = mem.peak
    return peaks


def _timed(method, inputs, device, clock):
    label, loss_name, cfg, ctx = method
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with ctx():
        sync()
        t = clock()
        step(loss_name, cfg, inputs)
        sync()
        return clock() - t


def measure(methods, inputs, device, rounds=5, clock=time.perf_counter):
    """Median time and peak memory per method; rounds interleave the methods so load drifts cancel."""
    peaks, times = _peaks(methods, inputs, device), {m[0]: [] for m in methods}
    for _ in range(rounds):
        for method in methods:
            times[method[0]].append(_timed(method, inputs, device, clock))
    return {label: (statistics.median(times[label]), peaks[label]) for label in times}


def measure_pairs(methods, inputs, device, pairs, clock=time.perf_counter):
    """Per method after the first (the baseline): ``pairs`` interleaved pairs (baseline, method), the
    order alternating; the median of the pair ratios, the median times and the peak memory."""
    baseline, others = methods[0], methods[1:]
    peaks = _peaks(methods, inputs, device)
    out = {baseline[0]: dict(time_s=[], peak_bytes=peaks[baseline[0]])}
    for method in others:
        ratios, own, base = [], [], []
        for i in range(pairs):
            order = (baseline, method) if i % 2 == 0 else (method, baseline)
            t = {m[0]: _timed(m, inputs, device, clock) for m in order}
            base.append(t[baseline[0]])
            own.append(t[method[0]])
            ratios.append(own[-1] / base[-1])
        out[baseline[0]]["time_s"] += base
        out[method[0]] = dict(
            time_s=statistics.median(own),
            baseline_time_s=statistics.median(base),
            time_ratio=statistics.median(ratios),
            time_ratio_quartiles=statistics.quantiles(ratios, n=4) if pairs > 1 else [ratios[0]] * 3,
            peak_bytes=peaks[method[0]],
            mem_ratio=peaks[method[0]] / max(peaks[baseline[0]], 1),
        )
        print(
            f"  {method[0]:>34} {out[method[0]]['time_ratio']:6.2f}x time "
            f"({out[method[0]]['time_s'] * 1e3:.1f} vs {out[method[0]]['baseline_time_s'] * 1e3:.1f} ms)  "
            f"{out[method[0]]['mem_ratio']:5.2f}x memory",
            flush=True,
        )
    out[baseline[0]].update(time_s=statistics.median(out[baseline[0]]["time_s"]), time_ratio=1.0, mem_ratio=1.0)
    return out


@contextlib.contextmanager
def naive_trace():
    """Swap the trace for the L×L weight-matrix form (right-padded rows only, as in the benchmark)."""
    fast = objective.masked_trace

    def dense(log_ratio, mask, settings):
        pos = torch.arange(log_ratio.shape[-1], device=log_ratio.device, dtype=torch.float32)
        decay = torch.tensor(settings.decay, device=log_ratio.device)
        w = torch.pow(decay, (pos[:, None] - pos[None, :]).clamp(min=0))
        if settings.trace == "both":
            w = torch.maximum(w, torch.pow(decay, pos)[None, :])
        if settings.trace_epsilon > 0:
            w = w.clamp(min=settings.trace_epsilon)
        w = w.tril()
        if settings.trace_norm == "sum":
            w = w / w.sum(1, keepdim=True)
        x = torch.where(mask, log_ratio.float(), 0.0)
        return torch.where(mask, x @ w.T, 0.0)

    objective.masked_trace = dense
    try:
        yield
    finally:
        objective.masked_trace = fast


@contextlib.contextmanager
def authors_dense_trace():
    """Swap the trace for the authors' per-sequence form: one dense n×n matrix per response, stacked
    into B×L×L and applied with a batched matrix product (B·L² memory)."""
    fast = objective.masked_trace

    def dense(values, mask, settings):
        from verl_lambda.core.trace import trace_weights

        batch, length = values.shape
        w = torch.zeros(batch, length, length, dtype=torch.float32, device=values.device)
        for b, n in enumerate(mask.sum(-1).tolist()):
            w[b, :n, :n] = trace_weights(n, settings, values.device).float()
        x = torch.where(mask, values.float(), 0.0)
        return torch.where(mask, torch.bmm(w, x.unsqueeze(-1)).squeeze(-1), 0.0)

    objective.masked_trace = dense
    try:
        yield
    finally:
        objective.masked_trace = fast


def bench_estimator(rows, length, device):
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(length)[None, :] < torch.randint(1, length + 1, (rows,), generator=g)[:, None]).float()
    rewards = torch.zeros(rows, length)
    last = (mask.sum(-1) - 1).long()
    rewards[torch.arange(rows), last] = torch.randint(0, 2, (rows,), generator=g).float()
    uids = np.array([f"p{i // 8}" for i in range(rows)], dtype=object)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards.to(device), "response_mask": mask.to(device)}, non_tensors={"uid": uids}
    )
    from omegaconf import OmegaConf

    algo = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "grpo_lambda": {"adv_clamp": -0.1}})
    out = {}
    for name in ("grpo_vectorized", "grpo_lambda", "grpo_vectorized", "grpo_lambda"):  # interleaved
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            compute_advantage(data, adv_estimator=name, config=algo)
            ts.append(time.perf_counter() - t)
        out.setdefault(name, []).extend(ts)
    return {k: statistics.median(v) for k, v in out.items()}


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = [r for r in results if r["batch"] == max(r["batch"] for r in results) and r["dtype"] == "float32"]
    for method in sorted({r["method"] for r in rows}, key=lambda m: (m != "vanilla", m != "naive-LxL", m)):
        pts = sorted((r["length"], r["time_s"], r["peak_bytes"]) for r in rows if r["method"] == method)
        if not pts:
            continue
        style = dict(marker="o", linewidth=2.5 if method in ("vanilla", "naive-LxL") else 1.2)
        axes[0].plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], label=method, **style)
        axes[1].plot([p[0] for p in pts], [max(p[2], 1) / 2**20 for p in pts], label=method, **style)
    for ax, ylabel in zip(axes, ("forward + backward (ms)", "peak extra memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("response length L")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"GRPO-λ loss vs verl vanilla, batch {rows[0]['batch'] if rows else '?'}, float32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _methods(args, batch, length, device, autocast):
    """(label, registered loss, config, context) for one input shape: vanilla first."""
    methods = [("vanilla", "vanilla", PolicyLossConfig(loss_mode="vanilla"), contextlib.nullcontext)]
    methods += [(s, "grpo_lambda", GRPOLambdaLossConfig(**METHODS[s]), contextlib.nullcontext) for s in args.styles]
    if length * length * 4 / 2**30 <= args.naive_max_gib:
        methods.append(("naive-LxL", "grpo_lambda", GRPOLambdaLossConfig(trace="recent"), naive_trace))
    if batch * length * length * 4 / 2**30 <= args.authors_max_gib:
        authors = GRPOLambdaLossConfig(**STYLES[AUTHORS])
        methods.append(("authors-BxLxL", "grpo_lambda", authors, authors_dense_trace))
    if args.always_compact:
        methods = [m if m[0] == "vanilla" else (*m[:3], _with_always_compact(m[3])) for m in methods]
    if autocast:
        methods = [(label, name, cfg, _with_autocast(ctx, device)) for label, name, cfg, ctx in methods]
    return methods


def grid_table(results: list[dict], before: list[dict] | None = None) -> str:
    """A markdown table of a --grid run: per style/anchor/application, the range over its variants
    (ε, norm) of the time and memory ratios, plain and under autocast; ``before``: another run's
    time ranges beside them."""

    def ranges(rows, key, autocast):
        out = {}
        for r in rows:
            if r["method"] in GRID and r["autocast"] == autocast:
                out.setdefault(r["method"].split("+")[0], []).append(r[key])
        return {reading: f"{min(v):.2f}–{max(v):.2f}" for reading, v in out.items()}

    modes = sorted({r["autocast"] for r in results})
    columns = [(f"{'bf16 autocast' if ac else 'fp32'} {what}", key, ac) for ac in modes
               for what, key in (("time", "time_ratio"), ("memory", "mem_ratio"))]  # fmt: skip
    cells = {name: ranges(results, key, ac) for name, key, ac in columns}
    if before:
        for ac in modes:
            cells[f"{'bf16 autocast' if ac else 'fp32'} time before"] = ranges(before, "time_ratio", ac)
    variants = {}
    for r in results:
        if r["method"] in GRID and r["autocast"] == modes[0]:
            variants.setdefault(r["method"].split("+")[0], 0)
            variants[r["method"].split("+")[0]] += 1
    lines = ["| style/anchor/application | variants | " + " | ".join(cells) + " |",
             "| --- | --- | " + " | ".join("---" for _ in cells) + " |"]  # fmt: skip
    for reading, count in variants.items():
        lines.append(f"| `{reading}` | {count} | " + " | ".join(c.get(reading, "") for c in cells.values()) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192, 16384, 32768])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--styles", nargs="+", default=list(STYLES), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--grid", action="store_true", help="every style × anchor × application (+ε, +sum)")
    parser.add_argument("--naive-max-gib", type=float, default=1.0, help="skip the L×L baseline above this W size")
    parser.add_argument(
        "--authors-max-gib", type=float, default=2.0, help="skip the authors' B×L×L form above this W size"
    )
    parser.add_argument(
        "--autocast", action="store_true", help="call every loss inside torch.autocast(bfloat16), as verl's engine does"
    )
    parser.add_argument(
        "--always-compact",
        action="store_true",
        help="compact every row as on an accelerator (on the CPU rows without holes skip it)",
    )
    parser.add_argument("--estimator-rows", type=int, default=8192)
    parser.add_argument("--estimator-length", type=int, default=16384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=5, help="timed repetitions per method (median)")
    parser.add_argument("--pairs", type=int, default=0, help="time each method in N interleaved pairs with vanilla")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="cpu: process CPU time (use 1 thread)")
    parser.add_argument("--quick", action="store_true", help="64 × 8k, float32 only, no estimator run")
    parser.add_argument(
        "--authors-setting",
        action="store_true",
        help="only the authors' 3072-token setting: 32 × 3072 (their micro-batch)",
    )
    parser.add_argument(
        "--issue",
        action="store_true",
        help="the acceptance measurement: --grid, 15 pairs, 64 × 8k float32, plain and under autocast",
    )
    parser.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="print the markdown table of a --grid result file (a second file: its times beside them) and exit",
    )
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--name", default=None, help="file name stem of the results (default loss_<host>-<device>)")
    args = parser.parse_args()
    if args.table:
        runs = [json.loads(Path(name).read_text())["loss"] for name in args.table[:2]]
        print(grid_table(runs[0], runs[1] if len(runs) > 1 else None))
        return
    if args.quick:
        args.batches, args.lengths, args.dtypes, args.estimator_rows = [64], [8192], ["float32"], 0
    if args.authors_setting:
        args.batches, args.lengths, args.dtypes, args.estimator_rows = [32], [3072], ["float32"], 0
    autocast_modes = [args.autocast]
    if args.issue:
        args.batches, args.lengths, args.dtypes, args.estimator_rows = [64], [8192], ["float32"], 0
        args.grid, args.pairs, args.naive_max_gib, args.authors_max_gib = True, max(args.pairs, 15), 0.0, 0.0
        autocast_modes = [False, True]
    if args.grid:
        args.styles = list(GRID)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    device = torch.device(args.device)
    load_start = os.getloadavg()

    results = []
    print(f"{'B':>3} {'L':>6} {'dtype':>8} {'method':>34} {'ms':>9} {'ratio':>6} {'MiB':>8} {'mem ratio':>9}")
    for autocast, dtype_name in itertools.product(autocast_modes, args.dtypes):
        dtype = getattr(torch, dtype_name)
        for batch in args.batches:
            for length in args.lengths:
                inputs = make_inputs(batch, length, dtype, device)
                methods = _methods(args, batch, length, device, autocast)
                if args.pairs:
                    print(f"{batch} × {length} {dtype_name}{' under autocast' if autocast else ''}, {args.pairs} pairs")
                    measured = measure_pairs(methods, inputs, device, args.pairs, clock)
                else:
                    timed = measure(methods, inputs, device, rounds=args.rounds, clock=clock)
                    base_t, base_m = timed["vanilla"]
                    measured = {
                        method: dict(time_s=t, peak_bytes=m, time_ratio=t / base_t, mem_ratio=m / max(base_m, 1))
                        for method, (t, m) in timed.items()
                    }
                for method, r in measured.items():
                    r = dict(batch=batch, length=length, dtype=dtype_name, autocast=autocast, method=method, **r)
                    r["settings"] = METHODS.get(method)
                    results.append(r)
                    print(
                        f"{batch:>3} {length:>6} {dtype_name:>8} {method:>34} {r['time_s'] * 1e3:>9.1f} "
                        f"{r['time_ratio']:>6.2f} {r['peak_bytes'] / 2**20:>8.1f} {r['mem_ratio']:>9.2f}",
                        flush=True,
                    )
                for label, gib, limit in (
                    ("naive-LxL", length * length * 4 / 2**30, args.naive_max_gib),
                    ("authors-BxLxL", batch * length * length * 4 / 2**30, args.authors_max_gib),
                ):
                    if gib > limit:
                        print(
                            f"{batch:>3} {length:>6} {dtype_name:>8} {label:>34}   skipped: W alone is {gib:.1f} GiB"
                            f" per call (limit {limit:g})",
                            flush=True,
                        )
                del inputs

    estimator = None
    if args.estimator_rows:
        est = bench_estimator(args.estimator_rows, args.estimator_length, device)
        estimator = dict(
            rows=args.estimator_rows,
            length=args.estimator_length,
            seconds=est,
            ratio=est["grpo_lambda"] / est["grpo_vectorized"],
        )
        print(
            f"estimator {args.estimator_rows} × {args.estimator_length}: grpo_vectorized "
            f"{est['grpo_vectorized'] * 1e3:.0f} ms, grpo_lambda {est['grpo_lambda'] * 1e3:.0f} ms, "
            f"ratio {estimator['ratio']:.2f}"
        )

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"loss_{platform.node() or 'host'}-{device.type}".replace("/", "_")
    meta = dict(
        date=datetime.date.today().isoformat(),
        device=torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        command=" ".join(sys.argv),
        autocast=autocast_modes,
        always_compact=args.always_compact,
        pairs=args.pairs,
        clock=args.clock,
        load_average_start=load_start,
        load_average=os.getloadavg(),
    )
    (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, loss=results, estimator=estimator), indent=1))
    print(f"load average {load_start} at start, {meta['load_average']} at the end")
    if args.grid:
        print(grid_table(results))
    if len(args.lengths) > 1:
        plot(results, out / f"{stem}.png")
        print(f"wrote {out / f'{stem}.json'} and {out / f'{stem}.png'}")
    else:
        print(f"wrote {out / f'{stem}.json'}")


if __name__ == "__main__":
    main()
