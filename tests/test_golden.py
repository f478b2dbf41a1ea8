"""Hand-computed cases: one 4-token response at λ = 0.5 (r = γλ = 0.5, ε = 0) for every style × anchor ×
application. The expected numbers are written out below with their arithmetic, so the definitions
(spec §4, §4b) can be checked here without reading any reference code.

Weights w(t, j) (rows t = 0..3, columns j ≤ t; n = 4):

    token anchor                         end anchor (n = 4)
    recent  r^(t−j)                      recent  r^(n−1−j) = r^(3−j): .125, .25, .5 for j = 0, 1, 2
      t0: 1                                t0: 1
      t1: .5   1                           t1: .125 1
      t2: .25  .5   1                      t2: .125 .25  1
      t3: .125 .25  .5   1                 t3: .125 .25  .5   1
    both    max(r^(t−j), r^j)            both    max(r^(n−j), r^j) = max(r^(4−j), r^j): 1, .5, .25
      t1: max(.5, 1)=1  1                  t1: 1   1
      t2: 1   max(.5, .5)=.5   1           t2: 1   .5   1
      t3: 1   max(.25, .5)=.5  max(.5, .25)=.5   1
                                           t3: 1   .5   .25  1   (j = 2: max(.25, .25); n−1−j would give .5)
    early   r^j (both anchors)
      t1: 1   1
      t2: 1   .5   1
      t3: 1   .5   .25  1
"""

import pytest
import torch

from verl_lambda.core.objective import token_losses
from verl_lambda.core.settings import LossSettings
from verl_lambda.core.trace import apply_trace

X = [1.0, 2.0, 4.0, 8.0]

# ℓ_t = Σ_j w(t, j) x_j for x = 1, 2, 4, 8
TRACE = {
    ("recent", "token"): [
        1,
        0.5 * 1 + 2,
        0.25 * 1 + 0.5 * 2 + 4,
        0.125 * 1 + 0.25 * 2 + 0.5 * 4 + 8,
    ],  # 1, 2.5, 5.25, 10.625
    ("both", "token"): [1, 1 + 2, 1 + 0.5 * 2 + 4, 1 + 0.5 * 2 + 0.5 * 4 + 8],  # 1, 3, 6, 12
    ("early", "token"): [1, 1 + 2, 1 + 0.5 * 2 + 4, 1 + 0.5 * 2 + 0.25 * 4 + 8],  # 1, 3, 6, 11
    ("recent", "end"): [
        1,
        0.125 * 1 + 2,
        0.125 * 1 + 0.25 * 2 + 4,
        0.125 * 1 + 0.25 * 2 + 0.5 * 4 + 8,
    ],  # 1, 2.125, 4.625, 10.625
    ("both", "end"): [1, 1 + 2, 1 + 0.5 * 2 + 4, 1 + 0.5 * 2 + 0.25 * 4 + 8],  # 1, 3, 6, 11
    ("early", "end"): [1, 1 + 2, 1 + 0.5 * 2 + 4, 1 + 0.5 * 2 + 0.25 * 4 + 8],  # 1, 3, 6, 11
}
# credit of token k at ρ = 1, advantage −1, token-sum: Σ_{t ≥ k} w(t, k) (column sums of the tables)
CREDIT = {
    ("recent", "token"): [1 + 0.5 + 0.25 + 0.125, 1 + 0.5 + 0.25, 1 + 0.5, 1],  # 1.875, 1.75, 1.5, 1
    ("both", "token"): [1 + 1 + 1 + 1, 1 + 0.5 + 0.5, 1 + 0.5, 1],  # 4, 2, 1.5, 1
    ("early", "token"): [1 + 1 + 1 + 1, 1 + 0.5 + 0.5, 1 + 0.25, 1],  # 4, 2, 1.25, 1
    ("recent", "end"): [1 + 0.125 * 3, 1 + 0.25 * 2, 1 + 0.5, 1],  # 1.375, 1.5, 1.5, 1
    ("both", "end"): [1 + 1 + 1 + 1, 1 + 0.5 + 0.5, 1 + 0.25, 1],  # 4, 2, 1.25, 1
    ("early", "end"): [1 + 1 + 1 + 1, 1 + 0.5 + 0.5, 1 + 0.25, 1],  # 4, 2, 1.25, 1
}
# weight application at log π = 1 (so 1 + σ(log π − 1) = 1 + σ(0) = 1.5 for every token), ρ = 1 and
# advantage −1: loss_t = −A · ρ · e_t = e_t = 1.5 · Σ_j w(t, j) (row sums of the tables)
WEIGHT_LOSS = {
    ("recent", "token"): [1.5 * 1, 1.5 * (0.5 + 1), 1.5 * (0.25 + 0.5 + 1), 1.5 * (0.125 + 0.25 + 0.5 + 1)],
    ("both", "token"): [1.5 * 1, 1.5 * (1 + 1), 1.5 * (1 + 0.5 + 1), 1.5 * (1 + 0.5 + 0.5 + 1)],  # 1.5, 3, 3.75, 4.5
    ("early", "token"): [1.5 * 1, 1.5 * (1 + 1), 1.5 * (1 + 0.5 + 1), 1.5 * (1 + 0.5 + 0.25 + 1)],  # …, 4.125
    ("recent", "end"): [1.5 * 1, 1.5 * (0.125 + 1), 1.5 * (0.125 + 0.25 + 1), 1.5 * (0.125 + 0.25 + 0.5 + 1)],
    ("both", "end"): [1.5 * 1, 1.5 * (1 + 1), 1.5 * (1 + 0.5 + 1), 1.5 * (1 + 0.5 + 0.25 + 1)],
    ("early", "end"): [1.5 * 1, 1.5 * (1 + 1), 1.5 * (1 + 0.5 + 1), 1.5 * (1 + 0.5 + 0.25 + 1)],
}
CASES = sorted(TRACE)


def _settings(style, anchor, application):
    return LossSettings(lam=0.5, trace=style, trace_anchor=anchor, trace_application=application)


def _row(values):
    return torch.tensor([values], dtype=torch.float64)


MASK = torch.ones(1, 4, dtype=torch.bool)


@pytest.mark.parametrize("style,anchor", CASES)
def test_traced_log_ratio_by_hand(style, anchor):
    traced = apply_trace(_row(X), MASK, _settings(style, anchor, "ratio"))
    torch.testing.assert_close(traced, _row(TRACE[(style, anchor)]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("style,anchor", CASES)
def test_ratio_credit_by_hand(style, anchor):
    old = _row([-1.0] * 4)
    log_prob = old.clone().requires_grad_(True)
    losses, _ = token_losses(old, log_prob, _row([-1.0] * 4), MASK, _settings(style, anchor, "ratio"))
    (credit,) = torch.autograd.grad(losses.sum(), log_prob)
    torch.testing.assert_close(credit, _row(CREDIT[(style, anchor)]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("style,anchor", CASES)
def test_weight_application_by_hand(style, anchor):
    log_prob = _row([1.0] * 4)
    losses, stats = token_losses(log_prob, log_prob, _row([-1.0] * 4), MASK, _settings(style, anchor, "weight"))
    torch.testing.assert_close(losses, _row(WEIGHT_LOSS[(style, anchor)]), rtol=0, atol=1e-12)
    assert stats["trace_abs_max"].item() == pytest.approx(max(WEIGHT_LOSS[(style, anchor)]))


def test_every_style_and_anchor_has_a_hand_computed_case():
    from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_STYLES

    assert set(CASES) == {(s, a) for s in TRACE_STYLES for a in TRACE_ANCHORS}
