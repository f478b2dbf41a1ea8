"""Command line: ``verl-lambda <command>`` (also ``python -m verl_lambda <command>``)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from verl_lambda.demo import cli as demo_cli

    parser = argparse.ArgumentParser(prog="verl-lambda", description="GRPO-λ for verl.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="train a tiny model with GRPO and GRPO-λ on a CPU and plot the learning curves",
        description=demo_cli.__doc__,
    )
    demo_cli.add_arguments(demo)
    demo.set_defaults(handler=lambda args: demo_cli.run(args), check=lambda args: demo_cli.check_arguments(demo, args))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.check(args)
    args.handler(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
