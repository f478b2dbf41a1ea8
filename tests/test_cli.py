"""The `verl-lambda` command line: every command is reachable, and a mistake is one line and exit 2."""

import subprocess
import sys

import pytest


def verl_lambda(*argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "verl_lambda", *argv], capture_output=True, text=True, timeout=timeout)


def test_the_top_level_help_lists_every_command():
    done = verl_lambda("--help")
    assert done.returncode == 0
    for command in ("demo", "smoke", "credit"):
        assert f"    {command} " in done.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["credit", "--length", "0"], "verl-lambda credit: error: --length must be at least 1"),
        (["credit", "--lam", "2"], "verl-lambda credit: error: --lam must be a number in [0, 1], got 2.0"),
        (["smoke"], "verl-lambda smoke: error: no training command"),
        (["smoke", "--timeout", "nan", "--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh"],
         "verl-lambda smoke: error: --timeout must be a positive number of seconds, got nan"),
        (["smoke", "--", "no-such-program-here"], "verl-lambda smoke: error: no-such-program-here: no such program"),
        (["demo", "--seed", "3"], "verl-lambda demo: error: unrecognized arguments: --seed 3"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_and_exit_2(argv, message):
    done = verl_lambda(*argv)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
