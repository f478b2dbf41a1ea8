"""The ``grpo_lambda`` advantage estimator in verl (verl glue), and the config it reads.

verl's trainer calls it in its TaskRunner process, through ``compute_advantage``, with
``config = config.algorithm`` (an OmegaConf node). It reads ``algorithm.grpo_lambda`` (the
:class:`~verl_lambda.core.settings.AdvantageSettings`) and verl's own
``algorithm.norm_adv_by_std_in_grpo``; the maths is :func:`verl_lambda.core.advantage.group_advantages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from verl_lambda.core.advantage import group_advantages
from verl_lambda.core.settings import AdvantageSettings, LossSettings, SettingError, setting_fields
from verl_lambda.verl.keys import (
    ESTIMATOR_CONFIG_PATH,
    ESTIMATOR_NAME,
    ESTIMATOR_SECTION,
    LOSS_CONFIG_PATH,
    TARGET,
    config_key,
)

__all__ = ["compute_grpo_lambda_outcome_advantage", "advantage_settings", "norm_adv_by_std"]


def advantage_settings(algorithm: Any) -> AdvantageSettings:
    """The settings under ``algorithm.grpo_lambda``.

    ``algorithm`` is verl's ``config.algorithm`` (an OmegaConf node or an ``AlgoConfig``) or None.
    A loss setting put there is refused with a line that says where it goes; so is an unknown key.
    """
    node = None if algorithm is None else algorithm.get(ESTIMATOR_SECTION, None)
    node = {} if node is None else node
    if not isinstance(node, Mapping) and not hasattr(node, "keys"):
        raise ValueError(f"{ESTIMATOR_CONFIG_PATH} must be a mapping, got {node!r}")
    allowed = [f.name for f in setting_fields(AdvantageSettings)]
    loss_names = {f.name for f in setting_fields(LossSettings)}
    for key in sorted(node.keys()):
        if key in loss_names:
            raise ValueError(
                f"{ESTIMATOR_CONFIG_PATH}.{key} is a loss setting: set +{config_key(key)}=... "
                f"(with {LOSS_CONFIG_PATH}._target_={TARGET})"
            )
        if key not in allowed:
            raise ValueError(f"{ESTIMATOR_CONFIG_PATH}.{key} is not a GRPO-λ estimator setting; allowed: {allowed}")
    try:
        return AdvantageSettings(**{key: node[key] for key in node.keys()})
    except SettingError as err:
        raise ValueError(err.named(config_key(err.name))) from None


def norm_adv_by_std(algorithm: Any) -> bool:
    """verl's ``algorithm.norm_adv_by_std_in_grpo`` (default true); a non-boolean is refused."""
    value = True if algorithm is None else algorithm.get("norm_adv_by_std_in_grpo", True)
    if not isinstance(value, bool):
        raise ValueError(
            f"algorithm.norm_adv_by_std_in_grpo must be true or false, got {value!r} "
            "(write it unquoted: algorithm.norm_adv_by_std_in_grpo=false)"
        )
    return value


def compute_grpo_lambda_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any | None = None,
    index: np.ndarray | None = None,
    epsilon: float = 1e-6,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic-free TD error of GRPO-λ on every valid token (:func:`verl_lambda.core.advantage.group_advantages`).

    Args:
        token_level_rewards: ``[bs, T]`` rewards (the outcome sits on the last valid token).
        response_mask: ``[bs, T]`` valid-token mask.
        config: verl's ``config.algorithm``; reads ``grpo_lambda.adv_clamp`` and
            ``norm_adv_by_std_in_grpo``.
        index: ``[bs]`` group ids (verl's ``uid``).

    Returns:
        ``(advantages, returns)``, both ``[bs, T]`` and equal.
    """
    settings = advantage_settings(config)
    norm_by_std = norm_adv_by_std(config)
    if index is None:
        raise ValueError(f"the '{ESTIMATOR_NAME}' estimator needs group ids: the batch has no 'uid' column")
    scores = token_level_rewards.sum(dim=-1)
    scalars = group_advantages(scores, index, settings, norm_by_std=norm_by_std, epsilon=epsilon)
    advantages = scalars.unsqueeze(-1) * response_mask.to(scalars.dtype)
    return advantages, advantages
