"""Fast checks of the smoke harness's pure parts (no Ray, no trainer): not marked e2e."""

from __future__ import annotations

import argparse

import pytest

import verl_lambda.smoke as smoke
from verl_lambda.smoke import cli
from verl_lambda.smoke.harness import (
    HARNESS_MODULES,
    HarnessError,
    harness_env,
    merge_registration_args,
    parse_step_metrics,
    refuse_foreign_ray,
)

KEY = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"


def test_other_verl_versions_are_refused_with_one_line(monkeypatch):
    import verl_lambda.verl.version as verl_version

    monkeypatch.setattr(verl_version, "installed_verl", lambda: "0.9.0")
    with pytest.raises(smoke.UnsupportedVerl) as err:
        smoke.require_supported_verl("verl_lambda.smoke.platform")
    text = str(err.value)
    assert "\n" not in text and "verl_lambda.smoke.platform" in text
    assert "supports verl==0.9.1" in text and "found verl 0.9.0" in text
    monkeypatch.setattr(verl_version, "installed_verl", lambda: "0.9.1")
    smoke.require_supported_verl("x")


def test_console_metrics_are_parsed_per_step():
    log = (
        "(TaskRunnerV1 pid=1) step:1 - actor/pg_loss:-0.15 - actor/grpo_lambda/trace_abs_max:0.0 - "
        "num_turns/mean:np.float64(2.0) - training/epoch:np.int64(0) - critic/x:nan\n"
        "noise step:2 without metrics\n"
        "step:2 - actor/pg_loss:1e-05 - actor/ppo_kl:-3.5e-07\n"
    )
    steps = parse_step_metrics(log)
    assert steps[1]["actor/pg_loss"] == -0.15 and steps[1]["num_turns/mean"] == 2.0
    assert steps[1]["training/epoch"] == 0.0 and steps[1]["critic/x"] != steps[1]["critic/x"]
    assert steps[2] == {"actor/pg_loss": 1e-05, "actor/ppo_kl": -3.5e-07}


def test_runtime_env_module_lists_keep_the_harness_modules():
    args = ["a=1", f"+{KEY}=verl_lambda.verl.register", f"++{KEY}='m1,verl_lambda.smoke.platform'"]
    merged = merge_registration_args(args)
    assert merged[0] == "a=1"
    assert merged[1] == f"+{KEY}='{','.join([*HARNESS_MODULES, 'verl_lambda.verl.register'])}'"
    assert merged[2] == f"++{KEY}='{','.join([*HARNESS_MODULES, 'm1'])}'"


def test_env_puts_harness_modules_first_and_keeps_the_users():
    env = harness_env({"VERL_USE_EXTERNAL_MODULES": "mine, verl_lambda.smoke.rollout", "PATH": "/bin"}, ["extra"])
    assert env["VERL_USE_EXTERNAL_MODULES"] == ",".join([*HARNESS_MODULES, "mine", "extra"])
    assert env["VERL_PLATFORM"] == "cpu" and env["VERL_ENGINE_DEVICE"] == "cuda"


def test_foreign_ray_clusters_are_refused():
    with pytest.raises(HarnessError, match="RAY_ADDRESS"):
        refuse_foreign_ray({"RAY_ADDRESS": "10.0.0.1:6379"})
    with pytest.raises(HarnessError, match="address=local"):
        refuse_foreign_ray({}, ["+ray_kwargs.ray_init.address=auto"])
    refuse_foreign_ray({}, ["++ray_kwargs.ray_init.address=local"])


@pytest.mark.parametrize(
    "command, problem",
    [
        ([], "no training command"),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_megatron.sh"], "FSDP twin: run_qwen2.5-7b-instruct_grpo.sh"),
        (["python", "-m", "verl.trainer.main_ppo", "model_engine=megatron"], "Megatron"),
        (["python", "-m", "verl.trainer.main_ppo", "--config-name=ppo_megatron_trainer"], "Megatron"),
        (["bash", "no/such/script.sh"], "no such script"),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"], None),
        (["python", "-m", "verl_lambda.launch.main_ppo", "trainer.experiment_name=megatron_vs_fsdp"], None),
    ],
)
def test_commands_that_cannot_run_on_the_cpu_harness(command, problem):
    found = cli.check_command(command)
    assert (found is None) if problem is None else (problem in found), found


def test_cli_arguments_take_the_command_after_the_separator():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--steps", "1", "--", "bash", "recipes/x.sh", "a=b", "--flag"])
    assert args.steps == 1 and cli._strip_separator(args.training_command) == ["bash", "recipes/x.sh", "a=b", "--flag"]
