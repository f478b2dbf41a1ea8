"""Every recipe script, run with bash in dry-run mode, composes and checks its full verl config.

The scripts run for real (bash, environment defaults, "$@"); their ``python3 -m
verl_lambda.launch.main_ppo`` call is served by a warm interpreter (see conftest.py), except in the tests
named ``*_real_interpreter``.
"""

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from verl_lambda.core.settings import setting_fields
from verl_lambda.verl.keys import TARGET, config_key

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SOCKET_ENV = "VERL_LAMBDA_TEST_LAUNCHER_SOCKET"

# model key -> (default model, training sets, response length: single node, multi-node)
MODELS = {
    "qwen2.5-math-1.5b-instruct": ("Qwen/Qwen2.5-Math-1.5B-Instruct", ["math", "gsm8k"], 3072, None),
    "r1-distill-qwen-1.5b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", ["deepscaler"], 8192, None),
    "r1-distill-qwen-7b": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", ["deepscaler"], 8192, 16384),
    "qwen2.5-7b-instruct": ("Qwen/Qwen2.5-7B-Instruct", ["math", "gsm8k"], 4096, 8192),
    "llama3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct", ["math", "gsm8k"], 4096, 8192),
}
BENCHMARKS = ["aime24", "math500", "olympiadbench", "minerva_math", "amc23"]
EXPECTED_RECIPES = sorted(
    f"run_{model}_{method}{backend}.sh"
    for model, spec in MODELS.items()
    for method in ("grpo_lambda", "grpo")
    for backend in ([""] + (["_megatron", "_megatron_multinode"] if spec[3] else []))
)
# What a GRPO-λ recipe may change relative to its matched GRPO baseline (after composition): the
# switches and every GRPO-λ setting (the launcher states them all in the config verl gets).
SWITCH_KEYS = {
    "algorithm.adv_estimator",
    "actor_rollout_ref.actor.policy_loss._target_",
    "actor_rollout_ref.actor.policy_loss.loss_mode",
    *(config_key(f.name) for f in setting_fields()),
    "trainer.experiment_name",
    "trainer.default_local_dir",  # checkpoints/<project>/<experiment_name>
    "actor_rollout_ref.rollout.trace.experiment_name",  # = trainer.experiment_name
}


def parse_recipe(name):
    match = re.fullmatch(r"run_(.+?)_(grpo_lambda|grpo)(_megatron)?(_multinode)?\.sh", name)
    model, method, megatron, multinode = match.groups()
    return model, method, bool(megatron), bool(multinode)


def flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


TRACE_BOTH = [
    "run_r1-distill-qwen-1.5b_grpo_lambda.sh",
    "run_llama3.1-8b-instruct_grpo_lambda_megatron.sh",
    "run_r1-distill-qwen-7b_grpo_lambda_megatron_multinode.sh",
]
PAPER_SETTING = (
    "run_qwen2.5-7b-instruct_grpo_lambda.sh",
    ("data.train_batch_size=32",),
    {"MAX_RESPONSE_LENGTH": "768", "LAM": "0.9"},
)


@pytest.fixture(scope="session")
def dry_run(run_script, tmp_path_factory):
    """dry_run(script, *args, **env) -> (CompletedProcess, resolved config dict or None).

    Results are cached; the first call runs every dry run this module asks for, three at a time.
    """
    cache = {}
    out_dir = tmp_path_factory.mktemp("configs")
    data_dir = str(tmp_path_factory.mktemp("data"))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    def execute(key):
        script, args, env = key
        config_file = out_dir / f"{abs(hash(key))}.yaml"
        result = run_script(
            script,
            *args,
            "--save-config",
            str(config_file),
            env={"VERL_LAMBDA_DRY_RUN": "1", "DATA_DIR": data_dir, **dict(env)},
        )
        config = yaml.load(config_file.read_text(), Loader=loader) if config_file.exists() else None
        return result, config

    def key_of(script, args, env):
        return (script, tuple(args), tuple(sorted(env.items())))

    def run(script, *args, **env):
        if not cache:
            keys = [key_of(name, (), {}) for name in EXPECTED_RECIPES]
            keys += [key_of(name, (), {"TRACE": "both"}) for name in TRACE_BOTH]
            keys.append(key_of(*PAPER_SETTING))
            with ThreadPoolExecutor(max_workers=3) as pool:
                cache.update(zip(keys, pool.map(execute, keys)))
        key = key_of(script, args, env)
        if key not in cache:
            cache[key] = execute(key)
        return cache[key]

    run.data_dir = data_dir
    return run


def test_recipe_inventory():
    found = sorted(p.name for p in RECIPES.glob("run_*.sh"))
    assert found == EXPECTED_RECIPES
    for extra in ("lib.sh", "run.sh", "prepare_data.sh", "eval_math.sh", "runtime_env.yaml", "README.md"):
        assert (RECIPES / extra).is_file(), extra


@pytest.mark.parametrize("name", sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.sh")))
def test_scripts_are_valid_bash_in_verl_style(name):
    text = (RECIPES / name).read_text()
    assert subprocess.run(["bash", "-n", str(RECIPES / name)]).returncode == 0
    assert text.startswith("#!/usr/bin/env bash\n")
    assert '"$@"' in text
    lines = text.splitlines()
    if Path(name).name.startswith("run_"):  # a wrapper: one comment line, then the shared body with its arguments
        assert len(lines) == 3 and lines[1].startswith("# ")
        assert lines[2].startswith('exec bash "$(dirname "$0")/run.sh" ') and lines[2].endswith(' "$@"')
    elif name != "lib.sh":
        assert "set -euo pipefail" in text
    assert all(len(line) <= 120 for line in lines), "lines of at most 120 characters"


def test_the_body_is_the_only_place_of_the_common_overrides():
    """Each common training override is written once: in recipes/lib.sh, not in a wrapper or a table
    (eval_math.sh is a validation-only run with its own override set)."""
    body = (RECIPES / "lib.sh").read_text()
    for key in ("actor_rollout_ref.actor.kl_loss_coef=0.001", "reward.custom_reward_function.path=pkg://verl_lambda.math.reward",
                "actor_rollout_ref.rollout.name=vllm", "algorithm.adv_estimator=grpo_lambda"):  # fmt: skip
        assert body.count(key) == 1, key
        others = [p for p in RECIPES.rglob("*.sh") if p.name not in ("lib.sh", "eval_math.sh") and key in p.read_text()]
        assert others == [], others


@pytest.mark.parametrize("name", EXPECTED_RECIPES)
def test_recipe_dry_run_composes_and_validates(dry_run, name):
    result, cfg = dry_run(name)
    assert result.returncode == 0, result.stderr
    assert "verl validate_config: passed" in result.stdout
    assert "dry run: config composed and checked, Ray not started" in result.stdout
    assert "ray job submit" not in result.stdout + result.stderr

    model, method, megatron, multinode = parse_recipe(name)
    model_path, train_sets, response, multinode_response = MODELS[model]
    c = flatten(cfg)
    assert c["actor_rollout_ref.model.path"] == model_path
    assert c["data.train_files"] == [f"{dry_run.data_dir}/{s}.parquet" for s in train_sets]
    assert c["data.val_files"] == [f"{dry_run.data_dir}/{s}.parquet" for s in BENCHMARKS]
    assert c["reward.custom_reward_function.path"] == "pkg://verl_lambda.math.reward"
    assert c["reward.custom_reward_function.name"] == "compute_score"
    assert "verl_lambda.verl.register" in c["ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"].split(
        ","
    )
    assert c["actor_rollout_ref.rollout.n"] == 8
    assert c["trainer.n_gpus_per_node"] == 8

    assert c["data.max_response_length"] == (multinode_response if multinode else response)
    if not model.startswith("qwen2.5-math"):  # Qwen2.5-Math's context is 4096 tokens
        assert c["data.max_response_length"] >= 4096
    budget = c["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"]
    assert budget >= c["data.max_prompt_length"] + c["data.max_response_length"]

    if megatron:
        assert c["actor_rollout_ref.actor.strategy"] == "megatron"
        parallel = (
            c["actor_rollout_ref.actor.megatron.tensor_model_parallel_size"],
            c["actor_rollout_ref.actor.megatron.pipeline_model_parallel_size"],
            c["actor_rollout_ref.actor.megatron.context_parallel_size"],
        )
        assert parallel == ((2, 1, 2) if multinode else (2, 2, 1))
        assert c["actor_rollout_ref.ref.megatron.tensor_model_parallel_size"] == parallel[0]
        assert "megatron TP" in result.stdout
    else:
        assert c["actor_rollout_ref.actor.strategy"] == "fsdp"
    assert c["trainer.nnodes"] == (4 if multinode else 1)

    if method == "grpo_lambda":
        assert c["algorithm.adv_estimator"] == "grpo_lambda"
        assert c["algorithm.grpo_lambda.adv_clamp"] == -0.1
        assert c["actor_rollout_ref.actor.policy_loss._target_"] == TARGET
        assert c["actor_rollout_ref.actor.policy_loss.loss_mode"] == "grpo_lambda"
        assert c["actor_rollout_ref.actor.policy_loss.lam"] == 0.99
        assert c["actor_rollout_ref.actor.policy_loss.gamma"] == 1.0
        assert c["actor_rollout_ref.actor.policy_loss.trace"] == "recent"
        assert re.search(r"actor_rollout_ref\.actor\.policy_loss\.lam\s+0\.99$", result.stdout, re.M)
    else:
        assert c["algorithm.adv_estimator"] == "grpo"
        assert c["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"
        assert "lam" not in cfg["actor_rollout_ref"]["actor"]["policy_loss"]
        assert "grpo_lambda" not in cfg["algorithm"]


@pytest.mark.parametrize("name", [n for n in EXPECTED_RECIPES if "_grpo_lambda" in n])
def test_matched_baseline_differs_only_in_the_switches(dry_run, name):
    _, lam_cfg = dry_run(name)
    _, grpo_cfg = dry_run(name.replace("_grpo_lambda", "_grpo"))
    a, b = flatten(lam_cfg), flatten(grpo_cfg)
    differing = {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}
    assert differing <= SWITCH_KEYS, sorted(differing - SWITCH_KEYS)
    assert {"algorithm.adv_estimator", "actor_rollout_ref.actor.policy_loss.loss_mode"} <= differing


@pytest.mark.parametrize("name", TRACE_BOTH)
def test_trace_variable_selects_both(dry_run, name):
    result, cfg = dry_run(name, TRACE="both")
    assert result.returncode == 0, result.stderr
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["trace"] == "both"
    assert cfg["trainer"]["experiment_name"].endswith(("_both", "_both_megatron", "_both_megatron_4nodes"))
    assert re.search(r"actor_rollout_ref\.actor\.policy_loss\.trace\s+both$", result.stdout, re.M)


def test_paper_setting_and_overrides_pass_through(dry_run):
    name, args, env = PAPER_SETTING
    result, cfg = dry_run(name, *args, **env)
    assert result.returncode == 0, result.stderr
    assert cfg["data"]["max_response_length"] == 768
    assert cfg["data"]["train_batch_size"] == 32
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["lam"] == 0.9
    assert re.search(r"max prompt / response / sequence tokens\s+1024 / 768 / 1792$", result.stdout, re.M)


FAILURES = [
    ("run_qwen2.5-7b-instruct_grpo_lambda.sh", ["actor_rollout_ref.actor.policy_loss.lam=2"], {}, "policy_loss.lam"),
    ("run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh", [], {"LAM": "2"}, "policy_loss.lam"),
    (
        "run_llama3.1-8b-instruct_grpo_lambda_megatron_multinode.sh",
        ["+actor_rollout_ref.actor.policy_loss.lam=2", "--dry-run"],
        {},
        "policy_loss.lam",
    ),
    ("run_r1-distill-qwen-1.5b_grpo_lambda.sh", ["algorithm.rollout_correction.bypass_mode=true"], {}, "bypass_mode"),
    (
        "run_r1-distill-qwen-7b_grpo_lambda_megatron.sh",
        ["algorithm.rollout_correction.bypass_mode=true"],
        {},
        "bypass_mode",
    ),
    ("run_qwen2.5-math-1.5b-instruct_grpo_lambda.sh", [], {"TRACE": "sideways"}, "policy_loss.trace"),
    (
        "run_qwen2.5-math-1.5b-instruct_grpo.sh",
        ["actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda"],
        {},
        "algorithm.adv_estimator=grpo_lambda",
    ),
]


@pytest.fixture(scope="module")
def failure_runs(run_script, tmp_path_factory):
    # Not dry runs (except where --dry-run is passed): the launcher must stop before verl's main,
    # whose first step prints "ray init kwargs" and connects to Ray (RAY_ADDRESS=auto fails fast).
    data_dir = str(tmp_path_factory.mktemp("no_data"))

    def execute(case):
        name, args, env, _ = case
        return run_script(name, *args, env={"DATA_DIR": data_dir, "RAY_ADDRESS": "auto", **env})

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(execute, FAILURES))


@pytest.mark.parametrize("case", range(len(FAILURES)), ids=[f"{c[0]}-{c[3]}" for c in FAILURES])
def test_bad_settings_fail_before_ray_with_one_line(failure_runs, case):
    result, needle = failure_runs[case], FAILURES[case][3]
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("verl_lambda.launch.main_ppo: error: ")
    assert needle in lines[0]
    assert "ray init kwargs" not in result.stdout


def test_recipes_with_the_real_interpreter(run_script, tmp_path):
    """No warm server: a fresh `python3 -m verl_lambda.launch.main_ppo` per script (both run at once)."""
    real = {SOCKET_ENV: "", "DATA_DIR": str(tmp_path), "RAY_ADDRESS": "auto"}
    jobs = {
        "lam": subprocess.Popen(
            ["bash", str(RECIPES / "run_qwen2.5-7b-instruct_grpo_lambda.sh")],
            env=run_script.env({**real, "LAM": "2"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "megatron": subprocess.Popen(
            ["bash", str(RECIPES / "run_llama3.1-8b-instruct_grpo_lambda_megatron_multinode.sh")],
            env=run_script.env({**real, "VERL_LAMBDA_DRY_RUN": "1", "NNODES": "2"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    out = {name: job.communicate(timeout=300) + (job.returncode,) for name, job in jobs.items()}

    stdout, stderr, rc = out["lam"]
    assert rc == 2
    assert stderr.strip() == (
        "verl_lambda.launch.main_ppo: error: actor_rollout_ref.actor.policy_loss.lam (from GRPO_LAMBDA_LAM) must be "
        "a number in [0, 1], got 2.0"
    )
    stdout, stderr, rc = out["megatron"]
    assert rc == 0, stderr
    assert re.search(r"actor engine\s+megatron TP 2 x PP 1 x CP 2 -> DP 4$", stdout, re.M)
    assert re.search(r"GPUs\s+16 = 2 node\(s\) x 8$", stdout, re.M)
    assert "dry run: config composed and checked, Ray not started" in stdout


def test_multinode_recipe_submits_a_ray_job_with_the_runtime_env(run_script, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    record = tmp_path / "ray_args.txt"
    (fake_bin / "ray").write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{record}"\n')
    (fake_bin / "ray").chmod(0o755)
    name = "run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh"
    result = run_script(
        name, "trainer.save_freq=10", env={"NNODES": "2", "DATA_DIR": str(tmp_path)}, path_prefix=fake_bin
    )
    assert result.returncode == 0, result.stderr
    args = record.read_text().splitlines()
    assert args[:2] == ["job", "submit"]
    assert f"--runtime-env={RECIPES / 'runtime_env.yaml'}" in args
    assert "--address=http://127.0.0.1:8265" in args
    entry = args[args.index("--") + 1 :]
    assert entry[:3] == ["python3", "-m", "verl_lambda.launch.main_ppo"]
    assert "trainer.nnodes=2" in entry and "--config-name=ppo_megatron_trainer" in entry
    assert "actor_rollout_ref.actor.megatron.context_parallel_size=2" in entry
    assert entry[-1] == "trainer.save_freq=10"


def test_runtime_env_carries_the_plugin_registration():
    env = yaml.safe_load((RECIPES / "runtime_env.yaml").read_text())
    assert env["env_vars"]["VERL_USE_EXTERNAL_MODULES"] == "verl_lambda.verl.register"
    assert all(isinstance(v, str) for v in env["env_vars"].values())  # Ray wants string values


def test_eval_script_dry_run(dry_run, tmp_path):
    result, cfg = dry_run("eval_math.sh", N_SAMPLES="4", LABEL="base model", OUT_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "would add the row 'base model'" in result.stdout
    c = flatten(cfg)
    assert c["trainer.val_only"] is True and c["trainer.val_before_train"] is True
    assert c["actor_rollout_ref.rollout.val_kwargs.n"] == 4
    assert c["actor_rollout_ref.rollout.val_kwargs.do_sample"] is True
    assert c["actor_rollout_ref.rollout.val_kwargs.temperature"] == 0.6
    assert c["data.val_files"] == [f"{dry_run.data_dir}/{s}.parquet" for s in BENCHMARKS]
    assert "file" in c["trainer.logger"]
    assert c["ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"] == f"{tmp_path}/base_model.metrics.jsonl"
    assert c["reward.custom_reward_function.path"] == "pkg://verl_lambda.math.reward"


PAPER_MODELS = {
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "r1-distill-qwen-1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
}
PAPER_SETS = {"gsm8k": 8, "math12k": 64, "math_rl_16k": 64, "orz_57k": 64}  # prompts per step in the authors' scripts
PAPER = [(model, data_set) for model in PAPER_MODELS for data_set in PAPER_SETS]


@pytest.mark.parametrize("model,data_set", PAPER)
def test_paper_recipes_dry_run_with_the_authors_setup_and_are_matched(dry_run, model, data_set):
    lam_result, lam_cfg = dry_run("paper/run.sh", model, data_set, "grpo_lambda")
    base_result, base_cfg = dry_run("paper/run.sh", model, data_set, "grpo")
    for result in (lam_result, base_result):
        assert result.returncode == 0, result.stderr
        assert "dry run: config composed and checked, Ray not started" in result.stdout
    c = flatten(lam_cfg)
    assert c["actor_rollout_ref.model.path"] == PAPER_MODELS[model]
    assert c["data.train_files"] == [f"{dry_run.data_dir}/{data_set}.parquet"]
    assert (c["actor_rollout_ref.model.lora_rank"], c["actor_rollout_ref.model.lora_alpha"]) == (64, 32)
    assert c["actor_rollout_ref.actor.optim.lr"] == 3e-6
    assert c["data.train_batch_size"] == c["actor_rollout_ref.actor.ppo_mini_batch_size"] == PAPER_SETS[data_set]
    assert c["actor_rollout_ref.rollout.n"] == 8 and c["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"] == 32
    assert (c["data.max_prompt_length"], c["data.max_response_length"]) == (512, 3072)
    assert (c["actor_rollout_ref.actor.kl_loss_coef"], c["actor_rollout_ref.actor.kl_loss_type"]) == (
        0.001,
        "low_var_kl",
    )
    assert c["actor_rollout_ref.actor.entropy_coeff"] == 0
    assert c["actor_rollout_ref.rollout.tensor_model_parallel_size"] == 2 and c["trainer.n_gpus_per_node"] == 2
    assert (c["trainer.total_epochs"], c["trainer.test_freq"], c["trainer.save_freq"]) == (15, 5, 20)
    assert c["actor_rollout_ref.actor.fsdp_config.model_dtype"] == "bf16"
    # GRPO-λ in the authors' conventions, with the paper's λ and clamp
    pl = "actor_rollout_ref.actor.policy_loss."
    assert (c[pl + "trace_anchor"], c[pl + "trace"], c[pl + "trace_epsilon"]) == ("end", "recent", 1e-7)
    assert (c[pl + "lam"], c["algorithm.grpo_lambda.adv_clamp"]) == (0.99, -0.1)
    a, b = flatten(lam_cfg), flatten(base_cfg)
    differing = {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}
    assert differing <= SWITCH_KEYS, sorted(differing - SWITCH_KEYS)
    assert b["algorithm.adv_estimator"] == "grpo" and b["actor_rollout_ref.actor.policy_loss.loss_mode"] == "vanilla"


def test_paper_recipe_settings_are_overridable_from_the_environment(dry_run):
    args = ("paper/run.sh", "qwen2.5-1.5b-instruct", "math12k", "grpo_lambda")
    result, cfg = dry_run(*args, ANCHOR="token", TRACE="both", N_GPUS_PER_NODE="4")
    assert result.returncode == 0, result.stderr
    c = flatten(cfg)
    pl = "actor_rollout_ref.actor.policy_loss."
    assert (c[pl + "trace_anchor"], c[pl + "trace"], c[pl + "trace_epsilon"]) == ("token", "both", 1e-7)
    assert c["trainer.n_gpus_per_node"] == 4
    assert c["trainer.experiment_name"] == "qwen2.5-1.5b-instruct_math12k_grpo_lambda_both_anchortoken"


def test_paper_recipe_refuses_an_unknown_set(run_script):
    result = run_script("paper/run.sh", "qwen2.5-1.5b-instruct", "aime24", "grpo_lambda")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "recipes/paper/run.sh: error: SET must be gsm8k, math12k, math_rl_16k or orz_57k, got 'aime24'"
    )
