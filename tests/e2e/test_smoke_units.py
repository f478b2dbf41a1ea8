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
    args = ["a=1", f"+{KEY}=verl_lambda.verl.register", f"++{KEY}='m1,verl_lambda.smoke.worker'"]
    merged = merge_registration_args(args)
    assert merged[0] == "a=1"
    assert merged[1] == f"+{KEY}='{','.join([*HARNESS_MODULES, 'verl_lambda.verl.register'])}'"
    assert merged[2] == f"++{KEY}='{','.join([*HARNESS_MODULES, 'm1'])}'"


def test_env_puts_harness_modules_first_and_keeps_the_users():
    env = harness_env({"VERL_USE_EXTERNAL_MODULES": "mine, verl_lambda.smoke.worker", "PATH": "/bin"}, ["extra"])
    assert env["VERL_USE_EXTERNAL_MODULES"] == ",".join([*HARNESS_MODULES, "mine", "extra"])
    assert env["VERL_PLATFORM"] == "cpu" and env["VERL_ENGINE_DEVICE"] == "cuda"
    assert env["VERL_LAMBDA_HARNESS"] == "fsdp" and env["VERL_USE_UV"] == "0"
    assert harness_env({"PATH": "/bin"}, engine="megatron")["VERL_LAMBDA_HARNESS"] == "megatron"


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
        (["bash", "no/such/script.sh"], "no such script"),
        (["no-such-program-here", "x"], "no-such-program-here: no such program on PATH"),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"], None),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_megatron.sh"], None),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh"], None),
        (["python", "-m", "verl.trainer.main_ppo", "model_engine=megatron"], None),
        (["python", "-m", "verl_lambda.launch.main_ppo", "trainer.experiment_name=megatron_vs_fsdp"], None),
    ],
)
def test_commands_that_cannot_run_on_the_cpu_harness(command, problem):
    found = cli.check_command(command)
    assert (found is None) if problem is None else (problem in found), found


def test_a_hint_never_names_a_file_that_is_not_there(tmp_path):
    """A multi-node script outside recipes/ (no runtime env to rehearse) is refused without naming a twin file."""
    script = tmp_path / "run_x_megatron_multinode.sh"
    script.write_text('python -m verl.trainer.main_ppo "$@"\n')
    found = cli.check_command(["bash", str(script)])
    assert "rehearsed through a recipe of recipes/" in found and "twin" not in found


@pytest.mark.parametrize(
    "command, engine, multinode",
    [
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"], "fsdp", False),
        (["bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh"], "megatron", False),
        (["bash", "recipes/run_r1-distill-qwen-7b_grpo_lambda_megatron_multinode.sh"], "megatron", True),
        (["python", "-m", "verl.trainer.main_ppo", "--config-name=ppo_megatron_trainer"], "megatron", False),
        (["python", "-m", "verl_lambda.launch.main_ppo", "+model_engine=megatron"], "megatron", False),
    ],
)
def test_the_engine_and_the_route_of_a_command(command, engine, multinode):
    assert cli.engine_of(command) == engine and cli.is_multinode(command) == multinode


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timeout", "nan", "--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"], "--timeout must be"),
        (["--timeout", "inf", "--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"], "--timeout must be"),
        (["--gpus", "2", "--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh"],
         "--gpus does not apply to a multi-node recipe"),
    ],
)  # fmt: skip
def test_bad_smoke_arguments_are_one_line(argv, message):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert message in cli.problem_with(parser.parse_args(argv))


def test_a_missing_extra_is_one_line_naming_the_pip_command(monkeypatch):
    real = cli._importable
    monkeypatch.setattr(cli, "_importable", lambda name: name != "transfer_queue" and real(name))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda.sh"])
    assert cli.problem_with(args) == (
        "verl-lambda smoke of this command needs transfer_queue, which is not installed here: "
        "pip install 'verl-lambda[smoke]'"
    )
    monkeypatch.setattr(cli, "_importable", lambda name: name != "mbridge" and real(name))
    args = parser.parse_args(["--", "bash", "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh"])
    assert "needs mbridge" in cli.problem_with(args) and "pip install 'verl-lambda[megatron]'" in cli.problem_with(args)


@pytest.mark.parametrize(
    "argv, found",
    [
        (["python", "-m", "verl.trainer.main_ppo", "a=1", "b=2"], ["a=1", "b=2"]),
        (["python3", "-X", "faulthandler", "-m", "verl.trainer.main_ppo", "a=1"], ["a=1"]),
        (["python", "/x/site-packages/verl/trainer/main_ppo.py", "a=1"], ["a=1"]),
        (["python", "-m", "verl_lambda.launch.main_ppo", "a=1"], None),
        (["python", "-c", "import verl"], None),
        (["/usr/bin/raylet"], None),
    ],
)
def test_the_driver_of_a_plain_verl_command_is_recognised(argv, found):
    from verl_lambda.smoke.worker import plain_verl_arguments

    assert plain_verl_arguments(argv) == found


def test_importing_the_harness_modules_patches_nothing():
    """Outside a harness run (no VERL_LAMBDA_HARNESS), importing the smoke package's modules leaves torch
    and verl as they are."""
    import subprocess
    import sys

    code = (
        "import torch, verl.utils.distributed as d\n"
        "before = (torch.Tensor.pin_memory, d.initialize_global_process_group_ray, torch.cuda.current_device)\n"
        "import verl_lambda.smoke.worker, verl_lambda.smoke.platform, verl_lambda.smoke.rollout\n"
        "import verl_lambda.smoke.megatron_cpu, verl_lambda.smoke.harness, verl_lambda.smoke.cli\n"
        "from verl.plugin.platform.platform_manager import PlatformRegistry\n"
        "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
        "after = (torch.Tensor.pin_memory, d.initialize_global_process_group_ray, torch.cuda.current_device)\n"
        "assert before == after, 'patched on import'\n"
        "assert PlatformRegistry.get('cpu') is None, 'cpu platform registered on import'\n"
        "assert 'hf' not in RolloutReplicaRegistry._registry, 'hf rollout registered on import'\n"
        "print('clean')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "VERL_LAMBDA_HARNESS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip().endswith("clean"), done.stderr[-2000:]


def test_cli_arguments_take_the_command_after_the_separator():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--steps", "1", "--", "bash", "recipes/x.sh", "a=b", "--flag"])
    assert args.steps == 1 and cli._strip_separator(args.training_command) == ["bash", "recipes/x.sh", "a=b", "--flag"]
