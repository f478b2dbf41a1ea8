"""The boxed-answer reward: extraction, math-verify equivalence, the fallback, verl's calling convention."""

import threading

import pytest

from verl_lambda import math_reward
from verl_lambda.math_reward import compute_score, final_answer_text, last_boxed

needs_math_verify = pytest.mark.skipif(not math_reward.have_math_verify(), reason="math-verify is not installed")


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
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


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


# (response, ground truth, expected score): each pair was checked by hand.
TRICKY = [
    # fractions
    (r"The answer is $\boxed{\dfrac{1}{2}}$.", r"\frac{1}{2}", 1.0),
    (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
    (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 0.0),
    (r"\boxed{-\frac{3}{4}}", "-0.75", 1.0),
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
    assert compute_score("math500", response, truth, backend="math_verify") == expected


@needs_math_verify
def test_auto_backend_uses_math_verify():
    # only a symbolic checker sees these as equal
    assert compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1") == 1.0


@pytest.mark.parametrize(
    "response, truth, expected",
    [
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{1/2}", "0.5", 1.0),
        (r"\boxed{5\text{ cm}}", "5", 1.0),
        (r"\boxed{90^{\circ}}", "90", 1.0),
        (r"\boxed{1,000}", "1000", 1.0),
        (r"\boxed{\left(1,2\right)}", "(1, 2)", 1.0),
        (r"\boxed{3} and \boxed{5}", "5", 1.0),
        (r"\boxed{8}", "7", 0.0),
        ("no box 5", "5", 0.0),
        # the fallback's known limit: no symbolic rewriting
        (r"\boxed{(x+1)^2}", "x^2+2x+1", 0.0),
    ],
)
def test_simple_fallback(response, truth, expected):
    assert compute_score("math", response, truth, backend="simple") == expected


def test_fallback_without_math_verify_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(math_reward, "have_math_verify", lambda: False)
    monkeypatch.setattr(math_reward, "_warned_fallback", False)
    with caplog.at_level("WARNING", logger="verl_lambda.math_reward"):
        assert compute_score("math", r"\boxed{0.5}", r"\frac{1}{2}") == 1.0
        assert compute_score("math", r"\boxed{(x+1)^2}", "x^2+2x+1") == 0.0
        assert compute_score("math", r"\boxed{2x}", "x+x") == 0.0
    warnings = [r for r in caplog.records if "math-verify is not installed" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(ImportError, match="verl-lambda\\[math\\]"):
        compute_score("math", r"\boxed{2x}", "x+x", backend="math_verify")


def test_bad_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        compute_score("math", r"\boxed{2}", "3", backend="sympy")


@pytest.mark.parametrize("truth, response", [(27.0, r"\boxed{27}"), (["3", "5"], r"\boxed{3, 5}"), (9, r"\boxed{9}")])
def test_non_string_ground_truths(truth, response):
    assert compute_score("amc23", response, truth, backend="simple" if not isinstance(truth, list) else "auto") == 1.0


@needs_math_verify
def test_scores_from_a_worker_thread():
    """verl calls reward functions from executor threads, where math-verify's signal timeout cannot run."""
    results = {}

    def worker():
        results["score"] = compute_score("aime24", r"\boxed{\frac{\sqrt{2}}{2}}", r"\sqrt{2}/2")
        results["wrong"] = compute_score("aime24", r"\boxed{\frac{\sqrt{3}}{2}}", r"\sqrt{2}/2")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=120)
    assert results == {"score": 1.0, "wrong": 0.0}


def test_loaded_the_way_verl_loads_custom_reward_functions():
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": "pkg://verl_lambda.math_reward", "name": "compute_score",
                                               "reward_kwargs": {"backend": "simple"}}}}
    )
    fn = get_custom_reward_fn(config)
    # the keyword call verl's NaiveRewardManager makes
    score = fn(data_source="gsm8k", solution_str=r"so \boxed{1,236}", ground_truth="1236", extra_info={"num_turns": 1})
    assert score == 1.0
    assert fn(data_source="gsm8k", solution_str=r"so \boxed{1235}", ground_truth="1236", extra_info=None) == 0.0
