"""Tests of ``verl-lambda study``: its statistics on hand-made numbers (expected values worked out by
hand here, never by the code under test), the task's reward truth and position control, the method
list, the per-position gradient weight through verl's loss, pairing by seed, and a smoke run."""

from __future__ import annotations

import math

import pytest
import torch

from verl_lambda.__main__ import main
from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_STYLES
from verl_lambda.study import report, stats
from verl_lambda.study.options import (
    CLAMP_ONLY,
    GRPO,
    LAMS,
    POSITIONS,
    StudyConfig,
    decisive_positions,
    study_methods,
)

# ---------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    "df, expected",  # two-sided 95 % critical values from a printed t table
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (7, 2.3646), (9, 2.2622), (29, 2.0452)],
)
def test_t_quantile_matches_the_printed_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_cdf_for_two_degrees_of_freedom_has_its_closed_form():
    # df = 2: F(t) = 1/2 + t / (2 √(2 + t²)); at t = 2.5: 0.5 + 2.5 / (2 · √8.25) = 0.935194
    assert stats.t_cdf(2.5, 2) == pytest.approx(0.935194, abs=1e-6)
    assert stats.t_cdf(0.0, 5) == pytest.approx(0.5)


def test_paired_difference_by_hand():
    method = {0: 0.5, 1: 0.7, 2: 0.6, 9: 0.9}  # seed 9 has no reference: left out
    reference = {0: 0.4, 1: 0.4, 2: 0.5, 7: 0.1}  # seed 7 has no method run: left out
    d = stats.paired_difference(method, reference)
    # differences 0.1, 0.3, 0.1: mean 1/6; deviations −1/15, 2/15, −1/15: sd √((1+4+1)/225/2) = 0.115470
    # se = 0.115470/√3 = 0.0666667; t(0.975, 2) = 4.302653: half-width 0.286844
    assert d.seeds == (0, 1, 2) and d.n == 3
    assert d.differences == pytest.approx((0.1, 0.3, 0.1))
    assert d.mean == pytest.approx(0.1666667, abs=1e-7)
    assert d.sd == pytest.approx(0.1154701, abs=1e-7)
    assert d.standard_error == pytest.approx(0.0666667, abs=1e-7)
    assert d.low == pytest.approx(0.1666667 - 0.2868435, abs=1e-6)
    assert d.high == pytest.approx(0.1666667 + 0.2868435, abs=1e-6)
    # t = (1/6)/(1/15) = 2.5 on 2 df: p = 2 · (1 − 0.935194) = 0.129612
    assert d.p_value == pytest.approx(0.129612, abs=1e-5)


def test_paired_difference_five_seeds_by_hand():
    # differences 1..5: mean 3, sd √2.5 = 1.581139, se 0.707107, t(0.975, 4) = 2.776445: ± 1.963243
    d = stats.paired_difference({s: s + 1.0 for s in range(5)}, dict.fromkeys(range(5), 0.0))
    assert (d.mean, d.low, d.high) == pytest.approx((3.0, 1.036757, 4.963243), abs=1e-5)


def test_paired_difference_edge_cases():
    one = stats.paired_difference({0: 0.3}, {0: 0.1})
    assert one.mean == pytest.approx(0.2) and one.low is None and one.high is None and one.p_value is None
    none = stats.paired_difference({0: 0.3}, {1: 0.1})
    assert none.n == 0 and none.mean is None
    same = stats.paired_difference({0: 0.3, 1: 0.5}, {0: 0.1, 1: 0.3})  # both differences 0.2: no spread
    assert (same.mean, same.low, same.high, same.p_value) == pytest.approx((0.2, 0.2, 0.2, 0.0))
    zero = stats.paired_difference({0: 0.3, 1: 0.5}, {0: 0.3, 1: 0.5})
    assert zero.p_value == 1.0


def test_moving_average_and_steps_to_threshold_by_hand():
    curve = [0.0, 0.2, 0.4, 0.9, 0.5, 1.0]
    # trailing 2-step averages: 0, 0.1, 0.3, 0.65, 0.7, 0.75
    assert stats.moving_average(curve, 2) == pytest.approx([0.0, 0.1, 0.3, 0.65, 0.7, 0.75])
    assert stats.steps_to_threshold(curve, 0.6, window=2) == 3
    assert stats.steps_to_threshold(curve, 0.72, window=2) == 5
    assert stats.steps_to_threshold(curve, 0.9, window=1) == 3  # unsmoothed: the raw 0.9 at step 3
    assert stats.steps_to_threshold(curve, 0.8, window=2) is None  # never: None, an empty cell in results.csv
    with pytest.raises(ValueError):
        stats.moving_average(curve, 0)


def _row(method, seed, final, auc, steps, position="early", arm="on"):
    return {"setting": f"{position}/{arm}", "position": position, "arm": arm, "method": method, "seed": seed,
            "final_reward": final, "mean_reward": auc, "steps_to_threshold": steps,
            "final_filler_entropy": 2.0, "mean_clipfrac": 0.0}  # fmt: skip


def test_summary_is_the_paired_difference_of_the_per_seed_rows():
    rows = [
        _row(GRPO, 0, 0.30, 0.20, None), _row(GRPO, 1, 0.50, 0.30, 40), _row(GRPO, 2, 0.40, 0.25, None),
        _row(CLAMP_ONLY, 0, 0.40, 0.20, 30), _row(CLAMP_ONLY, 1, 0.60, 0.40, 20), _row(CLAMP_ONLY, 2, 0.50, 0.30, 25),
        _row("x", 0, 0.50, 0.25, 10), _row("x", 1, 0.90, 0.45, 12), _row("x", 2, 0.60, 0.35, None),
    ]  # fmt: skip
    summary = {r["method"]: r for r in report.summarise(rows, {("early", "x"): 1.5})}
    x = summary["x"]
    # x − clamp: 0.1, 0.3, 0.1 (the hand-made example above): mean 1/6, interval ± 0.286844
    assert x["n_seeds"] == 3
    assert x["mean_final_reward"] == pytest.approx((0.5 + 0.9 + 0.6) / 3)
    assert x["diff_vs_clamp"] == pytest.approx(1 / 6)
    assert (x["diff_vs_clamp_lo"], x["diff_vs_clamp_hi"]) == pytest.approx(
        (1 / 6 - 0.286844, 1 / 6 + 0.286844), abs=1e-5
    )
    # x − grpo: 0.2, 0.4, 0.2: mean 4/15 = 0.266667, same spread as above
    assert x["diff_vs_grpo"] == pytest.approx(0.266667, abs=1e-6)
    assert x["diff_vs_grpo_hi"] - x["diff_vs_grpo"] == pytest.approx(0.286844, abs=1e-5)
    # area under the curve: x − clamp = 0.05, 0.05, 0.05
    assert (x["auc_diff_vs_clamp"], x["auc_diff_vs_clamp_lo"]) == pytest.approx((0.05, 0.05))
    # steps: 10, 12, never -> median 12; grpo: never, 40, never -> median never (empty)
    assert (x["n_reached"], x["median_steps_to_threshold"]) == (2, 12)
    assert summary[GRPO]["median_steps_to_threshold"] is None and summary[GRPO]["n_reached"] == 1
    assert summary[CLAMP_ONLY]["diff_vs_clamp"] is None and summary[CLAMP_ONLY]["diff_vs_grpo"] == pytest.approx(0.1)
    assert x["predicted_snr"] == 1.5


def test_predicted_snr_by_hand():
    # credit 4, 3, 2, 1: rms √(30/4) = 2.738613; decisive {0, 1}: mean 3.5 -> 1.278019
    assert report.predicted_snr([4, 3, 2, 1], [0, 1]) == pytest.approx(1.278019, abs=1e-6)
    assert report.predicted_snr([1, 1, 1], [2]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- the task


def test_position_control():
    assert decisive_positions("early", 64, 4) == (0, 1, 2, 3)
    assert decisive_positions("late", 64, 4) == (60, 61, 62, 63)
    assert decisive_positions("middle", 64, 4) == (30, 31, 32, 33)
    assert decisive_positions("spread", 64, 4) == (8, 24, 40, 56)
    assert decisive_positions("spread", 256, 4) == (32, 96, 160, 224)
    assert set(POSITIONS) == {"early", "middle", "late", "spread"}
    with pytest.raises(ValueError):
        decisive_positions("everywhere", 64, 4)


@pytest.mark.parametrize("position", list(POSITIONS))
def test_reward_truth_only_the_decisive_tokens_count(position):
    from verl_lambda.study.task import CreditTask

    config = StudyConfig(length=64, prompts=3)
    task = CreditTask(config, position)
    where = decisive_positions(position, 64, 4)
    assert task.positions.tolist() == list(where)
    generator = torch.Generator().manual_seed(0)
    prompt_ids = torch.tensor([0, 1, 2, 1])
    responses = torch.randint(config.vocab, (4, 64), generator=generator)
    responses[:, list(where)] = task.targets[prompt_ids]
    assert task.reward(prompt_ids, responses).tolist() == [1.0, 1.0, 1.0, 1.0]
    # every filler token changed: the reward does not move
    filler = [t for t in range(64) if t not in where]
    changed = responses.clone()
    changed[:, filler] = (changed[:, filler] + 1 + torch.randint(config.vocab - 1, (4, len(filler)))) % config.vocab
    assert (changed[:, filler] != responses[:, filler]).all()
    assert task.reward(prompt_ids, changed).tolist() == [1.0, 1.0, 1.0, 1.0]
    # one decisive token wrong: 3/4; two: 1/2
    wrong = responses.clone()
    wrong[0, where[1]] = (wrong[0, where[1]] + 1) % config.vocab
    wrong[1, where[0]] = (wrong[1, where[0]] + 1) % config.vocab
    wrong[1, where[3]] = (wrong[1, where[3]] + 1) % config.vocab
    assert task.reward(prompt_ids, wrong).tolist() == [0.75, 0.5, 1.0, 1.0]


def test_the_start_policy_has_chance_reward_and_high_entropy_filler_and_exact_metrics_match_sampling():
    from verl_lambda.study.task import CreditTask, MarkovPolicy, exact_metrics, sample

    config = StudyConfig(length=64, prompts=2)
    task = CreditTask(config, "spread")
    torch.manual_seed(0)
    policy = MarkovPolicy(config)
    with torch.no_grad():
        table = policy.table()
    exact = exact_metrics(table, task)
    # near uniform at the start: chance reward 1/16, filler entropy close to log 16 = 2.7726
    assert 0.05 < exact["expected_reward"] < 0.08
    assert exact["filler_entropy"] > 2.76
    # the exact expected reward is the mean reward of samples (here of a sharper policy, so it is not trivial)
    sharp = (table * 3.0).log_softmax(dim=-1)
    exact = exact_metrics(sharp, task)
    prompt_ids = torch.arange(2).repeat_interleave(10_000)
    rewards = task.reward(prompt_ids, sample(sharp, prompt_ids, torch.Generator().manual_seed(1)))
    standard_error = rewards.std().item() / math.sqrt(len(rewards))
    assert abs(rewards.mean().item() - exact["expected_reward"]) < 4 * standard_error
    # the policy's log-probs of given responses are its table's entries
    responses = sample(table, prompt_ids[:5], torch.Generator().manual_seed(2))
    with torch.no_grad():
        log_probs = policy.log_probs(prompt_ids[:5], responses)
    previous = torch.cat([torch.full((5, 1), config.vocab), responses[:, :-1]], dim=1)
    from_table = table[prompt_ids[:5, None], torch.arange(64)[None, :], previous, responses]
    assert torch.allclose(log_probs, from_table, atol=1e-5)


# ---------------------------------------------------------------------------------------------- methods


def test_methods_cover_every_reading_from_the_vocabularies():
    methods = study_methods()
    assert list(methods)[:2] == [GRPO, CLAMP_ONLY]
    assert methods[GRPO].settings() is None
    clamp = methods[CLAMP_ONLY].settings().values()
    assert clamp["lam"] == 0.0 and clamp["trace_application"] == "ratio" and clamp["adv_clamp"] == -0.1
    for lam in LAMS:
        for anchor in TRACE_ANCHORS:
            for application in TRACE_APPLICATIONS:
                values = methods[f"recent/{anchor}/{application}/lam{lam:g}"].settings().values()
                assert (values["trace"], values["trace_anchor"], values["trace_application"], values["lam"]) == (
                    "recent",
                    anchor,
                    application,
                    lam,
                )
                assert values["adv_clamp"] == -0.1 and values["trace_epsilon"] == 0.0
    for style in TRACE_STYLES:
        assert f"{style}/token/ratio/lam{LAMS[0]:g}" in methods
    assert len(methods) == 2 + 4 * len(LAMS) + len(TRACE_STYLES) - 1


def test_gradient_weight_through_verl_is_the_credit_command():
    import argparse

    from verl_lambda import credit
    from verl_lambda.study.train import credit_through_verl

    parser = argparse.ArgumentParser()
    credit.add_arguments(parser)
    args = parser.parse_args(["--length", "40", "--lam", "0.9", "--log-prob", str(-math.log(16))])
    expected = credit.credit_curves(args)
    methods = study_methods(lams=(0.9,))
    for anchor in TRACE_ANCHORS:
        for application in TRACE_APPLICATIONS:
            got = credit_through_verl(methods[f"recent/{anchor}/{application}/lam0.9"], 40, -math.log(16))
            assert got == pytest.approx(expected[("recent", anchor, application)], rel=1e-9)
    # GRPO and the clamp alone: 1 for every position; recent/token/ratio: Σ_{t≥k} r^(t−k) (k = 0: 1 + 0.9 + ...)
    assert credit_through_verl(study_methods()[GRPO], 40, -1.0) == pytest.approx([1.0] * 40)
    assert credit_through_verl(study_methods()[CLAMP_ONLY], 40, -1.0) == pytest.approx([1.0] * 40)
    token_ratio = credit_through_verl(methods["recent/token/ratio/lam0.9"], 40, -1.0)
    assert token_ratio[0] == pytest.approx((1 - 0.9**40) / (1 - 0.9))
    assert token_ratio[-1] == pytest.approx(1.0)


def test_pairing_and_the_on_policy_arm():
    from verl_lambda.study.train import run_one

    config = StudyConfig(length=64, steps=2, off_steps=2)
    methods = study_methods()
    runs = {m: run_one(config, "early", "on", methods[m], 3) for m in (GRPO, CLAMP_ONLY, "recent/token/ratio/lam0.99")}
    # the same seed: the same start policy and the same first batch, whatever the method
    firsts = {(r["expected_curve"][0], r["train_curve"][0]) for r in runs.values()}
    assert len(firsts) == 1
    # on-policy: old = new log-probs, the traced ratio is 1, PPO's clip never fires
    assert all(r["mean_clipfrac"] == 0.0 for r in runs.values())
    assert runs["recent/token/ratio/lam0.99"]["max_trace_abs"] == 0.0
    off = run_one(config, "early", "off", methods["recent/token/ratio/lam0.99"], 3)
    assert off["max_trace_abs"] > 0.0  # the later mini-batches see a moved policy: the ratio is traced


# ---------------------------------------------------------------------------------------------- the command


def test_study_command_smoke(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["study", "--out", str(out), "--seeds", "2", "--steps", "3", "--off-steps", "2", "--length", "64",
            "--positions", "early,late", "--methods", "recent/end/weight/lam0.99", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "setting early/on" in text and "setting late/off" in text
    results = report.read_csv(out / "results.csv")
    methods = [GRPO, CLAMP_ONLY, "recent/end/weight/lam0.99"]  # the references are always added
    assert len(results) == 4 * 3 * 2  # settings × methods × seeds
    assert {(r["setting"], r["method"], r["seed"]) for r in results} == {
        (f"{p}/{a}", m, s) for p in ("early", "late") for a in ("on", "off") for m in methods for s in (0, 1)
    }
    for column in ("setting", "method", "seed", "final_reward", "steps_to_threshold"):
        assert column in results[0]
    summary = report.read_csv(out / "summary.csv")
    assert len(summary) == 4 * 3
    for column in ("setting", "method", "n_seeds", "mean_final_reward", "diff_vs_clamp", "diff_vs_clamp_lo",
                   "diff_vs_clamp_hi"):  # fmt: skip
        assert column in summary[0]
    # summary.csv is computed from results.csv: recompute one difference by hand from the rows
    row = next(r for r in summary if r["setting"] == "late/off" and r["method"] == "recent/end/weight/lam0.99")
    final = {(r["method"], r["seed"]): r["final_reward"] for r in results if r["setting"] == "late/off"}
    by_hand = (
        (final[(methods[2], 0)] - final[(CLAMP_ONLY, 0)]) + (final[(methods[2], 1)] - final[(CLAMP_ONLY, 1)])
    ) / 2
    assert row["diff_vs_clamp"] == pytest.approx(by_hand, abs=2e-6)
    assert row["diff_vs_clamp_lo"] <= row["diff_vs_clamp"] <= row["diff_vs_clamp_hi"]
    for name in ("curves.csv", "credit.csv", "run.json", "curves_on.png", "diff_vs_clamp.png", "credit.png"):
        assert (out / name).exists(), name


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--length", "32"], "--length must be in 64..256"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--positions", "first"], "unknown position 'first'"),
        (["--methods", "recent/token/ratio/lam0.5"], "unknown method"),
        (["--arms", "both"], "unknown arm 'both'"),
    ],
)
def test_bad_arguments_fail_in_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--out", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("verl-lambda study: error:") and message in err and "\n" not in err
