"""Where GRPO-λ lives in verl: registry names, config keys and the public module paths. Imports no verl.

Each public string is written here once; recipes, docs and tests are checked against it.
"""

from __future__ import annotations

from verl_lambda.core.settings import AdvantageSettings, LossSettings, part_of

__all__ = [
    "LOSS_NAME",
    "ESTIMATOR_NAME",
    "LOSS_CONFIG_PATH",
    "ESTIMATOR_SECTION",
    "ESTIMATOR_CONFIG_PATH",
    "TARGET",
    "REGISTER_MODULE",
    "MODULES_ENV",
    "REGISTRATION_KEY",
    "MATH_REWARD",
    "config_key",
]

LOSS_NAME = "grpo_lambda"
ESTIMATOR_NAME = "grpo_lambda"
LOSS_CONFIG_PATH = "actor_rollout_ref.actor.policy_loss"
ESTIMATOR_SECTION = "grpo_lambda"  # the estimator settings' node under verl's algorithm config
ESTIMATOR_CONFIG_PATH = f"algorithm.{ESTIMATOR_SECTION}"
#: ``policy_loss._target_``: the loss's config class (building it registers the plugin)
TARGET = "verl_lambda.verl.config.GRPOLambdaLossConfig"
#: the module whose import registers the estimator and the loss (entry point, VERL_USE_EXTERNAL_MODULES)
REGISTER_MODULE = "verl_lambda.verl.register"
#: the variable verl reads in every process to import extension modules
MODULES_ENV = "VERL_USE_EXTERNAL_MODULES"
#: the config key that sets it in every Ray worker of a run
REGISTRATION_KEY = f"ray_kwargs.ray_init.runtime_env.env_vars.{MODULES_ENV}"
#: the project's boxed-answer reward, as a verl ``reward.custom_reward_function.path``
MATH_REWARD = "pkg://verl_lambda.math.reward"
_CONFIG_PATHS = {LossSettings: LOSS_CONFIG_PATH, AdvantageSettings: ESTIMATOR_CONFIG_PATH}


def config_key(name: str) -> str:
    """The full verl config key of a GRPO-λ setting, e.g. ``actor_rollout_ref.actor.policy_loss.lam``."""
    return f"{_CONFIG_PATHS[part_of(name)]}.{name}"
