"""What every command line of the project shares: one way to fail, the dry-run switch, on/off words.

A mistake on a command line ends it with one line on stderr, ``<prog>: error: <what to change>``,
and exit status 2, before any Ray process starts. There is one way to get there: raise
:class:`LaunchError` inside :func:`command_main` (which also turns Ctrl-C into one line and exit
status 130), or let an :class:`ArgumentParser` of this module refuse an argument. Bash recipes read
the same words for true and false (``recipes/lib.sh``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = [
    "LaunchError",
    "ArgumentParser",
    "DRY_RUN_ENV",
    "DRY_RUN_FLAG",
    "TRUE_WORDS",
    "FALSE_WORDS",
    "INTERRUPTED",
    "env_flag",
    "dry_run",
    "one_line",
    "fail",
    "command_main",
    "cpu_model",
]

DRY_RUN_ENV = "VERL_LAMBDA_DRY_RUN"
DRY_RUN_FLAG = "--dry-run"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
#: the exit status of a command ended by Ctrl-C (128 + SIGINT), as a shell reports it
INTERRUPTED = 130


class LaunchError(ValueError):
    """A command line that must not start; the message is one line that says what to change."""


def one_line(err: BaseException | str) -> str:
    """An exception (or a text) as one line; Hydra's instantiation errors show the dataclass's own message."""
    if isinstance(err, BaseException):
        while err.__cause__ is not None and type(err).__name__ == "InstantiationException":
            err = err.__cause__
        text = " ".join(str(err).split())
        return text or type(err).__name__
    return " ".join(str(err).split())


def fail(prog: str, message: str | BaseException) -> int:
    """Print ``<prog>: error: <message>`` (one line) on stderr; returns the exit status 2."""
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return 2


def _end_interrupted(prog: str, interrupted: str) -> NoReturn:
    """One line, then exit status 130 at once: a library that saw the KeyboardInterrupt pass (some
    mark it "unhandled" and re-kill the interpreter with SIGINT at exit) cannot change the status."""
    print(f"\n{prog}: {interrupted}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(INTERRUPTED)


def command_main(prog: str, body: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Run ``body``: a :class:`LaunchError` becomes one line and exit status 2, Ctrl-C one line
    (``<prog>: <interrupted>``) and exit status 130 — also when a library swallowed the
    KeyboardInterrupt or turned it into another error; returns ``body``'s status (None counts as 0).
    ``body``'s own clean-up (``finally``) runs before the process ends."""
    hit = []

    def on_sigint(signum: int, frame: Any) -> None:
        hit.append(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        status = body()
    except LaunchError as err:
        return fail(prog, err)
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt) or hit:
            _end_interrupted(prog, interrupted)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if hit:
        _end_interrupted(prog, interrupted)
    return 0 if status is None else int(status)


#: what reads as a negative number after an option (argparse's own pattern misses ``-1e-3``)
_NEGATIVE_NUMBER = re.compile(r"^-(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's failure: one line ``<prog>: error: ...`` and exit status 2, no usage
    block; abbreviations of long options are off (``--dryrun`` is not ``--dry-run``); every negative
    number is a value, not an option (``--log-prob -1e-3``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        if hasattr(self, "_negative_number_matcher"):  # argparse's (private) pattern, in every Python we support
            self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        sys.exit(fail(self.prog, f"{message} (see {self.prog} --help)"))


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


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``), for a run's record."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or None
