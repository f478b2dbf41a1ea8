"""Tests of ``verl-lambda demo``: tiny sizes, a few steps, through the CLI entry function; its argument
checks (fast, before any heavy import); the clamp-only method; the summary's verdicts; its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from verl_lambda.__main__ import build_parser, main
from verl_lambda.core.settings import GRPOLambdaSettings, Number, OneOf, setting_fields
from verl_lambda.demo import report
from verl_lambda.demo.methods import BASELINE, CLAMP_ONLY, DEFAULT_METHODS, METHODS
from verl_lambda.demo.options import RLSettings
from verl_lambda.demo.report import RECORD_FIELDS
from verl_lambda.demo.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "demo",
    "--task", "answer_first",
    "--methods", ",".join(METHODS),  # every method runs
    "--seeds", "1",
    "--steps", "3",
    "--eval-every", "2",
    "--prompts-per-step", "2",
    "--group-size", "4",
    "--mini-batches", "2",
    "--hidden-size", "32",
    "--num-layers", "1",
    "--sft-max-steps", "30",
    "--eval-size", "16",
]  # fmt: skip
HEAVY_MODULES = ("torch", "transformers", "verl", "numpy", "matplotlib")


def run_tiny(tmp_path, name):
    out = tmp_path / name
    assert main([*TINY, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    return out


def test_demo_runs_end_to_end_and_is_deterministic(tmp_path):
    out = run_tiny(tmp_path, "first")

    document = json.loads((out / "metrics.json").read_text())
    records = document["records"]
    assert len(records) == len(METHODS) * (3 + 1)  # step 0 (start) and 3 RL steps per method
    for record in records:
        assert set(record) == set(RECORD_FIELDS)
    assert {r["method"] for r in records} == set(METHODS)
    for record in records:
        if record["step"] > 0:
            assert 0.0 <= record["train_reward"] <= 1.0
            assert record["loss"] is not None
    traced = [r for r in records if r["method"] != "grpo" and r["step"] > 0]
    assert all(r["trace_abs_mean"] is not None for r in traced)
    evaluated = {(r["method"], r["step"]) for r in records if r["eval_accuracy"] is not None}
    assert {step for _, step in evaluated} == {0, 2, 3}

    summary = document["summary"]
    assert set(summary["methods"]) == set(METHODS)
    assert summary["methods"]["grpo"]["final_accuracy_ratio"] in (None, 1.0)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((tmp_path / "cache").glob("sft-answer_first-*.pt"))) == 1

    # every method ran with its own settings: the fixed ones over the flags' defaults
    settings = document["run"]["grpo_lambda"]["methods"]
    assert settings["grpo"] is None
    assert settings[CLAMP_ONLY]["lam"] == 0.0 and settings[CLAMP_ONLY]["trace_application"] == "ratio"
    assert settings["grpo_lambda_end"]["trace_anchor"] == "end" and settings["grpo_lambda_end"]["trace_epsilon"] == 1e-7
    assert settings["grpo_lambda_end_weight"]["trace_application"] == "weight"
    assert settings["grpo_lambda"] == GRPOLambdaSettings().values()

    again = run_tiny(tmp_path, "second")  # warm-up now comes from the cache
    assert json.loads((again / "metrics.json").read_text())["records"] == records


@pytest.mark.parametrize(
    ("flag", "value", "valid"),
    [("--methods", "grpo,not_a_method", list(METHODS)), ("--task", "not_a_task", list(TASKS))],
)
def test_unknown_name_fails_listing_the_valid_ones(flag, value, valid, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert value.split(",")[-1] in error
    for name in valid:
        assert name in error


# --- the command line: flags derived from GRPOLambdaSettings, checks before any work --------------


def demo_args(tmp_path, *argv):
    """The demo's arguments after parsing and :func:`check` (which creates --out and --cache-dir)."""
    parser, parsers = build_parser("demo")
    argv = ["demo", *argv, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    args = parser.parse_args(argv)
    args.check(parsers["demo"], args)
    return args


def test_grpo_lambda_flags_are_derived_from_the_settings():
    _, parsers = build_parser("demo")
    actions = {action.dest: action for action in parsers["demo"]._actions}
    for f in setting_fields():
        action = actions[f.name]
        assert action.option_strings == ["--" + f.name.replace("_", "-")]
        assert action.default is None  # "not given": the default is the settings' own
        assert f.metadata["help"] in action.help.replace("%%", "%")
        assert f.metadata["allowed"].render(f.default) in action.help
        if isinstance(f.metadata["allowed"], OneOf):
            assert tuple(action.choices) == f.metadata["allowed"].values
        else:
            assert isinstance(f.metadata["allowed"], Number)


def test_no_flag_gives_the_settings_defaults_and_flags_parse_like_the_settings(tmp_path):
    args = demo_args(tmp_path)
    assert args.grpo_lambda == GRPOLambdaSettings()
    assert args.methods == list(DEFAULT_METHODS)
    assert BASELINE in args.methods and CLAMP_ONLY in args.methods  # the ablation is shown by default
    args = demo_args(tmp_path, "--adv-clamp", "none", "--lam", "0", "--trace-norm", "sum")
    assert args.grpo_lambda == GRPOLambdaSettings.from_values(dict(adv_clamp=None, lam=0.0, trace_norm="sum"))
    assert (args.adv_clamp, args.lam, args.trace_norm) == (None, 0.0, "sum")
    args = demo_args(tmp_path, "--methods", "grpo_lambda", "--trace", "early", "--trace-anchor", "end")
    expected = GRPOLambdaSettings.from_values(dict(trace="early", trace_anchor="end"))
    assert METHODS["grpo_lambda"].settings(args.grpo_lambda) == expected


def test_a_method_fixes_only_its_settings():
    flags = GRPOLambdaSettings.from_values(dict(lam=0.9, trace_norm="sum", trace_application="weight", gamma=0.5))
    clamp = METHODS[CLAMP_ONLY].settings(flags).loss
    assert (clamp.lam, clamp.trace, clamp.trace_epsilon, clamp.trace_application) == (0.0, "recent", 0.0, "ratio")
    assert (clamp.trace_norm, clamp.gamma) == ("sum", 0.5)
    assert METHODS[CLAMP_ONLY].settings(flags).advantage == flags.advantage
    recent = METHODS["grpo_lambda_recent"].settings(flags)
    assert recent == GRPOLambdaSettings.from_values({**flags.values(), "trace": "recent"})
    end = METHODS["grpo_lambda_end_weight"].settings(flags).loss
    assert (end.trace_anchor, end.trace, end.trace_epsilon, end.trace_application) == ("end", "recent", 1e-7, "weight")
    assert end.lam == 0.9
    assert METHODS["grpo"].settings(flags) is None


def test_a_flag_that_some_methods_fix_is_noted(tmp_path):
    args = demo_args(tmp_path, "--lam", "0.5")
    assert args.grpo_lambda.loss.lam == 0.5
    (note,) = args.setting_notes
    assert "--lam 0.5" in note and CLAMP_ONLY in note


def demo_command(*argv, **kwargs):
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "verl_lambda", "demo", *argv], capture_output=True, text=True, cwd=REPO, **kwargs
    )
    return done, time.perf_counter() - started


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--lam", "2"], "--lam"),
        (["--lam", "abc"], "--lam"),
        (["--adv-clamp", "0.5"], "--adv-clamp"),
        (["--trace-epsilon", "-1", "--methods", "grpo_lambda"], "--trace-epsilon"),
        (["--trace", "early"], "--trace"),  # no selected method takes it
        (["--lam", "0.5", "--methods", "grpo,grpo_lambda_clamp_only"], "--lam"),
        (["--lr", "0"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--hidden-size", "100"], "--hidden-size"),
        (["--hidden-size", "0"], "--hidden-size"),
        (["--num-layers", "0"], "--num-layers"),
        (["--seeds", "0"], "--seeds"),
        (["--eval-every", "0"], "--eval-every"),
        (["--group-size", "1"], "--group-size"),
        (["--device", "gpu"], "--device"),
        (["--out", "/proc/no/such/folder"], "--out"),
    ],
)
def test_bad_values_fail_at_once_in_one_line(argv, flag):
    done, seconds = demo_command(*argv)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("verl-lambda demo: error: ") and flag in lines[0]
    assert seconds < 3, f"{seconds:.1f} s"


def test_argument_errors_and_checks_import_no_heavy_module(tmp_path):
    script = f"""
import contextlib, io, json, sys
from verl_lambda.__main__ import build_parser, main
for argv in (["--lam", "2"], ["--seed", "3"], ["--bogus"], ["--trace", "nope"], ["--hidden-size", "100"]):
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["demo", *argv])
        except SystemExit as exit:
            assert exit.code == 2, (argv, exit.code)
parser, parsers = build_parser("demo")
args = parser.parse_args(["demo", "--out", {str(tmp_path / "out")!r}, "--cache-dir", {str(tmp_path / "cache")!r}])
args.check(parsers["demo"], args)
print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--seed", "3"])  # once silently --seeds 3
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --seed 3" in capsys.readouterr().err
    parser, parsers = build_parser()
    assert parser.allow_abbrev is False
    assert all(sub.allow_abbrev is False for sub in parsers.values())


def test_unknown_flag_is_one_line_that_points_to_the_help():
    done, seconds = demo_command("--bogus")
    assert done.returncode == 2
    assert done.stderr == "verl-lambda demo: error: unrecognized arguments: --bogus (see verl-lambda demo --help)\n"
    assert seconds < 3


def test_help_says_what_it_writes_and_how_long_it_takes():
    done, _ = demo_command("--help")
    assert done.returncode == 0
    for word in ("metrics.json", "curves.png", "minutes", *METHODS):
        assert word in done.stdout


# --- the clamp-only method is GRPO's vanilla loss on clamped advantages ---------------------------


@pytest.mark.parametrize(
    "flags",
    [
        GRPOLambdaSettings(),
        # the settings clamp-only does not fix cannot make its trace more than the identity
        GRPOLambdaSettings.from_values(
            dict(trace_anchor="end", trace_norm="sum", gamma=0.5, trace_application="weight", lam=0.9)
        ),
    ],
)
def test_clamp_only_is_the_vanilla_loss_on_clamped_advantages(flags):
    from verl_lambda.demo.rl import VerlUpdate

    settings = RLSettings(prompts_per_step=4, group_size=4, mini_batches=1)
    grpo = VerlUpdate(METHODS["grpo"], settings)
    clamp_only = VerlUpdate(METHODS[CLAMP_ONLY], settings, METHODS[CLAMP_ONLY].settings(flags))
    generator = torch.Generator().manual_seed(0)
    n, width = 16, 10
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lengths = torch.randint(3, width + 1, (n,), generator=generator)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    groups = np.array([f"p{i // 4}" for i in range(n)], dtype=object)
    old_log_prob = -3 * torch.rand(n, width, generator=generator)
    log_prob = (old_log_prob + 0.3 * torch.randn(n, width, generator=generator)).requires_grad_()

    advantages = clamp_only.advantages(rewards, mask, groups)
    grpo_advantages = grpo.advantages(rewards, mask, groups)
    assert (grpo_advantages[mask] < -0.2).any()  # the clamp has something to do
    expected = torch.clamp(grpo_advantages, min=flags.advantage.adv_clamp)
    torch.testing.assert_close(advantages[mask], expected[mask], rtol=1e-6, atol=1e-6)

    loss, _ = clamp_only.loss(old_log_prob, log_prob, advantages, mask)
    vanilla, _ = grpo.loss(old_log_prob, log_prob, advantages, mask)
    torch.testing.assert_close(loss, vanilla, rtol=1e-6, atol=1e-7)
    (gradient,) = torch.autograd.grad(loss, log_prob)
    (vanilla_gradient,) = torch.autograd.grad(vanilla, log_prob)
    torch.testing.assert_close(gradient, vanilla_gradient, rtol=1e-6, atol=1e-8)


# --- the summary: verdicts from paired mean accuracy; outputs -------------------------------------


def synthetic_records(curves: dict[str, list[float]], seeds=3, every=10) -> list[dict]:
    """Eval records: each method's curve, shifted by 0.01·seed (the seeds' warm-ups differ)."""
    records = []
    for method, curve in curves.items():
        for seed in range(seeds):
            for index, accuracy in enumerate(curve):
                records.append(
                    {"method": method, "seed": seed, "step": index * every, "eval_accuracy": accuracy + 0.01 * seed}
                )
    return [report.complete_record(r) for r in records]


def verdict_for(summary, method, reference="GRPO"):
    label = METHODS[method].label
    (line,) = [line for line in report.verdicts(summary) if line.startswith(f"{label} vs {reference}")]
    return line


def test_verdict_is_the_paired_mean_accuracy_not_steps_to_threshold():
    # GRPO-λ reaches the threshold first but its mean accuracy is lower
    records = synthetic_records({"grpo": [0.5, 0.55, 0.60, 0.65], "grpo_lambda_recent": [0.5, 0.62, 0.50, 0.50]})
    summary = report.summarise(records, ["grpo", "grpo_lambda_recent"], threshold=0.6)
    row = summary["methods"]["grpo_lambda_recent"]
    assert row["steps_to_threshold"] < summary["methods"]["grpo"]["steps_to_threshold"]
    assert row["paired"]["grpo"]["diff"] < 0
    line = verdict_for(summary, "grpo_lambda_recent")
    assert "mean accuracy -0.060" in line and "paired by seed" in line
    assert "lower mean accuracy than GRPO" in line
    assert "faster" not in line and "higher mean accuracy" not in line

    # and the other way round: later to the threshold, higher mean accuracy
    records = synthetic_records({"grpo": [0.5, 0.60, 0.55, 0.55], "grpo_lambda_recent": [0.5, 0.58, 0.59, 0.75]})
    summary = report.summarise(records, ["grpo", "grpo_lambda_recent"], threshold=0.6)
    row = summary["methods"]["grpo_lambda_recent"]
    assert row["steps_to_threshold"] > summary["methods"]["grpo"]["steps_to_threshold"]
    line = verdict_for(summary, "grpo_lambda_recent")
    assert "higher mean accuracy than GRPO" in line
    assert "slower" not in line and "lower mean accuracy" not in line


def test_verdict_without_a_clear_difference_and_against_the_clamp():
    records = synthetic_records(
        {"grpo": [0.5, 0.55, 0.60], "grpo_lambda_clamp_only": [0.5, 0.60, 0.66], "grpo_lambda_both": [0.5, 0.60, 0.66]}
    )
    # seed 1 of GRPO-λ (both) is worse than the clamp, seed 2 better: no clear difference
    for record in records:
        if record["method"] == "grpo_lambda_both" and record["step"] > 0:
            record["eval_accuracy"] += {0: 0.0, 1: -0.02, 2: 0.02}[record["seed"]]
    summary = report.summarise(records, ["grpo", CLAMP_ONLY, "grpo_lambda_both"], threshold=None)
    assert "higher mean accuracy than GRPO" in verdict_for(summary, CLAMP_ONLY)
    line = verdict_for(summary, "grpo_lambda_both", reference="clamp only")
    assert "no clear difference from the clamp alone over these seeds" in line
    assert summary["methods"]["grpo_lambda_both"]["paired"][CLAMP_ONLY]["seeds_better"] == 1
    table = report.summary_table(summary, "one machine's numbers")
    assert "Δmean vs clamp" in table and table.endswith("one machine's numbers")
    one_seed = report.summarise([r for r in records if r["seed"] == 0], ["grpo", "grpo_lambda_both"], None)
    assert "no verdict" in verdict_for(one_seed, "grpo_lambda_both")


def test_clear_means_a_paired_t_test_over_the_seeds():
    assert report.t_95(2) == pytest.approx(12.706) and report.t_95(5) == pytest.approx(2.776)
    # two seeds, both better by about 0.04: more than two standard errors, but not clear at 5 %
    records = synthetic_records({"grpo": [0.5, 0.55, 0.60], CLAMP_ONLY: [0.5, 0.59, 0.64]}, seeds=2)
    for record in records:
        if record["method"] == CLAMP_ONLY and record["seed"] == 1 and record["step"] > 0:
            record["eval_accuracy"] += 0.008
    summary = report.summarise(records, ["grpo", CLAMP_ONLY], threshold=None)
    comparison = summary["methods"][CLAMP_ONLY]["paired"]["grpo"]
    assert comparison["diff"] > 2 * comparison["standard_error"]
    assert "no verdict from fewer than 3 seeds" in verdict_for(summary, CLAMP_ONLY)
    assert "--seeds 5" in report.verdicts(summary)[-1]


def test_two_seeds_that_agree_closely_get_no_clear_verdict():
    """Two seeds both 0.009 lower, agreeing to 1e-4, pass a 2-seed t-test: no verdict is drawn from them."""
    records = synthetic_records({CLAMP_ONLY: [0.5, 0.60, 0.66], "grpo_lambda_recent": [0.5, 0.591, 0.651]}, seeds=2)
    for record in records:
        if record["method"] == "grpo_lambda_recent" and record["seed"] == 1 and record["step"] > 0:
            record["eval_accuracy"] += 0.0001
    summary = report.summarise(records, [CLAMP_ONLY, "grpo_lambda_recent"], threshold=None)
    comparison = summary["methods"]["grpo_lambda_recent"]["paired"][CLAMP_ONLY]
    assert abs(comparison["diff"]) > report.t_95(2) * comparison["standard_error"]  # "clear" by the t-test alone
    line = verdict_for(summary, "grpo_lambda_recent", reference="clamp only")
    assert "no verdict from fewer than 3 seeds" in line and "costs accuracy" not in line and "clear" not in line


def test_curves_show_the_threshold_line():
    records = synthetic_records({"grpo": [0.5, 0.55, 0.60], CLAMP_ONLY: [0.5, 0.60, 0.66]})
    figure = report.plot_curves(None, records, ["grpo", CLAMP_ONLY], "title", threshold=0.6)
    (line,) = [line for line in figure.axes[1].get_lines() if line.get_gid() == "threshold"]
    assert list(line.get_ydata()) == [0.6, 0.6]
    assert "threshold 0.60" in line.get_label()


def test_metrics_hold_no_path_under_the_home_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    figures, plot = [], report.plot_curves

    def plot_and_keep(*args, **kwargs):
        figures.append(plot(*args, **kwargs))
        return figures[-1]

    monkeypatch.setattr(report, "plot_curves", plot_and_keep)
    argv = [*TINY[:4], "grpo,grpo_lambda_clamp_only", *TINY[5:], "--steps", "2", "--out", str(home / "out")]
    assert main(argv) == 0  # the warm-up cache goes to the default, ~/.cache/verl-lambda/demo
    assert list((home / ".cache" / "verl-lambda" / "demo").glob("sft-*.pt"))
    text = (home / "out" / "metrics.json").read_text()
    assert str(home) not in text
    document = json.loads(text)
    assert document["run"]["sft"]["cache_dir"] == "~/.cache/verl-lambda/demo"
    assert document["run"]["sft"]["per_seed"]["0"]["file"].startswith("sft-answer_first-")
    assert document["run"]["arguments"]["out"] == "~/out"
    (figure,) = figures
    (line,) = [line for line in figure.axes[1].get_lines() if line.get_gid() == "threshold"]
    assert line.get_ydata()[0] == document["summary"]["threshold"]


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5, 6.0])
def test_ctrl_c_ends_with_one_line_exit_130_and_marks_the_folder(tmp_path, delay):
    """A Ctrl-C of the demo, in its imports, its warm-up or its training, is one line and exit status
    130 (some libraries swallow a KeyboardInterrupt in their imports, or mark it unhandled and re-kill
    the process at exit); an earlier run's outputs in the folder are kept, marked as not this run's."""
    import signal

    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    argv = [*TINY[1:], "--steps", "200", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "verl_lambda", "demo", *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "verl-lambda demo: interrupted"
    assert (out / "metrics.json").read_text() == '{"earlier": true}'
    if (out / "UNFINISHED.txt").exists():  # not yet written when the Ctrl-C came during the argument checks
        assert "from an earlier run" in (out / "UNFINISHED.txt").read_text()


def test_a_finished_run_leaves_no_mark(tmp_path):
    out = run_tiny(tmp_path, "done")
    assert (out / "metrics.json").exists() and not (out / "UNFINISHED.txt").exists()
