"""The GRPO-λ loss's config class in verl (verl glue).

The loss runs in verl's actor workers and reads ``actor_rollout_ref.actor.policy_loss``, which Hydra
instantiates as :class:`GRPOLambdaLossConfig` once its ``_target_`` points here::

    actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda
    +actor_rollout_ref.actor.policy_loss.lam=0.99          # optional; every loss setting

Its fields are verl's ``PolicyLossConfig`` plus every field of
:class:`verl_lambda.core.settings.LossSettings`, with its defaults. Importing this module registers
the estimator and the loss with verl in that process (:mod:`verl_lambda.verl.register`: the
``_target_`` route). The estimator's settings live elsewhere (``algorithm.grpo_lambda``, read by
:func:`verl_lambda.verl.estimator.advantage_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass

from verl_lambda.verl.version import check_verl_version

check_verl_version()  # one line naming the supported range, before anything is imported from verl

from verl.workers.config.actor import PolicyLossConfig  # noqa: E402

from verl_lambda.core.settings import LossSettings, SettingError, add_setting_fields, setting_fields  # noqa: E402
from verl_lambda.verl import register  # noqa: E402, F401  (the _target_ route registers the plugin here)
from verl_lambda.verl.keys import LOSS_CONFIG_PATH, LOSS_NAME, TARGET, config_key  # noqa: E402

__all__ = ["GRPOLambdaLossConfig"]


@dataclass
@add_setting_fields(LossSettings)
class GRPOLambdaLossConfig(PolicyLossConfig):
    """Policy-loss config of GRPO-λ: verl's ``PolicyLossConfig`` plus every field of
    :class:`~verl_lambda.core.settings.LossSettings` (``lam``, ``gamma``, ``trace``, ...). ``loss_mode``
    must be ``"grpo_lambda"``. Values are checked on construction."""

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
        self.loss_settings()

    def loss_settings(self) -> LossSettings:
        """The loss settings of this config."""
        try:
            return LossSettings(**{f.name: getattr(self, f.name) for f in setting_fields(LossSettings)})
        except SettingError as err:
            raise ValueError(err.named(config_key(err.name))) from None
