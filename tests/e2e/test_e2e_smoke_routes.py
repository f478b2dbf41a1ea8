"""``verl-lambda smoke`` rehearses what a user really runs: verl-style example scripts as given, and the
launcher's checks on every command line, plain ``verl.trainer.main_ppo`` included.

* ``verl_example_uv`` — a script of the shape of verl's own examples (``tests/fixtures/verl_example``:
  a ``uv run`` launcher unless ``VERL_USE_UV=0``, the same launcher handed to Ray's workers as
  ``py_executable``), with the README's switches after its GRPO ones, runs as given on this machine
  (which has no ``uv``): the harness flips the script's own switch and gives Ray this interpreter.
* a plain verl command that pairs the GRPO-λ loss with GRPO's advantages (``algorithm.adv_estimator=grpo``
  pasted after the switches) is refused with the launcher's one line and exit status 2 before Ray
  starts, as ``python -m verl_lambda.launch.main_ppo`` would refuse it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import e2e_support as e2e
from test_e2e_recipes import SMOKE_TIMEOUT_S, trainer_steps_of_smoke_run

from verl_lambda.smoke.harness import HarnessSizes

EXAMPLE = e2e.REPO / "tests" / "fixtures" / "verl_example" / "run_tiny_grpo_lambda_uv.sh"
VERL_EXAMPLE = e2e.TrainerRun(
    name="verl_example_uv",
    command=e2e.python_module(
        "verl_lambda.smoke", "--steps", "1", "--keep", "--timeout", str(SMOKE_TIMEOUT_S), "--", "bash", str(EXAMPLE)
    ),
    sizes=HarnessSizes(steps=1),
    append_overrides=False,
)


def test_a_verl_example_script_runs_as_given(trainer_outcome):
    outcome = trainer_outcome(VERL_EXAMPLE)
    trainer_steps_of_smoke_run(outcome)
    outcome.require_success()
    log = outcome.result.log_text()
    assert "replaced: a `uv run` launcher -> this Python (VERL_USE_UV=0" in log
    assert outcome.loss_calls and {c["loss_name"] for c in outcome.loss_calls} == {"grpo_lambda"}
    for call in outcome.loss_calls:
        e2e.check_loss(call)
    for call in outcome.advantage_calls:
        e2e.check_advantages(call)
    assert min(float(c["advantages"].min()) for c in outcome.advantage_calls) >= -0.1 - 1e-6  # the clamp: GRPO-λ's


def test_a_mis_paired_plain_verl_command_is_refused_with_the_launchers_line(e2e_guard):
    """The README's switches, then a pasted algorithm.adv_estimator=grpo: the GRPO-λ loss on GRPO's
    unclamped advantages. The smoke run refuses it before Ray starts, as the launcher does."""
    command = [
        *e2e.python_module("verl.trainer.main_ppo"),
        "algorithm.adv_estimator=grpo_lambda",
        "actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig",
        "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
        "algorithm.adv_estimator=grpo",
    ]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "verl_lambda", "smoke", "--", *command],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=e2e.REPO,
    )
    e2e.record_time("smoke refuses a mis-paired plain verl command", time.monotonic() - started, done.returncode == 2)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert errors == [
        "verl-lambda smoke: error: actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda needs "
        "algorithm.adv_estimator=grpo_lambda, got 'grpo': set algorithm.adv_estimator=grpo_lambda (for GRPO's "
        "unclamped advantages add +algorithm.grpo_lambda.adv_clamp=null)"
    ], done.stderr[-2000:]
    assert "Ray started" not in done.stdout and "Traceback" not in done.stderr
