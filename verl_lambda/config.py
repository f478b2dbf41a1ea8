"""GRPO-λ settings as verl sees them (verl glue).

Two places in verl's config tree carry GRPO-λ settings, because the two halves of the algorithm
run in different processes and see different config nodes:

* the **loss** (actor workers) reads ``actor_rollout_ref.actor.policy_loss``, which Hydra
  instantiates as :class:`GRPOLambdaLossConfig` once its ``_target_`` points here::

      actor_rollout_ref.actor.policy_loss._target_=verl_lambda.config.GRPOLambdaLossConfig
      actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda
      +actor_rollout_ref.actor.policy_loss.lam=0.99          # optional, default shown

* the **advantage estimator** (the trainer's TaskRunner) reads ``algorithm`` (an OmegaConf
  node): ``algorithm.norm_adv_by_std_in_grpo`` and ``+algorithm.grpo_lambda.adv_clamp=-0.1``.

Importing this module registers the estimator and the loss with verl, so the ``_target_`` route
also brings the registration into every worker that builds the actor config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from verl.workers.config.actor import PolicyLossConfig

from verl_lambda.objective import check_adv_clamp
from verl_lambda.trace import check_trace_settings

__all__ = [
    "LOSS_NAME",
    "ESTIMATOR_NAME",
    "DEFAULT_ADV_CLAMP",
    "GRPOLambdaLossConfig",
    "EstimatorSettings",
    "estimator_settings",
]

LOSS_NAME = "grpo_lambda"
ESTIMATOR_NAME = "grpo_lambda"
DEFAULT_ADV_CLAMP = -0.1
LOSS_CONFIG_PATH = "actor_rollout_ref.actor.policy_loss"
TARGET = "verl_lambda.config.GRPOLambdaLossConfig"


@dataclass
class GRPOLambdaLossConfig(PolicyLossConfig):
    """Policy-loss config of GRPO-λ: verl's ``PolicyLossConfig`` plus the trace settings.

    Args:
        loss_mode: registered loss name; must be ``"grpo_lambda"``.
        lam: λ of the eligibility trace, in [0, 1]. Paper default 0.99.
        gamma: γ of the trace, in [0, 1]. Default 1.0 (no discount on a verifiable outcome).
        trace: weight style, ``"recent"`` (w = (γλ)^(t−j)) or ``"both"`` (max with (γλ)^j, which
            keeps the first tokens of the response in every trace).
        trace_epsilon: floor ε on the weights (the ε-trace), in [0, 1]; 0 switches it off.
        trace_norm: ``"none"`` (the paper's form) or ``"sum"`` (divide ℓ_t by its weight sum, a
            decayed geometric mean that keeps the gradient scale of GRPO).
    """

    loss_mode: str = LOSS_NAME
    lam: float = 0.99
    gamma: float = 1.0
    trace: str = "recent"
    trace_epsilon: float = 0.0
    trace_norm: str = "none"

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
        try:
            check_trace_settings(self.lam, self.gamma, self.trace, self.trace_epsilon, self.trace_norm)
        except ValueError as err:
            raise ValueError(f"{LOSS_CONFIG_PATH}.{err}") from None


@dataclass(frozen=True)
class EstimatorSettings:
    """What the ``grpo_lambda`` advantage estimator reads from ``algorithm``."""

    adv_clamp: Optional[float] = DEFAULT_ADV_CLAMP
    norm_adv_by_std: bool = True


_ESTIMATOR_KEYS = {"adv_clamp"}
_LOSS_KEYS = {"lam", "gamma", "trace", "trace_epsilon", "trace_norm"}


def estimator_settings(algorithm: Any) -> EstimatorSettings:
    """Read and check ``algorithm.grpo_lambda`` / ``algorithm.norm_adv_by_std_in_grpo``.

    ``algorithm`` is verl's ``config.algorithm`` (an OmegaConf node or an ``AlgoConfig``) or None.
    """
    if algorithm is None:
        return EstimatorSettings()
    node = algorithm.get("grpo_lambda", None)
    node = {} if node is None else node
    if not isinstance(node, Mapping) and not hasattr(node, "keys"):
        raise ValueError(f"algorithm.grpo_lambda must be a mapping, got {node!r}")
    keys = set(node.keys())
    misplaced = keys & _LOSS_KEYS
    if misplaced:
        raise ValueError(
            f"algorithm.grpo_lambda.{sorted(misplaced)[0]} is a loss setting: set "
            f"+{LOSS_CONFIG_PATH}.{sorted(misplaced)[0]}=... (with {LOSS_CONFIG_PATH}._target_={TARGET})"
        )
    unknown = keys - _ESTIMATOR_KEYS
    if unknown:
        raise ValueError(
            f"algorithm.grpo_lambda.{sorted(unknown)[0]} is not a GRPO-λ estimator setting; "
            f"allowed: {sorted(_ESTIMATOR_KEYS)}"
        )
    try:
        clamp = check_adv_clamp(node.get("adv_clamp", DEFAULT_ADV_CLAMP))
    except ValueError as err:
        raise ValueError(f"algorithm.grpo_lambda.{err}") from None
    norm = algorithm.get("norm_adv_by_std_in_grpo", True)
    return EstimatorSettings(adv_clamp=clamp, norm_adv_by_std=bool(norm))


# Registration: importing the config (the ``_target_`` route) registers the estimator and loss.
import verl_lambda.register  # noqa: E402,F401  (must come after the class definition)
