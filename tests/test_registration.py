"""Registration reaches the processes that run the estimator and the loss, and composes with verl's config."""

import importlib
from pathlib import Path

import pytest
import verl
from hydra import compose, initialize_config_dir
from ray_wait import ray_result
from verl.trainer.ppo import core_algos

import verl_lambda.verl.register as register_module
from verl_lambda.verl.config import GRPOLambdaLossConfig

VERL_CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")

PLUGIN_OVERRIDES = [
    "algorithm.adv_estimator=grpo_lambda",
    "+algorithm.grpo_lambda.adv_clamp=-0.1",
    "actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig",
    "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
    "+actor_rollout_ref.actor.policy_loss.lam=0.95",
    "+actor_rollout_ref.actor.policy_loss.trace=both",
    "+actor_rollout_ref.actor.policy_loss.trace_epsilon=0.01",
    "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register",
    "actor_rollout_ref.model.path=/models/tiny",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
    "data.train_batch_size=16",
    "trainer.n_gpus_per_node=8",
]


def test_import_registers_both_names_idempotently():
    assert core_algos.get_adv_estimator_fn("grpo_lambda") is register_module.compute_grpo_lambda_outcome_advantage
    assert core_algos.get_policy_loss_fn("grpo_lambda") is register_module.compute_policy_loss_grpo_lambda
    register_module.register()
    register_module.check_registered()
    reloaded = importlib.reload(register_module)  # a second import under the same name must not raise
    assert core_algos.get_adv_estimator_fn("grpo_lambda") is reloaded.compute_grpo_lambda_outcome_advantage


def test_a_foreign_estimator_under_our_name_is_refused():
    saved = core_algos.ADV_ESTIMATOR_REGISTRY["grpo_lambda"]
    core_algos.ADV_ESTIMATOR_REGISTRY["grpo_lambda"] = lambda **kw: None
    try:
        with pytest.raises(ValueError, match="already registered as 'grpo_lambda'"):
            register_module.register()
    finally:
        core_algos.ADV_ESTIMATOR_REGISTRY["grpo_lambda"] = saved


def test_check_registered_names_the_fix():
    saved = core_algos.POLICY_LOSS_REGISTRY.pop("grpo_lambda")
    try:
        with pytest.raises(RuntimeError, match="VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register"):
            register_module.check_registered()
    finally:
        core_algos.POLICY_LOSS_REGISTRY["grpo_lambda"] = saved


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert names.get("grpo_lambda") == "verl_lambda.verl.register"


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_registration_is_visible_inside_ray_actors(ray_local):
    ray = ray_local

    class RegistryProbe:  # defined locally so Ray ships it by value
        def names(self):
            import os

            from verl.trainer.ppo import core_algos

            return (
                os.environ.get("VERL_USE_EXTERNAL_PLUGINS"),
                "grpo_lambda" in core_algos.ADV_ESTIMATOR_REGISTRY,
                "grpo_lambda" in core_algos.POLICY_LOSS_REGISTRY,
            )

    probe = ray.remote(num_cpus=0)(RegistryProbe)
    routes = {
        "entry point": {"VERL_USE_EXTERNAL_PLUGINS": "auto"},
        "environment variable": {
            "VERL_USE_EXTERNAL_PLUGINS": "none",
            "VERL_USE_EXTERNAL_MODULES": "verl_lambda.verl.register",
        },
        "neither (control)": {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": ""},
    }
    seen = {}
    for route, env in routes.items():
        actor = probe.options(runtime_env={"env_vars": env}).remote()
        seen[route] = ray_result(ray, actor.names.remote(), f"a Ray actor started with the {route} route")
        ray.kill(actor)
    assert seen["entry point"] == ("auto", True, True)
    assert seen["environment variable"] == ("none", True, True)
    assert seen["neither (control)"] == ("none", False, False), "the control shows the probe can see an absence"


def _compose(overrides):
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def test_hydra_composition_passes_verl_validate_config():
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    config = _compose(PLUGIN_OVERRIDES)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, GRPOLambdaLossConfig)
    assert (actor.policy_loss.lam, actor.policy_loss.trace, actor.policy_loss.trace_epsilon) == (0.95, "both", 0.01)
    assert config.algorithm.grpo_lambda.adv_clamp == -0.1
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES == "verl_lambda.verl.register"
    assert not need_critic(config)


def test_hydra_composition_with_a_bad_value_fails_naming_the_field():
    from verl.utils.config import omega_conf_to_dataclass

    config = _compose(PLUGIN_OVERRIDES + ["+actor_rollout_ref.actor.policy_loss.trace_norm=bogus"])
    with pytest.raises(Exception, match=r"policy_loss\.trace_norm must be one of \['none', 'sum'\]"):
        omega_conf_to_dataclass(config.actor_rollout_ref.actor)
