"""Where GRPO-λ lives in verl: its registry names and config keys. Imports no verl.

Kept apart from :mod:`verl_lambda.config` (which imports verl) so that
:mod:`verl_lambda.register` can be imported by ``import verl`` itself (``VERL_USE_EXTERNAL_MODULES``,
the ``verl.plugins`` entry point) without importing verl back.
"""

from __future__ import annotations

from verl_lambda.core.settings import ESTIMATOR, LOSS, setting_fields

__all__ = [
    "LOSS_NAME",
    "ESTIMATOR_NAME",
    "LOSS_CONFIG_PATH",
    "ESTIMATOR_SECTION",
    "ESTIMATOR_CONFIG_PATH",
    "TARGET",
    "config_key",
]

LOSS_NAME = "grpo_lambda"
ESTIMATOR_NAME = "grpo_lambda"
LOSS_CONFIG_PATH = "actor_rollout_ref.actor.policy_loss"
ESTIMATOR_SECTION = "grpo_lambda"  # the estimator settings' node under verl's algorithm config
ESTIMATOR_CONFIG_PATH = f"algorithm.{ESTIMATOR_SECTION}"
TARGET = "verl_lambda.config.GRPOLambdaLossConfig"
_CONFIG_PATHS = {LOSS: LOSS_CONFIG_PATH, ESTIMATOR: ESTIMATOR_CONFIG_PATH}


def config_key(name: str) -> str:
    """The full verl config key of a GRPO-λ setting, e.g. ``actor_rollout_ref.actor.policy_loss.lam``."""
    (f,) = [f for f in setting_fields() if f.name == name]
    return f"{_CONFIG_PATHS[f.metadata['applies_to']]}.{name}"
