"""One table per closed choice (verl_lambda.core.choices): everything takes its words from it, and every
dispatch point refuses a word it does not know instead of computing another style."""

import dataclasses

import pytest
import torch

from verl_lambda import credit
from verl_lambda.core import choices
from verl_lambda.core.objective import token_losses
from verl_lambda.core.settings import AdvantageSettings, GRPOLambdaSettings, LossSettings, OneOf, setting_fields
from verl_lambda.core.trace import apply_trace, apply_trace_reference, trace_weights

TABLES = {
    "trace": choices.TRACE_STYLES,
    "trace_anchor": choices.TRACE_ANCHORS,
    "trace_application": choices.TRACE_APPLICATIONS,
    "trace_norm": choices.TRACE_NORMS,
}


def test_the_settings_allow_exactly_the_words_of_the_tables():
    closed = {f.name: f.metadata["allowed"] for f in setting_fields() if isinstance(f.metadata["allowed"], OneOf)}
    assert set(closed) == set(TABLES)
    for name, allowed in closed.items():
        assert allowed.values == tuple(TABLES[name])


def test_credit_draws_every_word_of_the_tables():
    assert (credit.STYLES, credit.ANCHORS, credit.APPLICATIONS) == (
        tuple(choices.TRACE_STYLES),
        tuple(choices.TRACE_ANCHORS),
        tuple(choices.TRACE_APPLICATIONS),
    )


def test_every_style_and_anchor_has_a_weighting():
    assert set(choices.WEIGHTINGS) == {(s, a) for s in choices.TRACE_STYLES for a in choices.TRACE_ANCHORS}


def _forced(**values) -> LossSettings:
    """Settings holding a word the settings themselves would refuse (as a future table entry without
    its maths would): what each dispatch point then does."""
    settings = LossSettings()
    for name, value in values.items():
        object.__setattr__(settings, name, value)
    return settings


X = torch.randn(2, 9, dtype=torch.float64)
MASK = torch.ones(2, 9, dtype=torch.bool)


@pytest.mark.parametrize("name,value", [("trace", "sideways"), ("trace_anchor", "middle"), ("trace_norm", "max")])
def test_every_trace_dispatch_refuses_an_unknown_word(name, value):
    bad = _forced(**{name: value})
    for call in (
        lambda: apply_trace(X, MASK, bad),
        lambda: apply_trace_reference(X, MASK, bad),
        lambda: token_losses(X, X, X, MASK, bad),
    ):
        with pytest.raises(ValueError, match=rf"^{name} must be one of .*got '{value}'"):
            call()
    if name != "trace_norm":  # the weight matrix has no norm
        with pytest.raises(ValueError, match=rf"^{name} must be one of"):
            trace_weights(4, bad)


def test_the_loss_refuses_an_unknown_application():
    with pytest.raises(ValueError, match=r"^trace_application must be one of \['ratio', 'weight'\], got 'both'"):
        token_losses(X, X, X, MASK, _forced(trace_application="both"))


def test_a_weighting_names_a_known_kernel():
    with pytest.raises(ValueError, match="kernel must be one of"):
        choices.Weighting("r^j", lambda t, j, n, power: power(j), kernel="sideways")


def test_each_half_of_the_algorithm_gets_only_its_own_settings():
    """The loss's settings have no estimator setting and the reverse, so a wrong read fails loudly."""
    loss_names = {f.name for f in dataclasses.fields(LossSettings)}
    advantage_names = {f.name for f in dataclasses.fields(AdvantageSettings)}
    assert "adv_clamp" in advantage_names and "adv_clamp" not in loss_names
    assert "lam" in loss_names and "lam" not in advantage_names
    with pytest.raises(AttributeError):
        AdvantageSettings().lam  # noqa: B018
    with pytest.raises(AttributeError):
        GRPOLambdaSettings().lam  # noqa: B018  (the composite holds both halves, never flat)
    both = GRPOLambdaSettings.from_values({"lam": 0.5, "adv_clamp": None})
    assert both.loss == LossSettings(lam=0.5) and both.advantage == AdvantageSettings(adv_clamp=None)
    with pytest.raises(ValueError, match="^lamda is not a GRPO-λ setting"):
        GRPOLambdaSettings.from_values({"lamda": 0.5})
