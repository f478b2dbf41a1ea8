"""Command line: ``verl-lambda <command>`` (also ``python -m verl_lambda <command>``).

Each command is a module with three functions: ``add_arguments(parser)`` (its options),
``check(parser, args)`` (every argument checked before any work; a bad one raises
:class:`~verl_lambda.cli.LaunchError`) and ``run(args)``. :data:`COMMANDS` lists them; only the chosen
command's module is imported, so one command's imports never slow down another's argument errors.
Every failure goes through :mod:`verl_lambda.cli`: one line ``verl-lambda <command>: error: ...``
and exit status 2 for a bad argument, one line and exit status 130 for Ctrl-C.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from verl_lambda.cli import ArgumentParser, command_main


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # defines add_arguments(parser), check(parser, args), run(args)
    help: str  # one line for ``verl-lambda --help``


COMMANDS = {
    command.name: command
    for command in (
        Command(
            "demo",
            "verl_lambda.demo.cli",
            "train a tiny model with GRPO, the clamp-only ablation and GRPO-λ on a CPU; table and learning curves",
        ),
        Command(
            "smoke",
            "verl_lambda.smoke.cli",
            "run 1-2 real verl training steps of your command on this CPU, with a tiny model, before renting GPUs",
        ),
        Command(
            "credit",
            "verl_lambda.credit",
            "the per-token credit of every GRPO-λ weighting: a table and a plot",
        ),
        Command(
            "study",
            "verl_lambda.study.cli",
            "when does the trace help? a long-response credit study on a CPU, every reading, paired seeds",
        ),
    )
}


def build_parser(command: str | None = None) -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    """The top-level parser and the parser of each command. The options of ``command`` are added
    (importing its module), of every command when it is None, of none when it names no command."""
    parser = ArgumentParser(prog="verl-lambda", description="GRPO-λ for verl.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, entry in COMMANDS.items():
        sub = subparsers.add_parser(name, help=entry.help, description=entry.help, allow_abbrev=False)
        if command in (None, name):
            module = importlib.import_module(entry.module)
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run, check=module.check)
        parsers[name] = sub
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser, parsers = build_parser(chosen if chosen in COMMANDS else "")
    args, unknown = parser.parse_known_args(argv)
    command = parsers[args.command]
    if unknown:  # the command's own usage, not the top level's
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv

    def body() -> int | None:
        args.check(command, args)
        status = args.handler(args)
        return status if isinstance(status, int) else 0

    return command_main(command.prog, body)


if __name__ == "__main__":
    raise SystemExit(main())
