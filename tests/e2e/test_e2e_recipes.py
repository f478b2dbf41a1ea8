"""The FSDP recipe scripts end to end, through their real launch path, via ``python -m verl_lambda.smoke``.

``python -m verl_lambda.smoke --steps 1 -- bash recipes/run_<model>_<method>.sh`` runs the script
as a user would (bash, its environment defaults, ``python3 -m verl_lambda.launch.main_ppo``) with the
CPU-harness overrides appended through its ``"$@"``, for one training step; e2e_capture checks
every estimator and loss call on the way. The recipes differ across models only in values (model
id, data files, lengths, rollout TP), which the harness replaces, so one model's GRPO-λ recipe and
its GRPO twin cover every distinct override shape; the dry-run tests (tests/test_recipes.py)
compose every recipe. ``VERL_LAMBDA_E2E_RECIPES=all`` runs every FSDP recipe, or give a comma
list of script names. The Megatron recipes run in test_e2e_megatron.py.

Also here: the smoke check's refusals and failure report, and that a run stopped at its time
limit leaves no process behind.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import e2e_support as e2e
import psutil
import pytest

from verl_lambda.smoke.harness import HarnessSizes, harness_env, make_ray_temp_dir, parse_step_metrics, run_logged

RECIPES = e2e.REPO / "recipes"
RECIPES_ENV = "VERL_LAMBDA_E2E_RECIPES"
DEFAULT_RECIPES = ["run_qwen2.5-7b-instruct_grpo_lambda.sh", "run_qwen2.5-7b-instruct_grpo.sh"]
SMOKE_TIMEOUT_S = 700  # inside the suite's own (longer) limit, so the smoke check reports first


def fsdp_recipes() -> list[str]:
    """Every single-node FSDP recipe script (``run_<model>_grpo_lambda.sh`` / ``run_<model>_grpo.sh``)."""
    return sorted(p.name for p in RECIPES.glob("run_*_grpo*.sh") if "megatron" not in p.name)


def chosen_recipes() -> list[str]:
    wanted = os.environ.get(RECIPES_ENV, "").strip()
    found = fsdp_recipes()
    if wanted == "all":
        return found
    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in found]
        assert not unknown, f"{RECIPES_ENV}: no such FSDP recipe {unknown}; found {found}"
        return names
    return [n for n in DEFAULT_RECIPES if n in found]


def recipe_run(recipe: str, *args: str, env: dict | None = None) -> e2e.TrainerRun:
    return e2e.TrainerRun(
        name=" ".join(["recipe", recipe, *args]),
        command=e2e.python_module(
            "verl_lambda.smoke",
            "--steps",
            "1",
            "--keep",
            "--timeout",
            str(SMOKE_TIMEOUT_S),
            "--",
            "bash",
            f"recipes/{recipe}",
            *args,
        ),
        sizes=HarnessSizes(steps=1),
        env=dict(env or {}),
        append_overrides=False,
    )


def trainer_steps_of_smoke_run(outcome: e2e.RunOutcome) -> None:
    """Read the trainer's own console metrics from the work folder the smoke check kept (``--keep``)."""
    marker = "[smoke] work folder kept: "
    lines = [line for line in outcome.result.log_text().splitlines() if line.startswith(marker)]
    if lines and not outcome.steps:
        work = Path(lines[-1][len(marker) :].strip())
        logs = [work / "train.log", work / "job.log"]  # a multi-node recipe's trainer logs in its Ray job
        outcome.steps = parse_step_metrics("\n".join(p.read_text(errors="replace") for p in logs if p.is_file()))
        shutil.rmtree(work, ignore_errors=True)


def test_fsdp_recipes_are_discovered():
    found = fsdp_recipes()
    assert found and all(name in found for name in DEFAULT_RECIPES), found
    assert all(name.endswith(("_grpo.sh", "_grpo_lambda.sh")) for name in found)


@pytest.mark.parametrize("recipe", chosen_recipes())
def test_recipe_trains_through_the_smoke_check(recipe, trainer_outcome):
    outcome = trainer_outcome(recipe_run(recipe))
    trainer_steps_of_smoke_run(outcome)
    outcome.require_success()
    log = outcome.result.log_text()
    lam = recipe.endswith("_grpo_lambda.sh")
    assert "[smoke] OK: 1 training step(s)" in log
    assert "What it did NOT exercise" in log and "vLLM / SGLang rollout" in log
    assert ("actor/grpo_lambda/trace_abs_mean" in log.split("[smoke] OK")[1]) == lam
    assert {c["estimator"] for c in outcome.advantage_calls} == {"grpo_lambda" if lam else "grpo"}
    assert {c["loss_name"] for c in outcome.loss_calls} == {"grpo_lambda" if lam else "vanilla"}
    for call in outcome.advantage_calls:
        e2e.check_advantages(call)
    for call in outcome.loss_calls:
        e2e.check_loss(call)
    names = e2e.PLUGIN_METRICS if lam else ["actor/pg_loss", "actor/ppo_kl", "actor/pg_clipfrac"]
    e2e.check_console_metrics(outcome, [*names, "actor/kl_loss"])  # the recipes turn the KL loss on
    assert any(e2e.is_off_policy(c) for c in outcome.loss_calls), "the second mini-batch should be off-policy"


def test_paper_recipe_trains_in_the_authors_conventions(trainer_outcome):
    """The authors' setup (LoRA, fixed micro-batches, bf16 weights) with GRPO-λ's end anchor and the
    weight application (APPLICATION=weight): every loss call equals the float64 reference."""
    run = recipe_run("paper/run.sh", "qwen2.5-1.5b-instruct", "math12k", "grpo_lambda", env={"APPLICATION": "weight"})
    outcome = trainer_outcome(run)
    trainer_steps_of_smoke_run(outcome)
    outcome.require_success()
    assert "[smoke] OK: 1 training step(s)" in outcome.result.log_text()
    settings = {tuple(c["settings"]["policy_loss"][k] for k in ("trace_anchor", "trace_application", "trace_epsilon"))
                for c in outcome.loss_calls}  # fmt: skip
    assert settings == {("end", "weight", 1e-7)}, settings
    for call in outcome.advantage_calls:
        e2e.check_advantages(call)
    for call in outcome.loss_calls:
        e2e.check_loss(call)
    e2e.check_console_metrics(outcome, e2e.PLUGIN_METRICS)


def _smoke(*args: str, timeout: float = 300) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "verl_lambda.smoke", *args],
        cwd=e2e.REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    return done.returncode, done.stdout + done.stderr


def test_smoke_refuses_a_missing_command():
    code, text = _smoke()
    assert code == 2 and "no training command" in text, text


def test_smoke_reports_a_failed_run_with_the_log_tail(e2e_guard):
    """The launcher refuses an unpaired estimator before Ray starts: the smoke check exits 1 and shows why."""
    started = time.monotonic()
    code, text = _smoke(
        "--", sys.executable, "-m", "verl_lambda.launch.main_ppo", "algorithm.adv_estimator=grpo_lambda"
    )
    e2e.record_time("smoke check of a refused command", time.monotonic() - started, code == 1)
    kept = re.search(r"work folder kept: (\S+)\)", text)
    if kept:  # a failed smoke check keeps its folder for the user; the test removes it
        shutil.rmtree(kept.group(1), ignore_errors=True)
    assert code == 1, text
    assert kept, text
    assert "[smoke] FAILED: the training command exited with status 2" in text
    assert "needs the GRPO-λ loss" in text  # the launcher's own line, from the log's tail


def test_a_run_stopped_at_its_time_limit_leaves_no_process(harness_assets, e2e_work_root):
    """Killed mid-run (Ray up, workers starting): the group, the raylet and every Ray worker are gone after."""
    ray_temp_dir = make_ray_temp_dir()
    from verl_lambda.smoke.harness import harness_overrides

    work = e2e_work_root / "time_limit"
    argv = e2e.python_module("verl_lambda.launch.main_ppo", *e2e.GRPO_LAMBDA_SWITCHES) + harness_overrides(
        harness_assets.model, harness_assets.train_file, harness_assets.val_file, ray_temp_dir, work
    )
    seen_ray = []

    def watch(line: str) -> None:
        if "Started a local Ray instance" in line:
            seen_ray.append(time.monotonic())

    result = run_logged(argv, harness_env(), work / "train.log", 45, ray_temp_dir=ray_temp_dir, on_line=watch)
    e2e.record_time("run stopped at a 45 s limit", result.wall_s, result.timed_out)
    assert result.timed_out and result.returncode is None
    assert seen_ray, f"Ray never started within the limit:\n{result.tail(20)}"
    assert result.killed_leftovers, "nothing was signalled: the Ray processes were not found"
    alive = [
        pid for pid in result.killed_leftovers if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert not alive, f"still running after the clean-up: {alive}"
    marker = str(ray_temp_dir)
    named = [p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert not named, f"processes still name the run's Ray temp dir: {named}"
    assert not ray_temp_dir.exists()
    assert "[harness] stopped after 45 s" in result.log_text()
