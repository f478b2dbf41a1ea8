"""`verl-lambda credit`: the credit it draws is the spec's Σ_{t ≥ k} w(t, k) (ratio application)."""

import argparse
import math

import pytest
import spec_reference as spec

from verl_lambda import credit


def parse(*argv):
    parser = argparse.ArgumentParser(prog="verl-lambda credit")
    credit.add_arguments(parser)
    args = parser.parse_args(list(argv))
    credit.check(parser, args)
    return args


def test_ratio_credit_is_the_spec_credit_for_every_style_and_anchor():
    args = parse("--length", "40", "--lam", "0.9", "--trace-epsilon", "0.01")
    curves = credit.credit_curves(args)
    for trace in credit.STYLES:
        for anchor in credit.ANCHORS:
            expected = spec.credit(40, 0.9, trace, 0.01, "none", anchor)
            assert curves[(trace, anchor, "ratio")] == pytest.approx(expected, rel=1e-10)


def test_weight_credit_is_the_eligibility_plus_its_own_gradient():
    """e_k + σ'(log π − 1)·Σ_{t ≥ k} w(t, k), by hand, at log π = −1."""
    args = parse("--length", "25", "--lam", "0.8")
    curves = credit.credit_curves(args)
    sigmoid = 1 / (1 + math.exp(2.0))
    slope = sigmoid * (1 - sigmoid)
    for trace in credit.STYLES:
        for anchor in credit.ANCHORS:
            n = 25
            w = [[spec.weight(t, j, 0.8, trace, 0.0, anchor, n) if j <= t else 0.0 for j in range(n)] for t in range(n)]
            expected = [sum(w[k][j] * (1 + sigmoid) for j in range(k + 1)) + slope * sum(w[t][k] for t in range(k, n))
                        for k in range(n)]  # fmt: skip
            assert curves[(trace, anchor, "weight")] == pytest.approx(expected, rel=1e-10)


def test_run_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    out = tmp_path / "credit.png"
    assert credit.run(parse("--length", "64", "--out", str(out))) == 0
    text = capsys.readouterr().out
    assert "recent  token   ratio" in text and "early   end     weight" in text
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lam", "2"], "--lam must be a number in [0, 1], got 2.0"),
        (["--trace-norm", "max"], "--trace-norm must be one of ['none', 'sum'], got 'max'"),
        (["--length", "0"], "--length must be at least 1"),
        (["--log-prob", "0.5"], "--log-prob must be ≤ 0"),
    ],
)
def test_bad_values_are_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
