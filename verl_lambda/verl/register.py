"""The ``grpo_lambda`` advantage estimator and policy loss, registered with verl on import.

Importing this module (idempotent) adds both names to verl's registries in the importing
process. It reaches verl's Ray processes by any of:

* the ``verl.plugins`` entry point of this distribution (loaded by ``import verl``, verl ≥ 0.9.0);
* ``VERL_USE_EXTERNAL_MODULES`` listing ``verl_lambda.verl.register`` in the workers' environment
  (``python -m verl_lambda.launch.main_ppo`` sets it in the Ray runtime env, keeping the driver's modules);
* ``actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig``
  (building that config imports this module; reaches the actor workers only).
"""

from __future__ import annotations

from typing import Any

from verl_lambda.verl.version import check_verl_version

check_verl_version()  # one line naming the supported range, before anything is imported from verl

from verl.trainer.ppo import core_algos  # noqa: E402

from verl_lambda.verl.estimator import compute_grpo_lambda_outcome_advantage  # noqa: E402
from verl_lambda.verl.keys import ESTIMATOR_NAME, LOSS_NAME, MODULES_ENV, REGISTER_MODULE  # noqa: E402
from verl_lambda.verl.loss import compute_policy_loss_grpo_lambda  # noqa: E402

__all__ = ["register", "check_registered"]


def _same_function(a: Any, b: Any) -> bool:
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", None)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def register() -> None:
    """Add ``grpo_lambda`` to verl's estimator and loss registries (safe to call again)."""
    current = core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME)
    if current is not None and not _same_function(current, compute_grpo_lambda_outcome_advantage):
        raise ValueError(
            f"another advantage estimator is already registered as '{ESTIMATOR_NAME}': "
            f"{current.__module__}.{current.__qualname__}"
        )
    core_algos.ADV_ESTIMATOR_REGISTRY.pop(ESTIMATOR_NAME, None)  # a reloaded copy of this module
    core_algos.register_adv_est(ESTIMATOR_NAME)(compute_grpo_lambda_outcome_advantage)
    core_algos.register_policy_loss(LOSS_NAME)(compute_policy_loss_grpo_lambda)


def check_registered() -> None:
    """Raise with a fix if this process's verl registries lack the GRPO-λ names."""
    missing = []
    if ESTIMATOR_NAME not in core_algos.ADV_ESTIMATOR_REGISTRY:
        missing.append(f"advantage estimator '{ESTIMATOR_NAME}'")
    if LOSS_NAME not in core_algos.POLICY_LOSS_REGISTRY:
        missing.append(f"policy loss '{LOSS_NAME}'")
    if missing:
        raise RuntimeError(
            f"verl has no {' and no '.join(missing)} in this process: install verl-lambda here or set "
            f"{MODULES_ENV}={REGISTER_MODULE}"
        )


register()
