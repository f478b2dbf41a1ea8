"""``verl-lambda credit``: the per-token credit of every GRPO-λ weighting, as a table and a plot.

The credit of token k is how much of the advantage its log-probability receives when the policy has
not moved yet (ρ = 1): d Σ_t loss_t / d log π(o_k) for an advantage of −1 under a token-sum
reduction, computed by autograd through the loss itself (:func:`verl_lambda.core.objective.token_losses`).
For ``trace_application="ratio"`` that is Σ_{t ≥ k} w(t, k) (GRPO: 1 for every token); for
``"weight"`` it is e_k + σ'(log π(o_k) − 1)·Σ_{t ≥ k} w(t, k), so it depends on the tokens'
log-probability (``--log-prob``).
"""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path

from verl_lambda.cli import LaunchError
from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_STYLES
from verl_lambda.core.settings import GRPOLambdaSettings, LossSettings, setting_fields

__all__ = ["add_arguments", "check", "run", "credit_curves"]

STYLES = tuple(TRACE_STYLES)
ANCHORS = tuple(TRACE_ANCHORS)
APPLICATIONS = tuple(TRACE_APPLICATIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length", type=int, default=3072, help="response length in tokens (default 3072)")
    for name in ("lam", "gamma", "trace_epsilon", "trace_norm"):  # defaults: those of the settings
        f = next(f for f in setting_fields() if f.name == name)
        parser.add_argument(
            "--" + name.replace("_", "-"), type=str, default=None,
            help=f"{f.metadata['help']} (default {f.default}; the authors' code uses trace_epsilon 1e-7)"
            if name == "trace_epsilon" else f"{f.metadata['help']} (default {f.default})",
        )  # fmt: skip
    parser.add_argument(
        "--log-prob", type=float, default=-1.0, help="log π of every token, for the weight application (default -1)"
    )
    parser.add_argument("--out", type=Path, default=Path("credit.png"), help="the plot (default ./credit.png)")


def _settings(args: argparse.Namespace, trace: str, anchor: str, application: str) -> LossSettings:
    given = {
        n: getattr(args, n) for n in ("lam", "gamma", "trace_epsilon", "trace_norm") if getattr(args, n) is not None
    }
    labels = {n: "--" + n.replace("_", "-") for n in given}
    chosen = {"trace": trace, "trace_anchor": anchor, "trace_application": application}
    return GRPOLambdaSettings.from_strings({**given, **chosen}, labels).loss


#: the image formats the plot is written in (matplotlib's), named by the --out extension
IMAGE_FORMATS = (".png", ".pdf", ".svg")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad values with one line (:class:`~verl_lambda.cli.LaunchError`), before torch is imported."""
    if args.length < 1:
        raise LaunchError("--length must be at least 1")
    try:
        _settings(args, "recent", "token", "ratio")
    except ValueError as err:
        raise LaunchError(str(err)) from None
    if not (math.isfinite(args.log_prob) and args.log_prob <= 0):
        raise LaunchError(f"--log-prob must be a finite number ≤ 0 (a log-probability), got {args.log_prob}")
    if args.out.suffix.lower() not in IMAGE_FORMATS:
        raise LaunchError(f"--out {args.out}: name an image file ending in {', '.join(IMAGE_FORMATS)}")
    folder = args.out.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise LaunchError(f"--out {args.out}: {existing} is a file, not a folder")
    if args.out.is_dir():
        raise LaunchError(f"--out {args.out} is a folder: name an image file in it")


def credit_curves(args: argparse.Namespace) -> dict[tuple[str, str, str], list[float]]:
    """Credit of every token for every (trace, anchor, application), in float64."""
    import torch

    from verl_lambda.core.objective import token_losses

    curves = {}
    mask = torch.ones(1, args.length, dtype=torch.bool)
    old = torch.full((1, args.length), float(args.log_prob), dtype=torch.float64)
    advantage = torch.full_like(old, -1.0)
    for trace, anchor, application in itertools.product(STYLES, ANCHORS, APPLICATIONS):
        log_prob = old.clone().requires_grad_(True)
        losses, _ = token_losses(old, log_prob, advantage, mask, _settings(args, trace, anchor, application))
        (grad,) = torch.autograd.grad(losses.sum(), log_prob)
        curves[(trace, anchor, application)] = grad[0].tolist()
    return curves


def _table(curves: dict, length: int) -> str:
    """The credit at the first, 10 %, middle and last token, and each curve's true extremes with where they are."""
    points = {"first": 0, "10 %": length // 10, "middle": length // 2, "last": length - 1}
    columns = [*points, "min (at k)", "max (at k)"]
    header = f"{'trace':<8}{'anchor':<8}{'application':<13}" + "".join(f"{name:>12}" for name in points)
    header += "".join(f"{name:>20}" for name in columns[len(points) :])
    rows = [header, "-" * len(header)]
    for (trace, anchor, application), values in curves.items():
        low = min(range(length), key=values.__getitem__)
        high = max(range(length), key=values.__getitem__)
        cells = "".join(f"{values[k]:>12.4g}" for k in points.values())
        cells += "".join(f"{f'{values[k]:.4g} ({k})':>20}" for k in (low, high))
        rows.append(f"{trace:<8}{anchor:<8}{application:<13}{cells}")
    return "\n".join(rows)


def _plot(curves: dict, args: argparse.Namespace, settings) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(APPLICATIONS), len(STYLES), figsize=(13, 7), sharex=True, sharey=True)
    for row, application in enumerate(APPLICATIONS):
        for col, trace in enumerate(STYLES):
            ax = axes[row][col]
            for anchor, colour in zip(ANCHORS, ("tab:blue", "tab:orange")):
                values = curves[(trace, anchor, application)]
                ax.plot(range(len(values)), values, color=colour, label=f"trace_anchor={anchor}")
            ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":", label="GRPO: 1 for every token")
            ax.set_yscale("log")
            ax.set_title(f"trace={trace}, trace_application={application}", fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
            if row == len(APPLICATIONS) - 1:
                ax.set_xlabel("token k")
            if col == 0:
                ax.set_ylabel("credit at ρ = 1")
    axes[0][0].legend(fontsize=8)
    extra = "" if settings.trace_norm == "none" else f", trace_norm={settings.trace_norm}"
    fig.suptitle(
        f"GRPO-λ credit per token, n = {args.length}, λ = {settings.lam:g}, γ = {settings.gamma:g}, "
        f"ε = {settings.trace_epsilon:g}{extra}, log π = {args.log_prob:g} (weight)"
    )
    fig.tight_layout()
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110, format=args.out.suffix.lower()[1:])
    except OSError as err:
        raise LaunchError(f"--out {args.out}: cannot write it ({err.strerror or err})") from None
    finally:
        plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    curves = credit_curves(args)
    settings = _settings(args, "recent", "token", "ratio")
    print(f"credit of token k at ρ = 1 (GRPO: 1), n = {args.length}, λ = {settings.lam:g}, γ = {settings.gamma:g}, "
          f"ε = {settings.trace_epsilon:g}, trace_norm = {settings.trace_norm}")  # fmt: skip
    print(_table(curves, args.length))
    if _plot(curves, args, settings):
        print(f"wrote {args.out}")
    else:
        print("matplotlib is not installed, no plot: pip install 'verl-lambda[demo]'")
    return 0
