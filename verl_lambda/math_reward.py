"""Rule-based reward for boxed math answers, as a verl custom reward function.

A response scores 1.0 when the content of its **last** ``\\boxed{...}`` is mathematically equal to
the ground truth, else 0.0. No box, an empty box, or a reasoning block that never closes
(``<think>`` without ``</think>``, i.e. a response cut at the length limit) score 0.0. When the
response has a ``</think>``, only the text after it is read, so a box inside the reasoning does
not count.

Equality is decided by `math-verify <https://github.com/huggingface/Math-Verify>`_ (fractions,
decimals, LaTeX forms, units, sets, intervals, symbolic expressions). Without it (``pip install
'verl-lambda[math]'``) the reward falls back to a normalised string / number comparison and logs
a warning once: the fallback accepts ``\\dfrac{1}{2}`` = ``0.5`` = ``1/2`` or ``5\\text{ cm}`` = ``5`` but
not symbolic rewrites such as ``(x+1)^2`` = ``x^2+2x+1``.

Use it in a verl run with::

    reward.custom_reward_function.path=pkg://verl_lambda.math_reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import multiprocessing
import re
import threading
from fractions import Fraction
from typing import Any, Optional

__all__ = ["compute_score", "last_boxed", "final_answer_text", "answers_match", "have_math_verify"]

logger = logging.getLogger(__name__)

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_warned_fallback = False
_pool: Optional[concurrent.futures.ProcessPoolExecutor] = None
_pool_lock = threading.Lock()


def have_math_verify() -> bool:
    """True when the ``math_verify`` package can be imported."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        return False
    return True


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    Also reads the brace-less form ``\\boxed 5``. Returns None when there is no complete box.
    """
    if not text:
        return None
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    while start >= 0:
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        pos = start + len(cmd)
        rest = text[pos:]
        if rest.startswith(" ") and not rest.lstrip().startswith("{"):
            match = re.match(r"\s+([^\s$]+)", rest)
            if match:
                return match.group(1)
        elif rest.lstrip().startswith("{"):
            pos += len(rest) - len(rest.lstrip()) + 1
            depth = 1
            for i in range(pos, len(text)):
                if text[i] == "{":
                    depth += 1
                elif text[i] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[pos:i]
        # an unclosed or malformed box: look further back
        start = max(text.rfind(cmd, 0, start) for cmd in _BOX_COMMANDS)
    return None


def final_answer_text(solution_str: str) -> Optional[str]:
    """The part of a response that holds the final answer (after ``</think>`` if present)."""
    if "</think>" in solution_str:
        return solution_str.rsplit("</think>", 1)[1]
    if "<think>" in solution_str:
        return None  # reasoning never finished: the response was cut off
    return solution_str


# ----------------------------------------------------------------------------------------------
# Fallback comparison (no math-verify)

_UNIT_TEXT = re.compile(r"\\(?:text|textrm|mathrm|mbox|textbf|mathbf)\{\s*[a-zA-Z][a-zA-Z .]*\}(\^\{?\d\}?)?")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def _normalise(answer: str) -> str:
    s = answer.strip().strip("$").strip()
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    s = _UNIT_TEXT.sub("", s)
    s = _SPACING.sub("", s)
    s = re.sub(r"\\text\{\s*(.*?)\s*\}", r"\1", s)
    s = s.replace(" ", "").rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _as_number(s: str) -> Optional[Fraction]:
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    frac = re.fullmatch(r"\\frac\{?(\d+)\}?\{?(\d+)\}?", s) or re.fullmatch(r"(\d+)/(\d+)", s)
    try:
        if frac:
            return sign * Fraction(int(frac.group(1)), int(frac.group(2)))
        if re.fullmatch(r"\d+(\.\d*)?|\.\d+", s):
            return sign * Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _simple_match(gold: str, pred: str) -> bool:
    g, p = _normalise(gold), _normalise(pred)
    if not p:
        return False
    if g == p:
        return True
    gn, pn = _as_number(g), _as_number(p)
    if gn is None or pn is None:
        return False
    return abs(gn - pn) <= Fraction(1, 10**6) * max(1, abs(gn))


# ----------------------------------------------------------------------------------------------
# math-verify comparison

def _math_verify_match(gold: str, pred: str, timeout: Optional[int]) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=timeout)
    pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=config, parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def _get_pool() -> concurrent.futures.ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.shutdown, wait=True, cancel_futures=True)
        return _pool


def answers_match(gold: str, pred: str, backend: str = "auto", timeout: int = 10) -> bool:
    """Whether ``pred`` equals ``gold`` (both answer strings, without ``\\boxed``).

    Args:
        backend: ``"math_verify"``, ``"simple"`` (normalised string / number comparison), or
            ``"auto"`` (math-verify when installed, else simple with a one-time warning).
        timeout: seconds allowed for one math-verify comparison; a timeout counts as no match.
    """
    global _warned_fallback
    if backend not in ("auto", "math_verify", "simple"):
        raise ValueError(f"backend must be 'auto', 'math_verify' or 'simple', got {backend!r}")
    if _simple_match(gold, pred):
        return True
    if backend == "simple":
        return False
    if not have_math_verify():
        if backend == "math_verify":
            raise ImportError("backend='math_verify' needs math-verify: pip install 'verl-lambda[math]'")
        if not _warned_fallback:
            logger.warning(
                "math-verify is not installed: verl_lambda.math_reward compares answers as normalised "
                "strings/numbers only (install it with pip install 'verl-lambda[math]')"
            )
            _warned_fallback = True
        return False
    if threading.current_thread() is threading.main_thread():
        # math-verify's own timeout uses signal.alarm, which only works in the main thread.
        return _math_verify_match(gold, pred, timeout)
    # verl calls reward functions from worker threads: run the check in a process with a deadline.
    future = _get_pool().submit(_math_verify_match, gold, pred, timeout)
    try:
        return future.result(timeout=timeout + 5)
    except concurrent.futures.TimeoutError:
        return False


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else value
        return ", ".join(_as_text(v) for v in items)
    return str(value).strip()


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Optional[dict] = None,
    backend: str = "auto",
    timeout: int = 10,
    **kwargs: Any,
) -> float:
    """verl custom reward function: 1.0 if the last boxed answer equals ``ground_truth``, else 0.0.

    Args:
        data_source: dataset label (unused; every source is scored the same way).
        solution_str: the decoded response.
        ground_truth: the reference answer (string or number; a list means a multi-part answer).
        extra_info: verl's per-sample extras (unused).
        backend, timeout: see :func:`answers_match`; set them through
            ``reward.custom_reward_function.reward_kwargs``.
    """
    answer_text = final_answer_text(solution_str or "")
    if answer_text is None:
        return 0.0
    pred = last_boxed(answer_text)
    if pred is None or not pred.strip():
        return 0.0
    gold = _as_text(ground_truth)
    if not gold:
        return 0.0
    return 1.0 if answers_match(gold, pred.strip(), backend=backend, timeout=timeout) else 0.0
