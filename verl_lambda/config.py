"""GRPO-λ settings as verl sees them (verl glue).

The two halves of the algorithm run in different processes and read different config nodes:

* the **loss** (actor workers) reads ``actor_rollout_ref.actor.policy_loss``, which Hydra
  instantiates as :class:`GRPOLambdaLossConfig` once its ``_target_`` points here::

      actor_rollout_ref.actor.policy_loss._target_=verl_lambda.config.GRPOLambdaLossConfig
      actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda
      +actor_rollout_ref.actor.policy_loss.lam=0.99          # optional; every loss setting

* the **advantage estimator** (the trainer's TaskRunner) reads ``algorithm`` (an OmegaConf node):
  ``algorithm.norm_adv_by_std_in_grpo`` (verl's own) and ``+algorithm.grpo_lambda.adv_clamp=-0.1``.

Which setting goes where, its default and its allowed values come from
:class:`verl_lambda.core.settings.GRPOLambdaSettings`. Building a :class:`GRPOLambdaLossConfig`
registers the estimator and the loss with verl in that process (the ``_target_`` route).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verl_lambda.verl_version import check_verl_version

check_verl_version()  # one line naming the supported range, before anything is imported from verl

from verl.workers.config.actor import PolicyLossConfig  # noqa: E402

from verl_lambda.config_keys import (  # noqa: E402
    ESTIMATOR_CONFIG_PATH,
    ESTIMATOR_SECTION,
    LOSS_CONFIG_PATH,
    LOSS_NAME,
    TARGET,
    config_key,
)
from verl_lambda.core.settings import (  # noqa: E402
    ESTIMATOR,
    LOSS,
    GRPOLambdaSettings,
    SettingError,
    add_setting_fields,
    setting_fields,
)

__all__ = ["GRPOLambdaLossConfig", "estimator_settings", "norm_adv_by_std"]


def _settings(values: Mapping[str, Any], none_word: str = "null") -> GRPOLambdaSettings:
    try:
        return GRPOLambdaSettings(**values)
    except SettingError as err:
        raise ValueError(err.named(config_key(err.name), none_word)) from None


@dataclass
@add_setting_fields(LOSS)
class GRPOLambdaLossConfig(PolicyLossConfig):
    """Policy-loss config of GRPO-λ: verl's ``PolicyLossConfig`` plus every loss setting of
    :class:`~verl_lambda.core.settings.GRPOLambdaSettings` (``lam``, ``gamma``, ``trace``, ...), with
    its defaults. ``loss_mode`` must be ``"grpo_lambda"``. Values are checked on construction."""

    loss_mode: str = LOSS_NAME

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        if self.loss_mode != LOSS_NAME:
            hint = (
                " (algorithm.rollout_correction.bypass_mode=true replaces the policy loss; GRPO-λ needs it false)"
                if self.loss_mode == "bypass_mode"
                else f"; or drop the {LOSS_CONFIG_PATH}._target_ override to run '{self.loss_mode}'"
            )
            raise ValueError(
                f"{LOSS_CONFIG_PATH}.loss_mode must be '{LOSS_NAME}' with _target_={TARGET}, "
                f"got '{self.loss_mode}'{hint}"
            )
        self.settings()
        import verl_lambda.register  # noqa: F401  (the _target_ route registers the plugin in this process)

    def settings(self) -> GRPOLambdaSettings:
        """The loss settings of this config (estimator settings at their defaults)."""
        return _settings({f.name: getattr(self, f.name) for f in setting_fields(LOSS)})


def estimator_settings(algorithm: Any) -> GRPOLambdaSettings:
    """The settings under ``algorithm.grpo_lambda`` (loss settings at their defaults).

    ``algorithm`` is verl's ``config.algorithm`` (an OmegaConf node or an ``AlgoConfig``) or None.
    A loss setting put there is refused with a line that says where it goes.
    """
    node = None if algorithm is None else algorithm.get(ESTIMATOR_SECTION, None)
    node = {} if node is None else node
    if not isinstance(node, Mapping) and not hasattr(node, "keys"):
        raise ValueError(f"{ESTIMATOR_CONFIG_PATH} must be a mapping, got {node!r}")
    allowed = {f.name for f in setting_fields(ESTIMATOR)}
    for key in sorted(node.keys()):
        if key in {f.name for f in setting_fields(LOSS)}:
            raise ValueError(
                f"{ESTIMATOR_CONFIG_PATH}.{key} is a loss setting: set +{config_key(key)}=... "
                f"(with {LOSS_CONFIG_PATH}._target_={TARGET})"
            )
        if key not in allowed:
            raise ValueError(
                f"{ESTIMATOR_CONFIG_PATH}.{key} is not a GRPO-λ estimator setting; allowed: {sorted(allowed)}"
            )
    return _settings({key: node[key] for key in node.keys()})


def norm_adv_by_std(algorithm: Any) -> bool:
    """verl's ``algorithm.norm_adv_by_std_in_grpo`` (default true); a non-boolean is refused."""
    value = True if algorithm is None else algorithm.get("norm_adv_by_std_in_grpo", True)
    if not isinstance(value, bool):
        raise ValueError(
            f"algorithm.norm_adv_by_std_in_grpo must be true or false, got {value!r} "
            "(write it unquoted: algorithm.norm_adv_by_std_in_grpo=false)"
        )
    return value
