"""The launcher (verl_lambda.launch.main_ppo) and its whole-config checks, in process on a CPU."""

import copy
import json
import re
import sys

import pytest
import yaml
from omegaconf import OmegaConf

import verl_lambda.launch.main_ppo as launcher
from verl_lambda.cli import DRY_RUN_ENV, LaunchError
from verl_lambda.launch.checks import check_launch
from verl_lambda.launch.grpo_lambda import set_worker_modules, worker_modules
from verl_lambda.launch.summary import summary_lines
from verl_lambda.verl.keys import REGISTRATION_KEY, TARGET

GRPO_LAMBDA = [
    "algorithm.adv_estimator=grpo_lambda",
    "+algorithm.grpo_lambda.adv_clamp=-0.1",
    f"actor_rollout_ref.actor.policy_loss._target_={TARGET}",
    "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
    "+actor_rollout_ref.actor.policy_loss.lam=0.99",
    "+actor_rollout_ref.actor.policy_loss.trace=recent",
]
RUN = [
    "actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.n=8",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    "actor_rollout_ref.actor.use_dynamic_bsz=True",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=10240",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64",
    "data.train_batch_size=128",
    "data.max_prompt_length=1024",
    "data.max_response_length=4096",
    "data.train_files=/nonexistent/train.parquet",
    "data.val_files=/nonexistent/val.parquet",
]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Fail the test if anything tries to start Ray or verl's training."""
    import ray
    import verl.trainer.main_ppo as verl_main_ppo

    def refuse(*args, **kwargs):
        raise AssertionError("Ray or verl's run_ppo was started")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(verl_main_ppo, "run_ppo", refuse)
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def compose(*overrides, config_name="ppo_trainer"):
    return launcher.compose_config(launcher.parse_args(["--config-name", config_name, *overrides]))


def launch(capsys, *argv):
    rc = launcher.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def rows(out):
    """Printed summary rows as {label: value}."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"\[verl_lambda\.launch\.main_ppo\]   (\S.*?)\s{2,}(\S.*)$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_dry_run_prints_the_resolved_settings(capsys):
    rc, out, err = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN)
    assert rc == 0, err
    r = rows(out)
    assert r["algorithm.adv_estimator"] == "grpo_lambda"
    assert r["algorithm.grpo_lambda.adv_clamp"] == "-0.1"
    assert r["algorithm.norm_adv_by_std_in_grpo"] == "True"
    assert r["actor_rollout_ref.actor.policy_loss.lam"] == "0.99"
    assert r["actor_rollout_ref.actor.policy_loss.gamma"] == "1.0"
    assert r["actor_rollout_ref.actor.policy_loss.trace"] == "recent"
    assert r["actor_rollout_ref.actor.policy_loss.trace_norm"] == "none"
    assert r["trace horizon 1/(1 - gamma*lam)"] == "100 tokens"
    assert r["plugin in Ray workers"] == "VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register"
    assert r["GPUs"] == "8 = 1 node(s) x 8"
    assert r["actor engine"] == "fsdp (Ulysses SP 1) -> DP 8"
    assert r["responses per step (x rollout.n)"] == "1024 = 128 x 8"
    assert r["optimizer updates per step"] == "2 x 1 epoch(s) (ppo_mini_batch_size 64 prompts = 512 responses)"
    assert r["max prompt / response / sequence tokens"] == "1024 / 4096 / 5120"
    assert r["tokens per step at most"] == str(1024 * 5120)
    assert r["actor micro-batches"] == "dynamic, 10240 tokens per GPU"
    assert r["rollout"] == "vllm, TP 2 -> 4 replicas, temperature 1.0"
    assert "verl validate_config: passed" in out
    assert "dry run: config composed and checked, Ray not started" in out
    assert "warning: data.train_files: /nonexistent/train.parquet does not exist" in out
    assert err == ""


def test_dry_run_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    rc, out, _ = launch(capsys, *GRPO_LAMBDA, *RUN, "+actor_rollout_ref.actor.policy_loss.trace=both")
    assert rc == 0
    assert rows(out)["actor_rollout_ref.actor.policy_loss.trace"] == "both"  # a repeated +key overrides


@pytest.mark.parametrize(
    "engine_args",
    [
        ["--config-name", "ppo_megatron_trainer"],
        ["--config-name=ppo_megatron_trainer"],
        ["-cn", "ppo_megatron_trainer"],
        ["model_engine=megatron"],
    ],
)
def test_megatron_config_tree(capsys, engine_args):
    megatron = [
        "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
        "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2",
        "actor_rollout_ref.actor.megatron.context_parallel_size=2",
        "trainer.nnodes=2",
    ]
    rc, out, err = launch(capsys, "--dry-run", *engine_args, *GRPO_LAMBDA, *RUN, *megatron)
    assert rc == 0, err
    r = rows(out)
    assert r["actor engine"] == "megatron TP 2 x PP 2 x CP 2 -> DP 2"
    assert r["GPUs"] == "16 = 2 node(s) x 8"
    assert r["rollout"] == "vllm, TP 2 -> 8 replicas, temperature 1.0"


def test_grpo_baseline_runs_with_grpo_lambda_off(capsys):
    rc, out, err = launch(capsys, "--dry-run", "algorithm.adv_estimator=grpo", *RUN)
    assert rc == 0, err
    assert rows(out)["off"] == "algorithm.adv_estimator=grpo actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"
    assert "actor_rollout_ref.actor.policy_loss.lam" not in rows(out)


@pytest.fixture(scope="module")
def base_configs():
    """Composed once per engine; each case below changes a copy (as a Hydra override would)."""
    return {
        "fsdp": compose(*GRPO_LAMBDA, *RUN),
        "megatron": compose(*GRPO_LAMBDA, *RUN, config_name="ppo_megatron_trainer"),
    }


def variant(base, **changes):
    cfg = copy.deepcopy(base)
    for key, value in changes.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


PL = "actor_rollout_ref__actor__policy_loss__"
BASELINE = {
    "algorithm__adv_estimator": "grpo",
    PL + "loss_mode": "vanilla",
    PL + "_target_": "verl.workers.config.PolicyLossConfig",
}
BAD = [
    (
        {
            "algorithm__adv_estimator": "grpo_lambda",
            **{k: v for k, v in BASELINE.items() if k != "algorithm__adv_estimator"},
        },
        "algorithm.adv_estimator=grpo_lambda needs the GRPO-λ loss, got "
        "actor_rollout_ref.actor.policy_loss.loss_mode='vanilla'",
    ),
    (
        {"algorithm__adv_estimator": "grpo"},
        "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda needs algorithm.adv_estimator=grpo_lambda, "
        "got 'grpo'",
    ),
    (
        {PL + "_target_": "verl.workers.config.PolicyLossConfig"},
        f"needs its config class: set actor_rollout_ref.actor.policy_loss._target_={TARGET}",
    ),
    (
        {"algorithm__rollout_correction__bypass_mode": True},
        "algorithm.rollout_correction.bypass_mode=true cannot run GRPO-λ",
    ),
    ({PL + "lam": 2}, "actor_rollout_ref.actor.policy_loss.lam must be a number in [0, 1], got 2"),
    ({PL + "gamma": -1}, "actor_rollout_ref.actor.policy_loss.gamma"),
    ({PL + "trace": "sideways"}, "actor_rollout_ref.actor.policy_loss.trace"),
    ({PL + "trace_norm": "max"}, "actor_rollout_ref.actor.policy_loss.trace_norm"),
    ({"algorithm__grpo_lambda__adv_clamp": 0.5}, "algorithm.grpo_lambda.adv_clamp must be a number ≤ 0 or null"),
    ({"algorithm__grpo_lambda__lam": 0.9}, "algorithm.grpo_lambda.lam is a loss setting"),
    ({"actor_rollout_ref__rollout__n": 1}, "actor_rollout_ref.rollout.n=1"),
    ({**BASELINE, "algorithm__grpo_lambda__adv_clamp": -0.1}, "which ignores it"),
    (
        {"actor_rollout_ref__actor__ppo_max_token_len_per_gpu": 4096},
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=4096 x ulysses_sequence_parallel_size=1 is below the "
        "longest "
        "sequence, data.max_prompt_length + data.max_response_length = 5120: raise it to at least 5120",
    ),
    ({"actor_rollout_ref__rollout__log_prob_max_token_len_per_gpu": 5000}, "log_prob_max_token_len_per_gpu=5000"),
    (
        {"actor_rollout_ref__ref__log_prob_max_token_len_per_gpu": 5000, "actor_rollout_ref__actor__use_kl_loss": True},
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=5000",
    ),
    ({"actor_rollout_ref__rollout__log_prob_use_dynamic_bsz": False}, "verl's actor worker needs both equal"),
    ({"actor_rollout_ref__rollout__tensor_model_parallel_size": 3}, "tensor_model_parallel_size=3"),
    ({"reward__custom_reward_function__path": "pkg://no_such_package.reward"}, "no module no_such_package.reward"),
    (
        {
            "reward__custom_reward_function__path": "pkg://verl_lambda.math.reward",
            "reward__custom_reward_function__name": "score",
        },
        "verl_lambda.math.reward has no such function",
    ),
    ({"reward__custom_reward_function__path": "/nonexistent/reward.py"}, "file not found"),
    (
        {"engine": "megatron", "actor_rollout_ref__actor__megatron__tensor_model_parallel_size": 3},
        "8 GPUs is not a multiple of Megatron's TP x PP x CP = 3 x 1 x 1",
    ),
    (
        {
            "engine": "megatron",
            "actor_rollout_ref__actor__megatron__tensor_model_parallel_size": 2,
            "actor_rollout_ref__actor__megatron__pipeline_model_parallel_size": 2,
            "trainer__n_gpus_per_node": 6,
        },
        "6 GPUs is not a multiple of Megatron's TP x PP x CP = 2 x 2 x 1",
    ),
]


@pytest.mark.parametrize("changes, message", BAD, ids=[m[:40] for _, m in BAD])
def test_check_launch_refuses(base_configs, changes, message):
    changes = dict(changes)
    cfg = variant(base_configs[changes.pop("engine", "fsdp")], **changes)
    with pytest.raises(LaunchError) as err:
        check_launch(cfg, dry_run=True)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_base_configs_pass(base_configs):
    for cfg in base_configs.values():
        report = check_launch(cfg, dry_run=True)
        run = report.grpo_lambda
        assert run is not None and run.settings.loss.lam == 0.99 and run.settings.advantage.adv_clamp == -0.1


def test_sequence_parallel_multiplies_the_token_budget():
    base = [
        *RUN,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=3000",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=3000",
    ]
    with pytest.raises(LaunchError):
        check_launch(compose(*base), dry_run=True)
    check_launch(compose(*base, "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2"), dry_run=True)
    check_launch(
        compose(*base, "model_engine=megatron", "actor_rollout_ref.actor.megatron.context_parallel_size=2"),
        dry_run=True,
    )


def test_missing_data_is_an_error_outside_a_dry_run(tmp_path):
    cfg = compose(*RUN)
    assert any("does not exist" in w for w in check_launch(cfg, dry_run=True).warnings)
    with pytest.raises(LaunchError, match="data.train_files: /nonexistent/train.parquet does not exist"):
        check_launch(cfg, dry_run=False)
    for name in ("train", "val"):
        (tmp_path / f"{name}.parquet").write_bytes(b"")
    cfg = compose(*RUN, f"data.train_files={tmp_path}/train.parquet", f"data.val_files=[{tmp_path}/val.parquet]")
    assert check_launch(cfg, dry_run=False).warnings == []


def test_local_model_context_is_checked(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    with pytest.raises(LaunchError, match="5120 exceeds the model's context of 4096 tokens"):
        check_launch(compose(*RUN, f"actor_rollout_ref.model.path={model}"), dry_run=True)
    check_launch(compose(*RUN, f"actor_rollout_ref.model.path={model}", "data.max_response_length=3072"), dry_run=True)
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096, "rope_scaling": {"type": "yarn"}}))
    check_launch(compose(*RUN, f"actor_rollout_ref.model.path={model}"), dry_run=True)
    missing = compose(*RUN, f"actor_rollout_ref.model.path={tmp_path}/absent")
    assert any("does not exist on this machine" in w for w in check_launch(missing, dry_run=True).warnings)


def test_ray_job_without_the_runtime_env_gets_a_warning():
    cfg = compose(*RUN)
    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    assert any("runtime_env.yaml" in w for w in check_launch(cfg, True, environ=job).warnings)
    ok = {**job, "VERL_USE_EXTERNAL_MODULES": "other.mod,verl_lambda.verl.register"}
    assert not any("runtime_env.yaml" in w for w in check_launch(cfg, True, environ=ok).warnings)


@pytest.mark.parametrize("version", ["0.7.1", "0.8.0"])
def test_ray_job_without_the_runtime_env_is_refused_where_verl_loads_no_entry_points(version):
    from verl_lambda.launch.grpo_lambda import check_job_environment

    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    with pytest.raises(LaunchError, match=rf"verl {version} loads no plugin entry points.*runtime_env\.yaml"):
        check_job_environment(job, verl_version=version)
    assert check_job_environment({**job, "VERL_USE_EXTERNAL_MODULES": "verl_lambda.verl.register"}, version) == []
    assert check_job_environment({}, version) == []  # not a Ray job: the launcher's runtime env carries it
    assert len(check_job_environment(job, verl_version="0.9.0")) == 1  # a warning only


@pytest.mark.parametrize(
    "driver, command_line, expected",
    [
        (None, None, "verl_lambda.verl.register"),
        (None, "my.plugin", "my.plugin,verl_lambda.verl.register"),
        (None, "verl_lambda.verl.register", "verl_lambda.verl.register"),
        (None, "a.b, verl_lambda.verl.register", "a.b,verl_lambda.verl.register"),
        ("cpu_platform,hf_rollout", None, "cpu_platform,hf_rollout,verl_lambda.verl.register"),
        # the recipes' old value verbatim must not drop the driver's modules
        ("cpu_platform,hf_rollout", "verl_lambda.verl.register", "cpu_platform,hf_rollout,verl_lambda.verl.register"),
        ("a,b", "b,c,a", "a,b,c,verl_lambda.verl.register"),
        ("x.y", "\\${VERL_USE_EXTERNAL_MODULES},z", "x.y,z,verl_lambda.verl.register"),
        (" , ", ",", "verl_lambda.verl.register"),
    ],
)
def test_worker_modules_merge_the_driver_environment_and_the_command_line(driver, command_line, expected):
    extra = [] if command_line is None else [f"+{REGISTRATION_KEY}='{command_line}'"]
    environ = {} if driver is None else {"VERL_USE_EXTERNAL_MODULES": driver}
    cfg = compose(*RUN, *extra)
    assert ",".join(worker_modules(cfg, environ)) == expected
    set_worker_modules(cfg, environ)
    assert OmegaConf.select(cfg, REGISTRATION_KEY) == expected


def test_registration_is_merged_into_the_config_verl_gets(capsys, tmp_path):
    saved = tmp_path / "config.yaml"
    rc, _, err = launch(
        capsys,
        "--dry-run",
        "algorithm.adv_estimator=grpo",
        *RUN,
        f"+{REGISTRATION_KEY}=my.plugin",
        "--save-config",
        str(saved),
    )
    assert rc == 0, err
    cfg = yaml.safe_load(saved.read_text())
    assert cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == (
        "my.plugin,verl_lambda.verl.register"
    )


def test_driver_modules_reach_the_config_verl_gets(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "user.platform")
    saved = tmp_path / "config.yaml"
    rc, out, err = launch(
        capsys,
        "--dry-run",
        "algorithm.adv_estimator=grpo",
        *RUN,
        f"+{REGISTRATION_KEY}=verl_lambda.verl.register",
        "--save-config",
        str(saved),
    )
    assert rc == 0, err
    cfg = yaml.safe_load(saved.read_text())
    assert cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == (
        "user.platform,verl_lambda.verl.register"
    )
    assert "VERL_USE_EXTERNAL_MODULES=user.platform,verl_lambda.verl.register" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["actor_rollout_ref.actor.policy_loss.lam=2"],
            "Could not override 'actor_rollout_ref.actor.policy_loss.lam'. To append to your config use "
            "+actor_rollout_ref.actor.policy_loss.lam=2",
        ),
        (
            GRPO_LAMBDA + ["actor_rollout_ref.actor.policy_loss.lam=2"],
            "actor_rollout_ref.actor.policy_loss.lam must be a number in [0, 1], got 2",
        ),
        (["actor_rollout_ref.actor.use_dynamic_bsz=False"], "verl validate_config: [actor] Please set at least one of"),
        (["--cfg", "job"], "--cfg: verl_lambda.launch.main_ppo launches one checked job and takes no other flag"),
        (["--multirun"], "--multirun: verl_lambda.launch.main_ppo launches one checked job"),
        (["-m"], "-m: verl_lambda.launch.main_ppo launches one checked job"),
        (["--save-config"], "--save-config needs a value"),
    ],
)
def test_errors_are_one_line_and_start_nothing(capsys, argv, message):
    rc, out, err = launch(capsys, "--dry-run", *RUN, *argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("verl_lambda.launch.main_ppo: error: ")
    assert message in err
    assert "dry run" not in out


def test_parse_args_keeps_verl_arguments_in_order():
    args = launcher.parse_args(
        ["-cn", "ppo_megatron_trainer", "a.b=1", "+c.d=2", "--dry-run", "+c.d=3", "--save-config=x.yaml", "~e.f"]
    )
    assert args.dry_run and args.save_config == "x.yaml"
    assert args.overrides == ["a.b=1", "+c.d=2", "++c.d=3", "~e.f"]
    assert args.config_name == "ppo_megatron_trainer"
    with pytest.raises(LaunchError, match="takes no other flag"):
        launcher.parse_args(["--cfg", "job", "a.b=1"])


def test_multirun_is_refused_outside_a_dry_run_too(capsys):
    """A multirun would hand verl jobs nobody checked (a sweep to trace=bogus, lam=5, rollout.n=1)."""
    rc, out, err = launch(capsys, *GRPO_LAMBDA, *RUN, "--multirun", "++actor_rollout_ref.actor.policy_loss.trace=bogus")
    assert rc == 2 and "launches one checked job" in err and err.count("\n") == 1


def test_help_prints_the_launchers_usage(capsys):
    rc, out, err = launch(capsys, "--help")
    assert rc == 0 and out.startswith("usage: python -m verl_lambda.launch.main_ppo") and err == ""


@pytest.mark.filterwarnings("ignore:Disabled critic")
def test_real_launch_hands_the_checked_config_to_verl(capsys, monkeypatch, tmp_path):
    """Outside a dry run the launcher hands the config it composed and checked to verl's own main
    (Hydra's pass-through): the object verl runs is the checked one, nothing is composed again."""
    import verl.trainer.main_ppo as verl_main_ppo

    for name in ("train", "val"):
        (tmp_path / f"{name}.parquet").write_bytes(b"")
    captured = {}
    monkeypatch.setattr(
        verl_main_ppo,
        "run_ppo",
        lambda config, task_runner_class: captured.update(config=config, runner=task_runner_class),
    )
    composed = []
    real_compose = launcher.compose_config
    monkeypatch.setattr(launcher, "compose_config", lambda args: composed.append(args) or real_compose(args))
    monkeypatch.chdir(tmp_path)
    data = [f"data.train_files={tmp_path}/train.parquet", f"data.val_files={tmp_path}/val.parquet"]
    rc, out, err = launch(capsys, *GRPO_LAMBDA, *RUN, *data, "+actor_rollout_ref.actor.policy_loss.lam=0.9")
    assert rc == 0, err
    config = captured["config"]
    assert captured["runner"] is verl_main_ppo.TaskRunnerV1
    assert config.algorithm.adv_estimator == "grpo_lambda"
    assert config.actor_rollout_ref.actor.policy_loss.lam == 0.9
    assert config.actor_rollout_ref.actor.policy_loss.trace_anchor == "token"  # every setting stated
    assert config.algorithm.grpo_lambda.adv_clamp == -0.1
    assert len(composed) == 1
    assert not (tmp_path / "outputs").exists()
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_lambda.verl.register"
    assert "dry run" not in out
    assert rows(out)["actor_rollout_ref.actor.policy_loss.lam"] == "0.9"


def test_summary_of_an_unbounded_trace():
    cfg = compose(*GRPO_LAMBDA, *RUN, "actor_rollout_ref.actor.policy_loss.lam=1.0")
    report = check_launch(cfg, dry_run=True)
    lines = summary_lines(cfg, report.shape, report.grpo_lambda, report.warnings)
    assert any(re.search(r"trace horizon .*unbounded", line) for line in lines)


# Mistakes a user makes on the command line: each must end the launch with one line and exit 2,
# before Ray, never with a traceback (verl would otherwise fail late on the GPUs, or run wrongly).
A, R, PL = "actor_rollout_ref.actor.", "actor_rollout_ref.rollout.", "actor_rollout_ref.actor.policy_loss."
WHOLE = "must be a whole number ≥ 1, got"
BAD_COMMAND_LINES = [
    ([f"{R}n=abc"], {}, f"{R}n {WHOLE} 'abc'"),
    ([f"{R}n=2.5"], {}, f"{R}n {WHOLE} 2.5"),
    ([f"{R}n=1"], {}, f"{R}n=1: GRPO-λ normalises rewards"),
    ([f"{A}ppo_mini_batch_size=0"], {}, f"{A}ppo_mini_batch_size {WHOLE} 0"),
    (["trainer.n_gpus_per_node=abc"], {}, f"trainer.n_gpus_per_node {WHOLE} 'abc'"),
    (["trainer.n_gpus_per_node=0"], {}, f"trainer.n_gpus_per_node {WHOLE} 0"),
    (["trainer.nnodes=0"], {}, f"trainer.nnodes {WHOLE} 0"),
    (["trainer.nnodes=1.5"], {}, f"trainer.nnodes {WHOLE} 1.5"),
    (
        [f"{A}ulysses_sequence_parallel_size=3"],
        {},
        f"8 GPUs cannot be split into Ulysses groups of {A}ulysses_sequence_parallel_size=3",
    ),
    ([f"{R}tensor_model_parallel_size=0"], {}, f"{R}tensor_model_parallel_size {WHOLE} 0"),
    (["data.max_response_length=-5"], {}, f"data.max_response_length {WHOLE} -5"),
    (["data.train_batch_size=0"], {}, f"data.train_batch_size {WHOLE} 0"),
    ([f"{A}ppo_epochs=0"], {}, f"{A}ppo_epochs {WHOLE} 0"),
    ([f"{A}clip_ratio_c=1.0"], {}, f"{A}clip_ratio_c must be a number > 1, got 1.0"),
    ([f"{A}clip_ratio=-0.2"], {}, f"{A}clip_ratio must be a number ≥ 0 and < 1, got -0.2"),
    (
        ["algorithm.norm_adv_by_std_in_grpo='false'"],
        {},
        "algorithm.norm_adv_by_std_in_grpo must be true or false, got 'false' (write it unquoted",
    ),
    ([f"{A}use_dynamic_bsz='yes'"], {}, f"{A}use_dynamic_bsz must be true or false, got 'yes'"),
    ([f"{A}ppo_max_token_len_per_gpu=100"], {}, "is below the longest sequence"),
    ([f"{PL}lam=2"], {}, f"{PL}lam must be a number in [0, 1], got 2"),
    ([f"+{PL}trace_anchor=bogus"], {}, f"{PL}trace_anchor must be one of ['token', 'end'], got 'bogus'"),
    (["+algorithm.grpo_lambda.lam=0.9"], {}, "algorithm.grpo_lambda.lam is a loss setting"),
    (["algorithm.adv_estimator=grpo"], {}, f"{PL}loss_mode=grpo_lambda needs algorithm.adv_estimator=grpo_lambda"),
    (["reward.custom_reward_function.path=pkg://no_such_package.reward"], {}, "no module no_such_package.reward"),
    (
        ["model_engine=megatron", f"{A}megatron.tensor_model_parallel_size=3"],
        {},
        "8 GPUs is not a multiple of Megatron's TP x PP x CP = 3 x 1 x 1",
    ),
    (
        [],
        {"GRPO_LAMBDA_TRACE_NORM": "max"},
        f"{PL}trace_norm (from GRPO_LAMBDA_TRACE_NORM) must be one of ['none', 'sum'], got 'max'",
    ),
    ([], {"GRPO_LAMBDA_GAMMA": "high"}, f"{PL}gamma (from GRPO_LAMBDA_GAMMA) expects a number, got 'high'"),
    ([], {DRY_RUN_ENV: "maybe"}, "VERL_LAMBDA_DRY_RUN must be one of 1/true/yes/on or 0/false/no/off, got 'maybe'"),
    (
        ["--save-config", "/proc/no/such/dir/config.yaml"],
        {},
        "--save-config /proc/no/such/dir/config.yaml: cannot write it",
    ),
    (["--config-name"], {}, "--config-name needs a value"),
    # a misspelt GRPO_LAMBDA_* variable would leave its setting at the default without a word
    ([], {"GRPO_LAMBDA_TRCAE": "both"}, "GRPO_LAMBDA_TRCAE is not a GRPO-λ variable: did you mean GRPO_LAMBDA_TRACE?"),
    ([], {"GRPO_LAMBDA_LAMDA": "0.5"}, "GRPO_LAMBDA_LAMDA is not a GRPO-λ variable: did you mean GRPO_LAMBDA_LAM?"),
    # an unknown or misplaced policy_loss key would be a raw dataclass error in every actor worker
    (
        [f"+{PL}trcae=both"],
        {},
        f"{PL}trcae is not a key of verl_lambda.verl.config.GRPOLambdaLossConfig: did you mean trace?",
    ),
    ([f"+{PL}adv_clamp=-0.2"], {}, f"{PL}adv_clamp is an estimator setting: set +algorithm.grpo_lambda.adv_clamp=..."),
    # clip ratios outside their meaningful range: a floor 1 − 2 = −1 admits every ratio
    ([f"{A}clip_ratio_low=2"], {}, f"{A}clip_ratio_low must be a number ≥ 0 and < 1, got 2"),
    ([f"{A}clip_ratio=1.0"], {}, f"{A}clip_ratio must be a number ≥ 0 and < 1, got 1.0"),
    (
        ["--dryrun"],
        {},
        "--dryrun: verl_lambda.launch.main_ppo launches one checked job and takes no other flag: "
        "did you mean --dry-run?",
    ),
]


@pytest.mark.parametrize("argv, env, message", BAD_COMMAND_LINES, ids=[m[:50] for _, _, m in BAD_COMMAND_LINES])
def test_every_bad_command_line_is_one_line_and_exit_2(capsys, monkeypatch, argv, env, message):
    assert len(BAD_COMMAND_LINES) >= 20
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    dry = [] if DRY_RUN_ENV in env else ["--dry-run"]
    rc, out, err = launch(capsys, *dry, *GRPO_LAMBDA, *RUN, *argv)
    assert rc == 2, out + err
    assert err.count("\n") == 1 and err.startswith("verl_lambda.launch.main_ppo: error: "), err
    assert "Traceback" not in out + err
    assert message in err


def test_the_math_reward_without_math_verify_is_refused_before_ray(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
    rc, _, err = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN, "reward.custom_reward_function.path=pkg://verl_lambda.math.reward",
                        "reward.custom_reward_function.name=compute_score")  # fmt: skip
    assert rc == 2
    assert "scores answers with math-verify, which is not installed here: pip install 'verl-lambda[math]'" in err


@pytest.mark.parametrize("value", ["'10'", "nan", "inf", "0"])
def test_a_bad_reward_timeout_is_one_line_before_ray(capsys, value):
    math = [
        "reward.custom_reward_function.path=pkg://verl_lambda.math.reward",
        "reward.custom_reward_function.name=compute_score",
    ]
    rc, _, err = launch(
        capsys, "--dry-run", *GRPO_LAMBDA, *RUN, *math, f"+reward.custom_reward_function.reward_kwargs.timeout={value}"
    )
    assert rc == 2 and err.count("\n") == 1
    assert "reward.custom_reward_function.reward_kwargs.timeout must be a positive, finite number of seconds" in err


def test_an_unexpected_error_in_the_checks_is_still_one_line(capsys, monkeypatch):
    import verl_lambda.launch.checks as checks

    def broken(*args, **kwargs):
        raise KeyError("something verl renamed")

    monkeypatch.setattr(checks, "check_launch", broken)
    rc, out, err = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "KeyError" in err and "something verl renamed" in err


def test_a_driver_that_lists_the_plugin_in_verl_use_external_modules_launches(tmp_path):
    """``import verl`` inside the launcher imports verl_lambda.verl.register itself: no import cycle."""
    import os
    import subprocess

    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": "verl_lambda.verl.register", DRY_RUN_ENV: "1"}
    command = [sys.executable, "-m", "verl_lambda.launch.main_ppo", *GRPO_LAMBDA, *RUN]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dry run: config composed and checked, Ray not started" in done.stdout


def test_a_mini_batch_that_does_not_divide_the_batch_is_a_one_line_warning(capsys):
    rc, out, err = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN, "actor_rollout_ref.actor.ppo_mini_batch_size=48")
    assert rc == 0, err
    warnings = [line for line in out.splitlines() if "ppo_mini_batch_size=48 does not divide" in line]
    assert len(warnings) == 1 and "2.67 updates per step, the last one on 32 prompts" in warnings[0]


def test_the_summary_says_which_weights_train_and_verl_prints_nothing_of_its_own(capsys):
    rc, out, err = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN, "actor_rollout_ref.model.lora_rank=64",
                          "actor_rollout_ref.model.lora_alpha=32", "--config-name=ppo_megatron_trainer")  # fmt: skip
    assert rc == 0, err
    assert rows(out)["trained weights"].startswith("LoRA rank 64, alpha 32")
    assert all(line.startswith("[verl_lambda.launch.main_ppo]") for line in out.splitlines()), out[:500]


def test_missing_data_names_the_command_that_prepares_it(capsys):
    rc, out, _ = launch(capsys, "--dry-run", *GRPO_LAMBDA, *RUN)
    assert 'prepare it with DATASETS="train" DATA_DIR=/nonexistent bash recipes/prepare_data.sh' in out
