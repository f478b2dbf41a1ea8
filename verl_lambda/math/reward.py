"""Rule-based reward for boxed math answers, as a verl custom reward function.

A response scores 1.0 when the content of its **last** ``\\boxed{...}`` is mathematically equal to
the ground truth, else 0.0. No box, an empty box, or a reasoning block that never closes
(``<think>`` without ``</think>``, i.e. a response cut at the length limit) score 0.0. When the
response has a ``</think>``, only the text after it is read, so a box inside the reasoning does
not count. Unicode vulgar fractions (``½``, ``2¾``) are read as the fractions they stand for.

Equality is decided by `math-verify <https://github.com/huggingface/Math-Verify>`_ (fractions,
decimals, LaTeX forms, units, sets, intervals, symbolic expressions), after a quick string
pre-filter. Readings decided here, where math-verify's own would score a different value as equal
(both sides are rewritten before either check):

* ``\\mathrm{i}`` / ``\\text{i}`` and ``\\mathrm{e}`` are the imaginary unit and Euler's number (ISO
  style), not units: ``5\\mathrm{i}`` is ``5i``, not 5 (math-verify alone drops them: ``3+4\\mathrm{i}`` = 7);
* a scale word after a number is a power of ten: ``3\\text{ million}`` is 3000000, not 3
  (hundred, thousand, million, billion = 10^9, trillion = 10^12);
* digits grouped by threes with a thin space, a space or ``{,}`` are one number: ``1\\,000`` is 1000
  (math-verify alone reads 1*0 = 0); ``5\\,6`` and ``5 6`` are not 56;
* a blank ``\\text{ }`` is a space, so ``1\\text{ }2`` is not 12.

A percentage is left to math-verify, which compares it as written: ``10\\%`` equals ``10%`` but
neither 10 nor 0.1 (data sets disagree on which it should be).

The pre-filter says "equal" only when it is certain, and otherwise leaves the answer to
math-verify: when the two strings are the same after a normalisation that cannot merge different
values (``\\dfrac`` is ``\\frac``, ``\\left(`` is ``(``, ``^\\circ`` goes, a unit after a number goes when the
other side has none, ``1,000`` is 1000, spaces go except inside numbers: ``5 6`` stays apart from
``56``, ``5\\text{ or }6`` from 56), or when both are plain numbers (integers, decimals, ``a/b``,
``\\frac{a}{b}``) with the same exact rational value: no tolerance, so 1000001 is not 1000000, 0 is not
0.000001 and 12345678901234567 is not 12345678901234568, and ``0.333`` is not a third (there is no
"inexact" ground truth: a decimal means what it says). Answers longer than 1,000 characters are not
pre-filtered at all (nor rewritten: math-verify's worker does that, under the deadline), and its
regexes are linear, so its work in the caller's thread (outside any deadline, holding the GIL)
stays within a millisecond or two. math-verify itself rounds floats to 6
decimal places (``0.3333333`` = ``\\frac{1}{3}``); that is its reading, left as it is.

Without math-verify (``pip install 'verl-lambda[math]'``) the pre-filter alone decides and the
reward logs a warning once: it accepts ``\\dfrac{1}{2}`` = ``0.5`` = ``1/2`` or ``5\\text{ cm}`` = ``5`` but
not symbolic rewrites such as ``(x+1)^2`` = ``x^2+2x+1``.

math-verify runs in a pool of worker processes, one answer per task: parsing the ground truth,
parsing the answer and comparing them share one deadline (``timeout`` seconds), which starts when
a worker takes the task, not while it waits for one. The pool grows with the number of callers
at once, up to ``$VERL_LAMBDA_MATH_WORKERS`` processes (default ``min(32, cpus + 4)``, the size of
the thread pool verl scores from); a worker that overruns its deadline is killed and replaced.
An answer whose check timed out scores 0.0, is counted (:func:`timeout_count`) and logged as a
timeout, and is flagged in the result (``timed_out``), which verl logs per data source as the
validation metric ``val-aux/<data_source>/timed_out/mean@<k>``. A worker that dies on an answer
(killed, out of memory) is replaced and the answer checked once more on another worker; if that
one dies too, or checking raises (in math-verify or here), the answer scores 0.0 without a
verdict. Every answer without a verdict, timeouts included, is flagged ``not_scored`` (logged as
``val-aux/<data_source>/not_scored/mean@<k>``), counted (:func:`not_scored_count`) and logged: its
0.0 is not a judgement that it is wrong. Nothing a response holds makes the reward raise.

Use it in a verl run with::

    reward.custom_reward_function.path=pkg://verl_lambda.math.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

__all__ = [
    "compute_score",
    "last_boxed",
    "final_answer_text",
    "answers_match",
    "check_answer",
    "AnswerCheck",
    "have_math_verify",
    "unicode_fractions_to_latex",
    "timeout_count",
    "not_scored_count",
    "CheckerUnavailable",
    "max_workers",
]

logger = logging.getLogger(__name__)

WORKERS_ENV = "VERL_LAMBDA_MATH_WORKERS"
_STARTUP_TIMEOUT = 180.0  # seconds a new worker may take to import math-verify (not part of any answer's deadline)
_KILL_GRACE = 1.0  # seconds past the deadline before a worker that ignores its alarm is killed
_warned_fallback = False
_timeouts = 0
_not_scored = 0
_state_lock = threading.Lock()


def have_math_verify() -> bool:
    """True when the ``math_verify`` package can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Reading the answer out of a response

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)")
_BRACE = re.compile(r"[{}]")
_LEADING_SPACE = re.compile(r"\s*")
_BRACELESS = re.compile(r"\s+([^\s$]+)")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    Also reads the brace-less form ``\\boxed 5``. A box that never closes (a response cut off or
    stuck repeating ``\\boxed{``) is skipped for the one before it. Returns None when there is no
    complete box. Runs in one pass over the text: linear time whatever the input.
    """
    if not text:
        return None
    starts = [m.end() for m in _BOX_COMMAND.finditer(text)]  # position right after each command
    if not starts:
        return None
    # Matching close brace of every "{" from the first box on (the match of a "{" depends only on
    # the text after it, so the text before the first box can be ignored).
    closing: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE.finditer(text, starts[0]):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            closing[stack.pop()] = m.start()
    for pos in reversed(starts):
        first = _LEADING_SPACE.match(text, pos).end()
        if first < len(text) and text[first] == "{":
            close = closing.get(first)
            if close is not None:
                return text[first + 1 : close]
        elif text.startswith(" ", pos):
            match = _BRACELESS.match(text, pos)
            if match:
                return match.group(1)
        # an unclosed or malformed box: look further back
    return None


def final_answer_text(solution_str: str) -> str | None:
    """The part of a response that holds the final answer (after ``</think>`` if present)."""
    if "</think>" in solution_str:
        return solution_str.rsplit("</think>", 1)[1]
    if "<think>" in solution_str:
        return None  # reasoning never finished: the response was cut off
    return solution_str


# Unicode vulgar fractions and the (numerator, denominator) each stands for.
_VULGAR_FRACTIONS: dict[str, tuple[int, int]] = {
    "¼": (1, 4), "½": (1, 2), "¾": (3, 4), "⅐": (1, 7), "⅑": (1, 9), "⅒": (1, 10),
    "⅓": (1, 3), "⅔": (2, 3), "⅕": (1, 5), "⅖": (2, 5), "⅗": (3, 5), "⅘": (4, 5),
    "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8),
}  # fmt: skip
_VULGAR = "".join(_VULGAR_FRACTIONS)
_MIXED_NUMBER = re.compile(rf"(?<![\d.,])(\d+)[ \t]?([{_VULGAR}])")
_LONE_FRACTION = re.compile(rf"[{_VULGAR}]")
# A mixed number with a longer whole part is written as a sum instead of one fraction: the whole part
# is never converted to an int (int() refuses more than 4300 digits, and the work would grow with it).
_MAX_WHOLE_DIGITS = 30


def unicode_fractions_to_latex(text: str) -> str:
    """``text`` with Unicode vulgar fractions as LaTeX: ``½`` -> ``\\frac{1}{2}``, ``2½`` -> ``\\frac{5}{2}``.

    A run of digits right before the fraction (optionally one space apart) is its whole part, as
    in a mixed number; a whole part of more than 30 digits gives the sum ``{W+\\frac{n}{d}}`` (the
    same value) rather than one fraction.
    """
    if not _LONE_FRACTION.search(text):
        return text

    def mixed(match: re.Match) -> str:
        whole = match.group(1)
        numerator, denominator = _VULGAR_FRACTIONS[match.group(2)]
        if len(whole) > _MAX_WHOLE_DIGITS:
            return f"{{{whole}+\\frac{{{numerator}}}{{{denominator}}}}}"
        value = int(whole) + Fraction(numerator, denominator)
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"

    def lone(match: re.Match) -> str:
        numerator, denominator = _VULGAR_FRACTIONS[match.group()]
        return f"\\frac{{{numerator}}}{{{denominator}}}"

    return _LONE_FRACTION.sub(lone, _MIXED_NUMBER.sub(mixed, text))


# ----------------------------------------------------------------------------------------------
# Readings decided here, applied to both sides before any comparison (math-verify's own differ)

_TEXT_COMMAND = r"\\(?:text|textrm|mathrm|mbox)"
# \mathrm{i}, \text{e}: the ISO way to write the imaginary unit and Euler's number. math-verify takes
# them for units and drops them (5\mathrm{i} = 5, 3+4\mathrm{i} = 7).
_UPRIGHT_CONSTANT = re.compile(_TEXT_COMMAND + r"\{\s*([ie])\s*\}")
# 3\text{ million}: math-verify drops the word as a unit (= 3). It is the number times 10^6.
_SCALE_POWERS = {"hundred": 2, "thousand": 3, "million": 6, "billion": 9, "trillion": 12}
_SCALE_WORD = re.compile(
    rf"(?<=\d)(?:\s|\\[,;: ])*{_TEXT_COMMAND}\{{\s*({'|'.join(_SCALE_POWERS)})s?(?![a-zA-Z])([^{{}}]*)\}}",
    re.IGNORECASE,
)
# 1\,000 and 1 000 (digits grouped by threes with a thin space, a space or {,}; not after a letter, a
# digit, "." or "^"): math-verify reads 1\,000 as 1*0 = 0.
_DIGIT_GROUPS = re.compile(r"(?<![\w.^])([1-9]\d{0,2})((?:(?:\\,|\\ |~|\{,\}| )\d{3})+)(?!\d)")
_GROUP_SEPARATOR = re.compile(r"\\,|\\ |~|\{,\}| ")
# \text{ } is a space: math-verify drops it, joining the digits around it (1\text{ }2 = 12).
_BLANK_TEXT = re.compile(_TEXT_COMMAND + r"\{\s+\}")


def _scale(match: re.Match) -> str:
    rest = match.group(2).strip()
    power = _SCALE_POWERS[match.group(1).lower()]
    return f"\\times10^{{{power}}}" + (f"\\text{{ {rest}}}" if rest else "")


def _read_notation(answer: str) -> str:
    """``answer`` with the notations whose reading this module decides rewritten to plain forms:
    Unicode fractions, a blank ``\\text{ }``, upright ``i`` / ``e``, scale words after a number, digits
    grouped by spaces."""
    s = unicode_fractions_to_latex(answer)
    s = _BLANK_TEXT.sub(" ", s)
    s = _UPRIGHT_CONSTANT.sub(r"\1", s)
    s = _SCALE_WORD.sub(_scale, s)
    return _DIGIT_GROUPS.sub(lambda m: m.group(1) + _GROUP_SEPARATOR.sub("", m.group(2)), s)


# ----------------------------------------------------------------------------------------------
# The string pre-filter (and the fallback without math-verify)
#
# It may say "equal" only when the two strings are the same after a normalisation that cannot merge
# different values, or are the same exact rational number. Anything else is "not sure": the caller
# asks math-verify. Every regex below runs in linear time, and answers longer than
# _PREFILTER_MAX_CHARS are not pre-filtered at all (nor rewritten: math-verify's worker does that,
# under the deadline), so the pre-filter's work (which holds the GIL in the caller's thread,
# outside any deadline) stays within a millisecond or two.

_PREFILTER_MAX_CHARS = 1000
_FRAC_VARIANT = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_DELIMITER_SIZE = re.compile(r"\\(?:left|right)(?![a-zA-Z])\.?")
_DEGREES = re.compile(r"\^(?:\\circ|\{\\circ\})")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|~")
_WHITESPACE = re.compile(r"\s+")
# a space stays only between two characters of a number ("5 6", "1 .5"): elsewhere it is layout
_SPACE_OUTSIDE_NUMBERS = re.compile(r" (?![\d.])|(?<![\d.]) ")
# a unit after a plain number, as the last thing in the answer: 5\text{ cm}, 12\text{ cm}^2
_TRAILING_TEXT = re.compile(_TEXT_COMMAND + r"\{([^{}]*)\}(\^(?:[23]|\{[23]\}))?$")
_UNIT_WORDS = frozenset(
    """
    mm cm dm m km in inch inches ft foot feet yd yard yards mi mile miles meter meters metre metres
    millimeter millimeters centimeter centimeters kilometer kilometers square sq cubic units unit
    mg g kg gram grams kilogram kilograms lb lbs pound pounds oz ounce ounces ton tons
    ml mL l L liter liters litre litres gallon gallons
    s sec secs second seconds min mins minute minutes h hr hrs hour hours day days week weeks month
    months year years
    dollar dollars cent cents degree degrees deg radian radians mph kph per
    """.split()
)
_WHOLE_TEXT = re.compile(r"\\text(?:rm|bf)?\{([^{}]*)\}")
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?")
_SIGNED = re.compile(r"([+-]?)(.*)", re.DOTALL)
_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SLASH_FRACTION = re.compile(r"(\d+)/(\d+)")
# \frac{12}{5} or \frac12 (one-digit arguments need no braces)
_LATEX_FRACTION = re.compile(r"\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))")


def _strip_math_delimiters(s: str) -> str:
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$" and s[-2] != "\\":
        s = s[1:-1].strip()
    return s


def _normalise(answer: str) -> tuple[str, str]:
    """``(answer, its unit)`` in a form where two answers that differ only in layout are the same strings.

    Every step keeps the value: ``\\dfrac`` is ``\\frac``, ``\\left(`` is ``(``, ``^\\circ`` (degrees)
    goes, ``\\%`` is ``%``, spacing commands are spaces, and spaces go except between two characters
    of a number (``5 6`` stays apart from ``56``); commas grouping a number's digits by threes go (``1,000`` is
    ``1000``); a whole answer in ``\\text{}`` is its text. A unit after a plain number (``5\\text{ cm}``)
    is split off: it is the second item (else "").
    """
    s = _strip_math_delimiters(answer.strip()).replace("\u2212", "-")
    s = _FRAC_VARIANT.sub(r"\\frac", s)
    s = _DELIMITER_SIZE.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "%")
    whole_text = _WHOLE_TEXT.fullmatch(s)
    if whole_text:
        s = whole_text.group(1)
    s = _WHITESPACE.sub(" ", _SPACING.sub(" ", s)).strip()
    trailing = _TRAILING_TEXT.search(s)
    if trailing:
        words = trailing.group(1).split()
        number = _compact(s[: trailing.start()])
        if words and all(w in _UNIT_WORDS for w in words) and _as_number(number) is not None:
            return number, " ".join(words) + (trailing.group(2) or "")
    s = _compact(s)
    if len(s) > 1 and s.endswith(".") and s[-2] not in ".\\":
        s = _compact(s[:-1])  # the full stop of a sentence: "5." is 5
    return s, ""


def _compact(s: str) -> str:
    """``s`` without spaces outside numbers, and without the commas of ``1,000``-style digit groups."""
    s = _SPACE_OUTSIDE_NUMBERS.sub("", s)
    return s.replace(",", "") if _THOUSANDS.fullmatch(s) else s


def _as_number(s: str) -> Fraction | None:
    """The exact value of ``s`` when it is a plain number: an integer, a decimal, ``a/b`` or ``\\frac{a}{b}``."""
    sign, body = _SIGNED.fullmatch(s).groups()
    try:
        if _DECIMAL.fullmatch(body):
            value = Fraction(body)
        elif latex := _LATEX_FRACTION.fullmatch(body):
            value = Fraction(int(latex.group(1) or latex.group(2)), int(latex.group(3) or latex.group(4)))
        elif slash := _SLASH_FRACTION.fullmatch(body):
            value = Fraction(int(slash.group(1)), int(slash.group(2)))
        else:
            return None
    except (ValueError, ZeroDivisionError):  # ValueError: more digits than int() reads
        return None
    return -value if sign == "-" else value


def _simple_match(gold: str, pred: str) -> bool:
    """True when ``pred`` certainly equals ``gold`` (see the section comment); False when not sure.

    A unit on one side only is ignored (ground truths usually omit it); two different units are
    "not sure".
    """
    if len(gold) > _PREFILTER_MAX_CHARS or len(pred) > _PREFILTER_MAX_CHARS:
        return False
    gold, pred = _read_notation(gold), _read_notation(pred)
    if len(gold) > _PREFILTER_MAX_CHARS or len(pred) > _PREFILTER_MAX_CHARS:
        return False
    (g, g_unit), (p, p_unit) = _normalise(gold), _normalise(pred)
    if not p or (g_unit and p_unit and g_unit != p_unit):
        return False
    if g == p:
        return True
    gn, pn = _as_number(g), _as_number(p)
    return gn is not None and pn is not None and gn == pn


# ----------------------------------------------------------------------------------------------
# math-verify comparison, in worker processes with one deadline per answer


class CheckerUnavailable(RuntimeError):
    """No math-verify worker process can be started (math-verify fails to import, or the pool is shut down)."""


class _Deadline(BaseException):
    """Raised by the SIGALRM handler when an answer's deadline passes.

    A BaseException of its own, so that neither math-verify's nor sympy's ``except Exception``
    (nor math-verify's own ``TimeoutException`` handlers) swallow it.
    """


def _verify_answer(gold: str, pred: str) -> bool:
    """math-verify's verdict on ``pred`` against ``gold`` (read as :func:`_read_notation` says), with
    math-verify's own timeouts off.

    The caller bounds the whole call (the rewriting, two parses and the comparison) with one deadline.
    """
    from math_verify import LatexExtractionConfig, parse, verify

    gold, pred = _read_notation(gold), _read_notation(pred)
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=None)
    if not gold_parsed:
        return False
    pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=None)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _call_with_deadline(fn: Callable[..., Any], args: tuple, timeout: float) -> tuple[str, Any]:
    """``fn(*args)`` bounded by a SIGALRM deadline (main thread only).

    Returns ``("ok", result)``, ``("timeout", None)`` or ``("error", message)``.
    """

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Deadline()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return "ok", fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        return "timeout", None
    except Exception as err:  # noqa: BLE001 - reported to the caller, which logs it
        return "error", f"{type(err).__name__}: {err}"
    finally:
        signal.signal(signal.SIGALRM, previous)


# Checks a new worker runs before it takes tasks: sympy imports much of itself lazily, so the first
# polynomial, interval or tuple comparison in a process costs up to a second or two, which must not
# count against a real answer's deadline.
_WARM_UP = (
    ("x^2+2x+1", "(x+1)^2"),
    ("[1,2)", "(1,2)"),
    (r"(3,\frac{\pi}{2})", r"\left(3,\frac{\pi}{2}\right)"),
    (r"2\sqrt{3}", r"\sqrt{12}"),
    (r"\log_2 8", "3"),
)


def _worker_main(read_fd: int, write_fd: int) -> None:
    """Body of a checker process: import math-verify, say "ready", then run one task at a time.

    Tasks come in on ``read_fd`` and results go out on ``write_fd`` (pipes from the parent).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which kills the workers
    tasks, conn = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    # math-verify warns once that its own timeouts are off: here the deadline is ours.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        for gold, pred in _WARM_UP:
            _verify_answer(gold, pred)
    except Exception as err:  # noqa: BLE001
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if task is None:
            return
        (module, name), args, timeout = task
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            result: tuple[str, Any] = ("error", f"cannot load the task {module}.{name}: {err}")
        else:
            result = _call_with_deadline(fn, args, timeout)
        try:
            conn.send(result)
        except OSError:
            return  # the parent is gone (or gave up on this task and killed us)


# A checker process runs this with: <read fd> <write fd> <the parent's sys.path as JSON>. It is a
# plain subprocess rather than a multiprocessing one so that the parent's __main__ is never
# re-imported (a script without an `if __name__ == "__main__"` guard would run again).
_WORKER_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[3]); "
    "from verl_lambda.math.reward import _worker_main; _worker_main(int(sys.argv[1]), int(sys.argv[2]))"
)


class _Worker:
    """One checker process and the parent's ends of the two pipes to it."""

    def __init__(self) -> None:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(task_read), str(result_write), json.dumps(sys.path)],
                pass_fds=(task_read, result_write),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (task_read, task_write, result_read, result_write):
                os.close(fd)
            raise
        os.close(task_read)
        os.close(result_write)
        self.tasks = Connection(task_write, readable=False)
        self.results = Connection(result_read, writable=False)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def wait_ready(self) -> None:
        """Block until the worker has imported math-verify; RuntimeError if it cannot."""
        reason = f"did not start within {_STARTUP_TIMEOUT:.0f}s"
        try:
            if self.results.poll(_STARTUP_TIMEOUT):
                status, value = self.results.recv()
                if status == "ready":
                    return
                reason = f"failed to start: {value}"
        except (EOFError, OSError):
            self.kill()
            reason = f"exited with code {self.process.returncode} while starting"
        self.kill()
        raise CheckerUnavailable(f"verl_lambda.math.reward: a math-verify worker process {reason}")

    def kill(self) -> None:
        """Stop the process now (it may be stuck in C code that ignores signals) and reap it."""
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.tasks.close()
        self.results.close()


class _CheckerPool:
    """Worker processes that run one task each at a time, each task under its own deadline.

    A caller takes an idle worker, or starts a new one while fewer than ``max_workers`` exist, or
    waits for one to come free; its deadline starts only once a ready worker has its task. A
    worker that overruns the deadline by ``_KILL_GRACE`` is killed and not reused.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._count = 0  # workers alive or starting
        self._closed = False

    @property
    def size(self) -> int:
        """Number of worker processes alive or starting."""
        with self._cond:
            return self._count

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise CheckerUnavailable("verl_lambda.math.reward: the math-verify pool is shut down")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._count -= 1
                    worker.kill()  # reaps it and closes the pipes
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            worker = _Worker()
            worker.wait_ready()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        return worker

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                self._count -= 1
                worker.kill()
            else:
                self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def run(self, fn: Callable[..., Any], args: tuple, timeout: float) -> tuple[str, Any]:
        """``fn(*args)`` in a worker, within ``timeout`` seconds of the worker taking it.

        Returns ``("ok", result)``, ``("timeout", None)``, ``("error", message)`` (``fn`` raised) or
        ``("died", message)`` (the worker process ended before it answered; it is not reused, and the
        next task gets a new one). ``fn`` must be a module-level function (the worker imports it by
        name); ``args`` and the result must pickle. Raises :class:`CheckerUnavailable` when no worker
        can be started.
        """
        # The function goes by name: the worker imports this module as verl_lambda.math.reward even
        # when the caller loaded it under another name (verl loads a reward file path as a module).
        module = "verl_lambda.math.reward" if fn.__module__ == __name__ else fn.__module__
        worker = self._acquire()
        try:
            worker.tasks.send(((module, fn.__qualname__), args, timeout))
            if not worker.results.poll(timeout + _KILL_GRACE):
                self._discard(worker)  # stuck where its alarm cannot reach it
                return "timeout", None
            status, value = worker.results.recv()
        except (EOFError, OSError):
            self._discard(worker)
            return "died", f"the math-verify worker process died (exit code {worker.process.returncode})"
        except BaseException:
            self._discard(worker)
            raise
        self._release(worker)
        return status, value

    def shutdown(self) -> None:
        """Stop every worker; later calls to :meth:`run` raise :class:`CheckerUnavailable`."""
        if os.getpid() != self.pid:
            return  # a forked child: the workers belong to the parent
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()


_pool: _CheckerPool | None = None


def max_workers() -> int:
    """The largest number of math-verify worker processes: ``$VERL_LAMBDA_MATH_WORKERS`` or ``min(32, cpus + 4)``."""
    value = os.environ.get(WORKERS_ENV)
    if value:
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"${WORKERS_ENV} must be a whole number >= 1, got {value!r}")
        return workers
    return min(32, (os.cpu_count() or 1) + 4)


def _get_pool() -> _CheckerPool:
    global _pool
    with _state_lock:
        if _pool is None or _pool.pid != os.getpid():  # a forked child must not use its parent's pipes
            _pool = _CheckerPool(max_workers())
            atexit.register(_pool.shutdown)
        return _pool


def timeout_count() -> int:
    """How many answers in this process got no math-verify verdict within their timeout."""
    with _state_lock:
        return _timeouts


def not_scored_count() -> int:
    """How many answers in this process got no verdict at all: timed out, or the check failed (scored 0.0)."""
    with _state_lock:
        return _not_scored


def _count_not_scored(timed_out: bool = False) -> tuple[int, int]:
    """Count one answer without a verdict; returns (timeouts, answers without a verdict) so far."""
    global _timeouts, _not_scored
    with _state_lock:
        _timeouts += timed_out
        _not_scored += 1
        return _timeouts, _not_scored


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AnswerCheck(NamedTuple):
    """The verdict on one answer: whether it matches; whether there was no verdict (``not_scored``: the
    check ran out of time, or failed), and whether that was a timeout. ``match`` is False without a verdict."""

    match: bool
    timed_out: bool = False
    not_scored: bool = False


def check_settings(backend: str = "auto", timeout: float = 10) -> None:
    """Refuse (ValueError, one line) a ``backend`` or ``timeout`` of :func:`compute_score` that cannot
    work; the launcher calls it on ``reward.custom_reward_function.reward_kwargs`` before Ray starts."""
    _check_settings(backend, timeout)


def _check_settings(backend: str, timeout: float) -> None:
    if backend not in ("auto", "math_verify", "simple"):
        raise ValueError(f"backend must be 'auto', 'math_verify' or 'simple', got {backend!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    if backend == "math_verify" and not have_math_verify():
        raise ImportError("backend='math_verify' needs math-verify: pip install 'verl-lambda[math]'")


def check_answer(gold: str, pred: str, backend: str = "auto", timeout: float = 10) -> AnswerCheck:
    """Whether ``pred`` equals ``gold`` (both answer strings, without ``\\boxed``), or that there is no verdict.

    Args:
        backend: ``"math_verify"``, ``"simple"`` (normalised string / exact number comparison), or
            ``"auto"`` (math-verify when installed, else simple with a one-time warning).
        timeout: seconds allowed for the whole math-verify check of this answer (parsing both
            sides and comparing), counted from when a worker process starts on it. A timeout
            counts as no match, is counted (:func:`timeout_count`) and logged as a warning.

    A worker process that dies on the answer is replaced and the answer checked once more on
    another worker; if that one dies too, or math-verify raises, the answer has no verdict. Every
    answer without a verdict is counted (:func:`not_scored_count`) and logged. Raises ValueError
    / ImportError for bad settings and :class:`CheckerUnavailable` when no worker can start;
    nothing in ``pred`` makes it raise.
    """
    global _warned_fallback
    _check_settings(backend, timeout)
    if _simple_match(gold, pred):
        return AnswerCheck(True)
    if backend == "simple":
        return AnswerCheck(False)
    if not have_math_verify():
        if not _warned_fallback:
            logger.warning(
                "math-verify is not installed: verl_lambda.math.reward compares answers as normalised "
                "strings/numbers only (install it with pip install 'verl-lambda[math]')"
            )
            _warned_fallback = True
        return AnswerCheck(False)
    pool = _get_pool()
    status, value = pool.run(_verify_answer, (gold, pred), timeout)
    if status == "died":
        logger.warning(
            "verl_lambda.math.reward: %s while checking answer %r; checking it again on another worker",
            value, _short(pred),
        )  # fmt: skip
        status, value = pool.run(_verify_answer, (gold, pred), timeout)
    if status == "ok":
        return AnswerCheck(bool(value))
    if status == "timeout":
        timeouts, _ = _count_not_scored(timed_out=True)
        logger.warning(
            "verl_lambda.math.reward: math-verify gave no verdict within %ss on answer %r (ground truth %r); "
            "scored 0.0 as timed out (%d timeout%s in this process so far)",
            timeout, _short(pred), _short(gold), timeouts, "" if timeouts == 1 else "s",
        )  # fmt: skip
        return AnswerCheck(False, timed_out=True, not_scored=True)
    _, count = _count_not_scored()
    again = " again" if status == "died" else ""
    logger.warning(
        "verl_lambda.math.reward: no verdict on answer %r (ground truth %r): %s%s; scored 0.0 as not scored "
        "(%d answer%s without a verdict in this process so far)",
        _short(pred), _short(gold), value, again, count, "" if count == 1 else "s",
    )  # fmt: skip
    return AnswerCheck(False, not_scored=True)


def answers_match(gold: str, pred: str, backend: str = "auto", timeout: float = 10) -> bool:
    """Whether ``pred`` equals ``gold`` (both answer strings, without ``\\boxed``); see :func:`check_answer`."""
    return check_answer(gold, pred, backend=backend, timeout=timeout).match


# ----------------------------------------------------------------------------------------------
# verl entry point


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN: pandas' missing value
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else value
        if not isinstance(items, list):
            return _is_missing(items)  # a numpy scalar
        return all(_is_missing(v) for v in items)
    return False


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else value
        if not isinstance(items, list):
            return _as_text(items)
        return ", ".join(_as_text(v) for v in items if not _is_missing(v))
    return str(value).strip()


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    backend: str = "auto",
    timeout: float = 10,
    **kwargs: Any,
) -> dict[str, float]:
    """verl custom reward function: ``score`` 1.0 if the last boxed answer equals ``ground_truth``, else 0.0.

    Returns ``{"score": s, "acc": s, "timed_out": 0.0 or 1.0, "not_scored": 0.0 or 1.0}``: verl
    rewards ``score`` and logs every key per data source in validation (``acc`` keeps the
    ``val-core/<data_source>/acc/...`` metrics a plain float return gives). ``not_scored`` is 1.0
    when the answer got no verdict (its 0.0 is not a judgement that it is wrong): math-verify ran out
    of time (then ``timed_out`` is 1.0 too), its worker process died twice, or checking the answer
    raised; see :func:`check_answer`. Nothing in ``solution_str`` makes it raise.

    Args:
        data_source: dataset label (unused; every source is scored the same way).
        solution_str: the decoded response.
        ground_truth: the reference answer (string or number; a list means a multi-part answer).
            A missing one (None, NaN, empty) is a data bug and raises ValueError.
        extra_info: verl's per-sample extras (only ``index`` is read, to name a bad row).
        backend, timeout: see :func:`check_answer`; set them through
            ``reward.custom_reward_function.reward_kwargs``.
    """
    _check_settings(backend, timeout)
    if _is_missing(ground_truth):
        index = extra_info.get("index") if isinstance(extra_info, dict) else None
        row = f"row {index} of data source {data_source!r}" if index is not None else f"a {data_source!r} row"
        raise ValueError(
            f"verl_lambda.math.reward: {row} has no ground truth (reward_model.ground_truth = {ground_truth!r}); "
            "fix the data set (python -m verl_lambda.math.data drops rows without an answer)"
        )
    gold = _as_text(ground_truth)
    try:
        answer_text = final_answer_text(solution_str if isinstance(solution_str, str) else "")
        pred = last_boxed(answer_text) if answer_text is not None else None
        if pred is None or not pred.strip():
            check = AnswerCheck(False)
        else:
            check = check_answer(gold, pred.strip(), backend=backend, timeout=timeout)
    except CheckerUnavailable:
        raise  # no checker at all: not the answer's doing
    except Exception as err:  # noqa: BLE001 - nothing the model writes may make the reward raise
        _, count = _count_not_scored()
        logger.warning(
            "verl_lambda.math.reward: checking a %r response failed (%s: %s); scored 0.0 as not scored "
            "(%d answer%s without a verdict in this process so far)",
            data_source, type(err).__name__, _short(str(err)), count, "" if count == 1 else "s",
        )  # fmt: skip
        check = AnswerCheck(False, not_scored=True)
    score = 1.0 if check.match else 0.0
    return {
        "score": score,
        "acc": score,
        "timed_out": 1.0 if check.timed_out else 0.0,
        "not_scored": 1.0 if check.not_scored else 0.0,
    }
