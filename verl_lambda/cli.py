"""What every command line of the project shares: the one-line error, the dry-run switch, env flags.

A mistake on a command line ends it with one line on stderr, ``<prog>: error: <what to change>``,
and exit status 2, before any Ray process starts: raise :class:`LaunchError` and let
:func:`run_main` print it. Bash recipes read the same words for true and false (``recipes/lib.sh``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "LaunchError",
    "DRY_RUN_ENV",
    "DRY_RUN_FLAG",
    "TRUE_WORDS",
    "FALSE_WORDS",
    "env_flag",
    "dry_run",
    "one_line",
    "fail",
    "run_main",
]

DRY_RUN_ENV = "VERL_LAMBDA_DRY_RUN"
DRY_RUN_FLAG = "--dry-run"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


class LaunchError(ValueError):
    """A command line that must not start; the message is one line that says what to change."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether environment variable ``name`` is switched on (1/true/yes/on); anything else but
    unset/0/false/no/off is refused with :class:`LaunchError`."""
    text = (os.environ if environ is None else environ).get(name, "")
    word = text.strip().lower()
    if word in FALSE_WORDS:
        return False
    if word in TRUE_WORDS:
        return True
    raise LaunchError(f"{name} must be one of 1/true/yes/on or 0/false/no/off, got {text!r}")


def dry_run(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[bool, list[str]]:
    """``(asked for a dry run, argv without --dry-run)``: ``--dry-run`` anywhere or ``VERL_LAMBDA_DRY_RUN=1``."""
    rest = [a for a in argv if a != DRY_RUN_FLAG]
    return env_flag(DRY_RUN_ENV, environ) or len(rest) != len(argv), rest


def one_line(err: BaseException) -> str:
    """An exception as one line; Hydra's instantiation errors show the dataclass's own message."""
    while err.__cause__ is not None and type(err).__name__ == "InstantiationException":
        err = err.__cause__
    text = " ".join(str(err).split())
    return text or type(err).__name__


def fail(prog: str, message: str) -> int:
    """Print ``<prog>: error: <message>`` (one line) on stderr; returns the exit status 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return 2


def run_main(prog: str, main: Callable[[], int]) -> int:
    """Run ``main``; a :class:`LaunchError` becomes one line and exit status 2."""
    try:
        return main()
    except LaunchError as err:
        return fail(prog, str(err))
