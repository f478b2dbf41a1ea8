"""The boxed-answer reward: extraction, math-verify equivalence, the fallback, verl's calling convention,
the checker pool under concurrency and timeouts."""

import logging
import math
import os
import signal
import threading
import time
import unicodedata
from fractions import Fraction
from pathlib import Path

import pytest

from verl_lambda.math import reward as math_reward
from verl_lambda.math.reward import compute_score, final_answer_text, last_boxed

FIXTURES = Path(__file__).resolve().parent / "fixtures"
needs_math_verify = pytest.mark.skipif(not math_reward.have_math_verify(), reason="math-verify is not installed")

# Answers math-verify cannot settle quickly: comparing them to "5" runs until the deadline.
SLOW_ANSWERS = [r"\boxed{9^{9^{9^9}}}", r"\boxed{9^{9^{9^{9}}}+1}", r"\boxed{8^{8^{8^8}}}", r"\boxed{7^{7^{7^{7}}}}"]


def score(*args, **kwargs) -> float:
    """The ``score`` of :func:`compute_score`."""
    return compute_score(*args, **kwargs)["score"]


@pytest.fixture
def fresh_pool(monkeypatch):
    """Yields a function ``make(max_workers)`` that gives compute_score a new checker pool of that size."""

    def make(max_workers: int):
        monkeypatch.setenv(math_reward.WORKERS_ENV, str(max_workers))
        monkeypatch.setattr(math_reward, "_pool", None)

    yield make
    pool = math_reward._pool
    if pool is not None:
        pool.shutdown()


def run_threads(calls):
    """Run each ``fn()`` of ``calls`` in its own thread at once; returns ([(result, seconds)], wall seconds)."""
    out = [None] * len(calls)

    def work(i, fn):
        start = time.perf_counter()
        result = fn()
        out[i] = (result, time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(i, fn)) for i, fn in enumerate(calls)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so $\boxed{42}$.", "42"),
        (r"nested \boxed{\frac{1}{\sqrt{3}}} done", r"\frac{1}{\sqrt{3}}"),
        (r"first \boxed{3}, finally \boxed{5}", "5"),
        (r"\fbox{7}", "7"),
        (r"brace-less \boxed 9$", "9"),
        (r"complete \boxed{3} then a cut-off \boxed{5", "3"),
        (r"\boxed{}", ""),
        ("no box at all: 5", None),
        ("", None),
        (r"\boxed {4}", "4"),
        (r"\boxed{\boxed{3}}", "3"),
        (r"outer \boxed{x \boxed{y} never closed", "y"),
        (r"\boxed{1} \boxed", "1"),
        (r"\boxed{2} \boxed $", "2"),
        (r"} \boxed{a{b}c} }", "a{b}c"),
        (r"\boxed{1} \fbox{2} \boxed{3", "2"),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


MEGABYTE = 1_000_000
HALF = MEGABYTE // 2
# name -> (an adversarial text of about 1 MB, the last complete box in it)
ADVERSARIAL = {
    "unclosed boxed loop": (r"\boxed{42} " + "\\boxed{" * (MEGABYTE // 7), "42"),
    "unclosed fbox loop": (r"\fbox{7} " + "\\fbox{" * (MEGABYTE // 6), "7"),
    "deep nesting": (r"\boxed{" + "{" * HALF + "x" + "}" * HALF + "}", "{" * HALF + "x" + "}" * HALF),
    "unclosed deep nesting": (r"\boxed{3} \boxed{" + "{" * MEGABYTE, "3"),
    "mixed loop": (r"\boxed{5} " + "\\boxed{\\fbox{ {\\boxed{" * (MEGABYTE // 22), "5"),
    "many closed boxes": (r"\boxed{1}" * (MEGABYTE // 9) + r"\boxed{2}", "2"),
    "braces, no box": ("{}" * HALF, None),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_last_boxed_is_linear_on_adversarial_megabyte_inputs(name):
    text, expected = ADVERSARIAL[name]
    start = time.perf_counter()
    result = last_boxed(text)
    elapsed = time.perf_counter() - start
    assert result == expected
    assert elapsed < 2.0, f"{name}: {elapsed:.2f}s for {len(text)} characters"


def test_scoring_a_megabyte_repetition_loop_is_fast():
    response = r"The answer is \boxed{12}. " + "\\boxed{" * (MEGABYTE // 7)
    start = time.perf_counter()
    assert score("math", response, "12", backend="simple") == 1.0
    assert time.perf_counter() - start < 2.0


def test_simple_number_check_is_linear():
    # one long run of digits after \frac used to backtrack quadratically in the fallback's number parser
    response = r"\boxed{\frac" + "1" * 50_000 + "x}"
    start = time.perf_counter()
    assert score("math", response, "1", backend="simple") == 0.0
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "response, expected",
    [
        ("<think>try 4</think> The answer is 5", " The answer is 5"),
        ("reasoning without tags", "reasoning without tags"),
        ("<think> cut off at the length limit", None),
        ("continuation of a template-opened block</think>final", "final"),
    ],
)
def test_final_answer_text(response, expected):
    assert final_answer_text(response) == expected


# ---------------------------------------------------------------------------------------------- equivalence

# (response, ground truth, expected score): each pair was checked by hand.
TRICKY = [
    # fractions
    (r"The answer is $\boxed{\dfrac{1}{2}}$.", r"\frac{1}{2}", 1.0),
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 0.0),
    (r"\boxed{-\frac{3}{4}}", "-0.75", 1.0),
    # unicode fractions
    (r"\boxed{½}", "1/2", 1.0),
    (r"\boxed{2½}", "5/2", 1.0),
    (r"\boxed{2½}", "2.5", 1.0),
    (r"\boxed{-1¾}", r"-\frac{7}{4}", 1.0),
    (r"\boxed{⅓}", r"\frac{1}{3}", 1.0),
    (r"\boxed{\frac{3}{8}}", "⅜", 1.0),
    (r"\boxed{½}", "1/3", 0.0),
    # LaTeX forms
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2", 1.0),
    (r"\boxed{\frac{1}{\sqrt{3}}}", r"\frac{\sqrt{3}}{3}", 1.0),
    (r"\boxed{\sqrt{12}}", r"2\sqrt{3}", 1.0),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", 1.0),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"(3,\frac{\pi}{2})", 1.0),
    (r"\boxed{[1,2)}", "[1, 2)", 1.0),
    (r"\boxed{(1,2)}", "[1, 2)", 0.0),
    (r"\boxed{5, 3}", "3, 5", 1.0),
    # units and decorations
    (r"\boxed{5\text{ cm}}", "5", 1.0),
    (r"\boxed{12\text{ cm}^2}", "12", 1.0),
    (r"\boxed{90^\circ}", "90", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{30\%}", "30", 0.0),
    # multiple boxes: the last one is the answer
    (r"First guess \boxed{3}; checking again, \boxed{5}.", "5", 1.0),
    (r"First guess \boxed{3}; checking again, \boxed{5}.", "3", 0.0),
    # no box / empty box / unfinished reasoning
    ("The answer is 5.", "5", 0.0),
    (r"\boxed{}", "5", 0.0),
    (r"<think> \boxed{4} </think> so the answer is \boxed{5}", "5", 1.0),
    (r"<think> \boxed{4} </think> so the answer is \boxed{5}", "4", 0.0),
    (r"<think> long reasoning \boxed{5}", "5", 0.0),
    # wrong answers
    (r"\boxed{8}", "7", 0.0),
    (r"\boxed{3}", "-3", 0.0),
]


@needs_math_verify
@pytest.mark.parametrize("response, truth, expected", TRICKY)
def test_tricky_answers_with_math_verify(response, truth, expected):
    assert score("math500", response, truth, backend="math_verify") == expected


@needs_math_verify
def test_auto_backend_uses_math_verify():
    # only a symbolic checker sees these as equal
    assert score("math", r"\boxed{(x+1)^2}", "x^2+2x+1") == 1.0


@pytest.mark.parametrize(
    "response, truth, expected",
    [
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{1/2}", "0.5", 1.0),
        (r"\boxed{\frac12}", "0.5", 1.0),
        (r"\boxed{\frac{12}{5}}", "2.4", 1.0),
        (r"\boxed{\frac123}", "4", 0.0),  # \frac123 is (1/2)3, not 12/3
        (r"\boxed{5\text{ cm}}", "5", 1.0),
        (r"\boxed{90^{\circ}}", "90", 1.0),
        (r"\boxed{1,000}", "1000", 1.0),
        (r"\boxed{\left(1,2\right)}", "(1, 2)", 1.0),
        (r"\boxed{3} and \boxed{5}", "5", 1.0),
        (r"\boxed{8}", "7", 0.0),
        ("no box 5", "5", 0.0),
        (r"\boxed{½}", "1/2", 1.0),
        (r"\boxed{½}", "0.5", 1.0),
        (r"\boxed{2½}", "5/2", 1.0),
        (r"\boxed{2 ½}", "2.5", 1.0),
        (r"\boxed{0.75}", "¾", 1.0),
        # the fallback's known limit: no symbolic rewriting
        (r"\boxed{(x+1)^2}", "x^2+2x+1", 0.0),
    ],
)
def test_simple_fallback(response, truth, expected):
    assert score("math", response, truth, backend="simple") == expected


# (answer, ground truth) pairs that differ, each by a little: all must score 0, with math-verify and without.
# Each one's difference is written next to it; none may be called equal by the string pre-filter.
NEAR_MISSES = [
    ("1000001", "1000000"),  # off by one in the last digit
    ("1000000", "1000001"),
    ("999999", "1000000"),
    ("0", "0.000001"),  # tiny decimals: 1e-6 apart
    ("0.000001", "0"),
    ("0", r"\frac{1}{1000000}"),
    ("1.0000001", "1"),
    ("1000000.5", "1000000"),
    (r"\frac{1}{1000001}", r"\frac{1}{1000000}"),
    ("12345678901234567", "12345678901234568"),  # the same float64, different integers
    ("9007199254740993", "9007199254740992"),  # 2**53 + 1 and 2**53
    ("99999999999999999999", "100000000000000000000"),
    (r"5\text{ or }6", "56"),  # text joined to digits: two answers, not 56
    (r"5\text{ and }6", "56"),
    (r"1\text{ }2", "12"),  # a blank \text is a space, and 1 2 is not 12
    ("5 6", "56"),
    (r"5\,6", "56"),
    ("1,000", "1"),
    ("0,5", "5"),
    (r"1\,000", "0"),  # one thousand (math-verify alone reads 1\,000 as 1*0)
    ("1 000", "0"),
    (r"3\text{ million}", "3"),  # three million (math-verify alone drops the word as a unit)
    (r"2\text{ thousand}", "2"),
    (r"5\mathrm{i}", "5"),  # 5i, the imaginary number (math-verify alone drops \mathrm{i} as a unit)
    (r"3+4\mathrm{i}", "7"),
    (r"10\%", "10"),  # a percentage is neither the bare number nor its fraction (see the module docstring)
    (r"10\%", "0.1"),
    (r"\leftarrow", r"\rightarrow"),  # \left and \right go only as delimiter sizes
]

# (answer, ground truth) pairs that are equal and that the pre-filter alone (backend="simple") must see.
SIMPLE_EQUALITIES = [
    (r"\frac{1}{2}", "0.5"),
    ("0.5", r"\frac{1}{2}"),
    ("0.50", r"\frac12"),
    (r"\dfrac{3}{4}", "3/4"),
    (r"\tfrac34", "0.75"),
    ("-0.75", r"-\frac{3}{4}"),
    ("0.125", r"\frac{1}{8}"),
    ("1,000", "1000"),
    ("1000", "1,000"),
    ("1,234,567", "1234567"),
    ("1{,}000", "1000"),
    (r"1\,000", "1000"),  # digits grouped by threes with a thin space
    ("1 000 000", "1000000"),
    ("12345678901234567", "12345678901234567"),
    ("12345678901234567.0", "12345678901234567"),
    ("2.50", "2.5"),
    ("5.", "5"),  # a sentence's full stop
    ("+5", "5"),
    ("\u22123", "-3"),  # Unicode minus sign
    (r"5\text{ cm}", "5"),
    ("5", r"5\text{ cm}"),
    (r"90^\circ", "90"),
    (r"10\%", "10%"),
    (r"5\mathrm{i}", "5i"),
    (r"3+4\mathrm{i}", "3+4i"),
    (r"2\mathrm{e}", "2e"),
    (r"\text{(A)}", "(A)"),
    (r"\left(1,2\right)", "(1, 2)"),
]
# equal, but only math-verify sees it
MATH_VERIFY_EQUALITIES = [
    (r"3\text{ million}", "3000000"),
    (r"3\text{ million}", r"3\times 10^6"),
    (r"2.5\text{ billion dollars}", "2500000000"),
    ("x=5", "5"),
]


@pytest.mark.parametrize("answer, truth", NEAR_MISSES)
def test_near_misses_score_zero_without_math_verify(answer, truth):
    assert compute_score("math", rf"\boxed{{{answer}}}", truth, backend="simple")["score"] == 0.0


@needs_math_verify
@pytest.mark.parametrize("answer, truth", NEAR_MISSES)
def test_near_misses_score_zero(answer, truth):
    assert compute_score("math", rf"\boxed{{{answer}}}", truth)["score"] == 0.0


@pytest.mark.parametrize("answer, truth", SIMPLE_EQUALITIES)
def test_equal_answers_score_one_without_math_verify(answer, truth):
    assert compute_score("math", rf"\boxed{{{answer}}}", truth, backend="simple")["score"] == 1.0


@needs_math_verify
@pytest.mark.parametrize("answer, truth", SIMPLE_EQUALITIES + MATH_VERIFY_EQUALITIES)
def test_equal_answers_score_one(answer, truth):
    assert compute_score("math", rf"\boxed{{{answer}}}", truth)["score"] == 1.0


@pytest.mark.parametrize(
    "truth, answer",
    [
        (r"5\text{ cm}", r"5\text{ m}"),  # two different units
        ("0.333", r"\frac{1}{3}"),  # decimals are exact: 0.333 is not a third
        (r"\frac{1}{3}", "0.3333333"),
        ("x^2+2x+1", "(x+1)^2"),  # not a string or number question
        ("5", "5" * 2000),  # longer than the pre-filter reads
    ],
)
def test_the_prefilter_defers_what_it_is_not_sure_of(truth, answer):
    """It says "equal" only when certain; else math-verify (under its deadline) decides."""
    assert math_reward._simple_match(truth, answer) is False


def test_a_huge_mixed_number_does_not_raise():
    # int() refuses more than 4300 digits: the whole part of 5,000 digits + ½ used to raise ValueError
    response = r"\boxed{" + "7" * 5000 + "½}"
    for backend in ("simple", "auto") if math_reward.have_math_verify() else ("simple",):
        result = compute_score("math", response, "5", backend=backend)
        assert result["score"] == 0.0, backend
    assert math_reward.unicode_fractions_to_latex("1" * 40 + "½") == "{" + "1" * 40 + r"+\frac{1}{2}}"


def test_an_error_while_checking_scores_zero_and_is_counted(monkeypatch, caplog):
    """Nothing the model writes may make the reward raise: a failing check scores 0, flagged and counted."""

    def overflow(text):
        return str(int("1" * 5000))  # the ValueError the Unicode fraction reading used to raise

    monkeypatch.setattr(math_reward, "unicode_fractions_to_latex", overflow)
    before = math_reward.not_scored_count()
    with caplog.at_level(logging.WARNING, logger="verl_lambda.math.reward"):
        result = compute_score("math", r"\boxed{5}", "5", backend="simple")
    assert result == {"score": 0.0, "acc": 0.0, "timed_out": 0.0, "not_scored": 1.0}
    assert math_reward.not_scored_count() == before + 1
    assert any("ValueError" in r.getMessage() and "not scored" in r.getMessage() for r in caplog.records)


def adversarial_prefilter_inputs(length: int) -> list[str]:
    """Answers of about ``length`` characters that made the old pre-filter's regexes backtrack."""
    n = length - 20
    return [
        r"\text{" + " " * n + "a\nb}",  # cubic in the old \text{\s*(.*?)\s*} unwrapping
        r"\text{" + " " * n + "a",
        r"\mathrm{" + " " * n + "x",
        "1" + " " * n + "x",
        r"\text{" + " " * (n // 2) + "}" + " " * (n // 2) + r"\text{ cm",
        "1" + r"\,000" * (n // 5) + "0",
        r"\frac" + "1" * n + "x",
        "$" * n,
    ]


def test_the_prefilter_is_fast_up_to_its_length_cap():
    start = time.perf_counter()
    assert math_reward._PREFILTER_MAX_CHARS >= 1000  # answers up to 1,000 characters are pre-filtered
    for answer in adversarial_prefilter_inputs(1000):
        math_reward._simple_match("5", answer)
        math_reward._simple_match(answer, answer + "1")
    assert time.perf_counter() - start < 1.0  # about a millisecond; the old regexes took seconds


def test_a_long_answer_does_not_stall_other_threads():
    """The pre-filter runs in the caller's thread, outside any deadline, holding the GIL: with a
    64,000-space \\text{} it used to stall every other thread of the process for seconds."""
    # 1,500 characters: the old regexes took seconds on these (the time grew with the cube of the length)
    answers = adversarial_prefilter_inputs(1500) + [r"\text{" + " " * 64_000 + "}", r"\text{x" + " " * 64_000 + "y}"]
    answers.append("½" * 1_000_000)  # a megabyte to rewrite: not in the caller's thread
    gaps: list[float] = []
    stop = threading.Event()

    def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        start = time.perf_counter()
        for answer in answers:
            assert score("math", r"\boxed{" + answer + "}", "5", backend="simple") == 0.0
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        thread.join()
    assert max(gaps) < 1.0  # a 10 ms ticker; before the fix it stalled for seconds
    assert elapsed < 3.0


@pytest.mark.parametrize("char", list("¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"))
def test_every_unicode_fraction_reads_as_its_value(char):
    latex = math_reward.unicode_fractions_to_latex(char)
    numerator, denominator = latex.removeprefix("\\frac{").removesuffix("}").split("}{")
    assert math.isclose(int(numerator) / int(denominator), unicodedata.numeric(char))
    mixed = math_reward.unicode_fractions_to_latex("3" + char)
    numerator, denominator = mixed.removeprefix("\\frac{").removesuffix("}").split("}{")
    assert Fraction(int(numerator), int(denominator)) == 3 + Fraction(unicodedata.numeric(char)).limit_denominator(10)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x = ½", r"x = \frac{1}{2}"),
        ("2½ cups", r"\frac{5}{2} cups"),
        ("-10¾", r"-\frac{43}{4}"),
        ("½x + ⅓", r"\frac{1}{2}x + \frac{1}{3}"),
        ("no fractions 1/2", "no fractions 1/2"),
    ],
)
def test_unicode_fractions_to_latex(text, expected):
    assert math_reward.unicode_fractions_to_latex(text) == expected


def test_fallback_without_math_verify_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(math_reward, "have_math_verify", lambda: False)
    monkeypatch.setattr(math_reward, "_warned_fallback", False)
    with caplog.at_level("WARNING", logger="verl_lambda.math.reward"):
        assert score("math", r"\boxed{0.5}", r"\frac{1}{2}") == 1.0
        assert score("math", r"\boxed{(x+1)^2}", "x^2+2x+1") == 0.0
        assert score("math", r"\boxed{2x}", "x+x") == 0.0
    warnings = [r for r in caplog.records if "math-verify is not installed" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(ImportError, match="verl-lambda\\[math\\]"):
        compute_score("math", r"\boxed{2x}", "x+x", backend="math_verify")


def test_bad_backend_and_timeout_are_refused():
    with pytest.raises(ValueError, match="backend"):
        compute_score("math", r"\boxed{2}", "3", backend="sympy")
    with pytest.raises(ValueError, match="timeout"):
        compute_score("math", r"\boxed{2}", "3", timeout=0)


@pytest.mark.parametrize("truth, response", [(27.0, r"\boxed{27}"), (["3", "5"], r"\boxed{3, 5}"), (9, r"\boxed{9}")])
def test_non_string_ground_truths(truth, response):
    assert score("amc23", response, truth, backend="simple" if not isinstance(truth, list) else "auto") == 1.0


def test_numpy_ground_truths():
    np = pytest.importorskip("numpy")
    assert score("amc23", r"\boxed{9}", np.int64(9), backend="simple") == 1.0
    assert score("amc23", r"\boxed{3, 5}", np.array(["3", "5"]), backend="simple") == 1.0


@pytest.mark.parametrize("truth", [None, float("nan"), "", "   ", [], [None, ""]])
def test_a_missing_ground_truth_is_refused(truth):
    # str(None) used to become the answer "None", so that \boxed{None} scored 1.0
    with pytest.raises(ValueError) as err:
        compute_score("gsm8k", r"\boxed{None}", truth, extra_info={"index": 17}, backend="simple")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "row 17 of data source 'gsm8k' has no ground truth" in message


def test_a_missing_ground_truth_is_refused_without_extra_info():
    with pytest.raises(ValueError, match="a 'math' row has no ground truth"):
        compute_score("math", "no box", None)


# ---------------------------------------------------------------------------------------------- verl's conventions


def test_result_is_a_dict_with_score_acc_and_flags():
    right = {"score": 1.0, "acc": 1.0, "timed_out": 0.0, "not_scored": 0.0}
    wrong = {"score": 0.0, "acc": 0.0, "timed_out": 0.0, "not_scored": 0.0}
    assert compute_score("gsm8k", r"\boxed{4}", "4", backend="simple") == right
    assert compute_score("gsm8k", "no box", "4", backend="simple") == wrong


def test_result_keys_become_verl_validation_metrics():
    """verl logs every key of a dict result per data source: acc stays the core metric, timed_out is logged."""
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    results = [compute_score("aime24", r, "5", backend="simple") for r in (r"\boxed{5}", r"\boxed{4}")]
    infos = {key: [r[key] for r in results] for key in results[0]}
    metrics = process_validation_metrics(["aime24", "aime24"], ["uid0", "uid0"], infos)
    assert metrics["aime24"]["acc"]["mean@2"] == 0.5
    assert metrics["aime24"]["timed_out"]["mean@2"] == 0.0
    assert metrics["aime24"]["not_scored"]["mean@2"] == 0.0


@needs_math_verify
def test_scores_from_a_worker_thread():
    """verl calls reward functions from executor threads, where math-verify's signal timeout cannot run."""
    results = {}

    def worker():
        results["score"] = score("aime24", r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2")
        results["wrong"] = score("aime24", r"\boxed{\frac{\sqrt{3}}{2}}", r"\sqrt{2}/2")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=120)
    assert results == {"score": 1.0, "wrong": 0.0}


def test_loaded_the_way_verl_loads_custom_reward_functions():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://verl_lambda.math.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"backend": "simple"},
                }
            }
        }
    )
    fn = get_custom_reward_fn(config)
    # the keyword call verl's reward managers make
    result = fn(data_source="gsm8k", solution_str=r"so \boxed{1,236}", ground_truth="1236", extra_info={"num_turns": 1})
    assert result["score"] == 1.0
    assert (
        fn(data_source="gsm8k", solution_str=r"so \boxed{1235}", ground_truth="1236", extra_info=None)["score"] == 0.0
    )


# ---------------------------------------------------------------------------------------------- concurrency, timeouts


@needs_math_verify
def test_slow_answers_do_not_fail_correct_ones_under_concurrency(fresh_pool, caplog):
    """8 callers at once, 4 of them with answers math-verify cannot settle: the 4 correct ones still score 1.0,
    each slow one costs one timeout (not one per parse and compare) and is flagged, and the batch ends in about
    one timeout."""
    timeout = 3
    fresh_pool(8)
    ordinary = [lambda: compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1", timeout=timeout)] * 4
    warm, _ = run_threads(ordinary * 2)  # starts the workers: start-up is not part of any answer's deadline
    assert [r["score"] for r, _ in warm] == [1.0] * 8
    before = math_reward.timeout_count()
    slow = [lambda s=s: compute_score("math", s, "5", timeout=timeout) for s in SLOW_ANSWERS]
    with caplog.at_level(logging.WARNING, logger="verl_lambda.math.reward"):
        results, wall = run_threads(slow + ordinary)
    assert [r["score"] for r, _ in results[4:]] == [1.0] * 4
    # before the fix the correct answers queued behind the slow ones (3+ s each)
    assert all(seconds < 2.0 for _, seconds in results[4:]), results
    assert [(r["score"], r["timed_out"]) for r, _ in results[:4]] == [(0.0, 1.0)] * 4
    assert all(seconds < timeout + 1.5 for _, seconds in results[:4]), results
    assert wall < timeout + 2.5  # before the fix: two rounds of timeouts on 2 workers
    assert math_reward.timeout_count() == before + 4
    warnings = [r.getMessage() for r in caplog.records if "no verdict within 3s" in r.getMessage()]
    assert len(warnings) == 4
    assert f"({before + 4} timeouts in this process so far)" in " ".join(warnings)
    assert math_reward._pool.size <= 8


@needs_math_verify
def test_a_queued_callers_timeout_starts_when_its_check_starts(fresh_pool):
    """With one worker busy on a slow answer, a second caller waits for it; its own (shorter) timeout then
    applies to its own check only."""
    fresh_pool(1)
    assert score("math", r"\boxed{2x}", "x+x") == 1.0  # starts the worker (only math-verify sees this)
    pool = math_reward._pool
    results = {}

    def slow():
        results["slow"] = compute_score("math", SLOW_ANSWERS[0], "5", timeout=2)

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 10
    while pool._idle and time.monotonic() < deadline:  # wait until the slow check holds the worker
        time.sleep(0.01)
    start = time.perf_counter()
    results["queued"] = compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1", timeout=1)
    waited = time.perf_counter() - start
    thread.join(timeout=30)
    assert results["slow"] == {"score": 0.0, "acc": 0.0, "timed_out": 1.0, "not_scored": 1.0}
    assert results["queued"] == {"score": 1.0, "acc": 1.0, "timed_out": 0.0, "not_scored": 0.0}
    assert waited > 1.0  # it did wait for the worker, longer than its own timeout
    assert pool.size == 1


@needs_math_verify
def test_a_worker_stuck_past_its_deadline_is_killed_and_replaced():
    pool = math_reward._CheckerPool(max_workers=1)
    try:
        first_pid = pool.run(os.getpid, (), 10)[1]
        # system() waits in C with SIGALRM held off: the worker cannot honour its deadline itself
        start = time.perf_counter()
        assert pool.run(os.system, ("sleep 4",), 0.5) == ("timeout", None)
        assert time.perf_counter() - start < 0.5 + math_reward._KILL_GRACE + 1.0
        assert pool.size == 0
        status, second_pid = pool.run(os.getpid, (), 10)
        assert status == "ok" and second_pid != first_pid
        assert pool.run(math_reward._verify_answer, ("x^2+2x+1", "(x+1)^2"), 10) == ("ok", True)
    finally:
        pool.shutdown()


@needs_math_verify
def test_a_worker_that_honours_its_deadline_is_kept():
    pool = math_reward._CheckerPool(max_workers=1)
    try:
        first_pid = pool.run(os.getpid, (), 10)[1]
        start = time.perf_counter()
        assert pool.run(time.sleep, (30,), 0.5) == ("timeout", None)
        assert time.perf_counter() - start < 0.5 + math_reward._KILL_GRACE
        assert pool.run(os.getpid, (), 10) == ("ok", first_pid)
    finally:
        pool.shutdown()


@needs_math_verify
def test_a_worker_killed_mid_answer_is_replaced_and_the_answer_checked_again(fresh_pool, caplog):
    """A worker killed (SIGKILL) while it holds an answer: the answer is checked once more on a new
    worker, so a correct answer still scores 1.0; it used to score 0.0 with only a warning."""
    fresh_pool(1)
    assert score("math", r"\boxed{2x}", "x+x") == 1.0  # starts the worker (only math-verify sees this)
    pool = math_reward._pool
    victim = pool._idle[0].process
    os.kill(victim.pid, signal.SIGSTOP)  # it takes the next answer but cannot answer
    results = {}

    def check():
        results["result"] = compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1")

    with caplog.at_level(logging.WARNING, logger="verl_lambda.math.reward"):
        thread = threading.Thread(target=check)
        thread.start()
        deadline = time.monotonic() + 10
        while pool._idle and time.monotonic() < deadline:  # wait until the answer holds the worker
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(victim.pid, signal.SIGKILL)
        thread.join(timeout=120)
    assert results["result"] == {"score": 1.0, "acc": 1.0, "timed_out": 0.0, "not_scored": 0.0}
    assert victim.poll() is not None
    assert pool.size == 1 and pool._idle[0].process.pid != victim.pid  # replaced
    assert any("checking it again on another worker" in r.getMessage() for r in caplog.records)


@needs_math_verify
def test_an_answer_whose_workers_die_twice_is_not_scored(fresh_pool, monkeypatch, caplog):
    """Never counted as wrong: it scores 0.0 flagged not_scored, is counted, and the pool recovers."""
    monkeypatch.syspath_prepend(str(FIXTURES))  # before the workers start: they import the task from here
    import math_worker_faults

    fresh_pool(1)
    real = math_reward._verify_answer
    monkeypatch.setattr(math_reward, "_verify_answer", math_worker_faults.die)
    before = math_reward.not_scored_count()
    with caplog.at_level(logging.WARNING, logger="verl_lambda.math.reward"):
        result = compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1")
    assert result == {"score": 0.0, "acc": 0.0, "timed_out": 0.0, "not_scored": 1.0}
    assert math_reward.not_scored_count() == before + 1
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "died (exit code -9)" in messages and "not scored" in messages
    monkeypatch.setattr(math_reward, "_verify_answer", real)
    assert score("math", r"\boxed{(x+1)^2}", "x^2+2x+1") == 1.0  # a new worker
    assert math_reward._pool.size == 1


@needs_math_verify
def test_the_pool_is_bounded(fresh_pool):
    fresh_pool(2)
    results, _ = run_threads([lambda: score("math", r"\boxed{(x+1)^2}", "x^2+2x+1")] * 5)
    assert [r for r, _ in results] == [1.0] * 5
    assert math_reward._pool.size <= 2


def test_the_pool_size_setting_is_checked(monkeypatch):
    monkeypatch.setenv(math_reward.WORKERS_ENV, "0")
    with pytest.raises(ValueError, match=math_reward.WORKERS_ENV):
        math_reward.max_workers()
    monkeypatch.delenv(math_reward.WORKERS_ENV)
    assert 1 <= math_reward.max_workers() <= 32
