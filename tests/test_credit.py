"""`verl-lambda credit`: the credit it draws is the spec's Σ_{t ≥ k} w(t, k) (ratio application)."""

import math

import pytest
import spec_reference as spec

from verl_lambda import credit
from verl_lambda.cli import ArgumentParser, LaunchError


def parse(*argv):
    parser = ArgumentParser(prog="verl-lambda credit")
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
        (["--log-prob", "0.5"], "--log-prob must be a finite number ≤ 0"),
    ],
)
def test_bad_values_are_one_line(argv, message):
    with pytest.raises(LaunchError) as info:
        parse(*argv)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--log-prob", "nan"], "--log-prob must be a finite number ≤ 0"),
        (["--log-prob", "-inf"], "--log-prob must be a finite number ≤ 0"),
        (["--out", "plot"], "name an image file ending in .png, .pdf, .svg"),
        (["--out", "plot.txt"], "name an image file ending in .png, .pdf, .svg"),
    ],
)
def test_values_that_would_print_one_thing_and_do_another_are_refused(argv, message):
    with pytest.raises(LaunchError, match=message):
        parse(*argv)


def test_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LaunchError, match="is a file, not a folder"):
        parse("--out", str(tmp_path / "file" / "credit.png"))


def test_the_table_shows_each_curves_true_extremes(capsys, tmp_path):
    """recent/end/ratio is 1 at the four sample points but peaks near the end: the table must say so."""
    args = parse("--length", "3072", "--lam", "0.99", "--out", str(tmp_path / "c.png"))
    curves = credit.credit_curves(args)
    credit.run(args)
    lines = {tuple(line.split()[:3]): line for line in capsys.readouterr().out.splitlines()}
    for key, values in curves.items():
        high = max(range(len(values)), key=values.__getitem__)
        low = min(range(len(values)), key=values.__getitem__)
        assert f"{values[high]:.4g} ({high})" in lines[key] and f"{values[low]:.4g} ({low})" in lines[key]
    peak = curves[("recent", "end", "ratio")]
    assert max(peak) > 30 and peak.index(max(peak)) > 2900
