"""The `grpo_lambda` advantage estimator, through verl's `compute_advantage` dispatcher."""

import numpy as np
import pytest
import spec_reference as spec
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.ray_trainer import compute_advantage

import verl_lambda.verl.register  # noqa: F401


def algorithm(**grpo_lambda):
    node = {"adv_estimator": "grpo_lambda", "norm_adv_by_std_in_grpo": grpo_lambda.pop("norm", True)}
    if grpo_lambda:
        node["grpo_lambda"] = grpo_lambda
    return OmegaConf.create(node)


def make_batch(seed, groups=6, group_size=4, length=16):
    g = torch.Generator().manual_seed(seed)
    n = groups * group_size
    mask = spec.random_mask(g, n, length, interior_zeros=True)
    mask[:, 0] = True
    rewards = torch.zeros(n, length)
    last = (mask.long() * torch.arange(length)).argmax(-1)
    rewards[torch.arange(n), last] = torch.randint(0, 3, (n,), generator=g).float() / 2
    uids = np.array([f"prompt-{i // group_size}" for i in range(n)], dtype=object)
    return rewards, mask.float(), uids


def run(rewards, mask, uids, config, estimator="grpo_lambda"):
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors={"uid": uids}
    )
    out = compute_advantage(data, adv_estimator=estimator, config=config)
    return out.batch["advantages"], out.batch["returns"]


@pytest.mark.parametrize("clamp", [-0.1, -0.5, None])
@pytest.mark.parametrize("norm", [True, False])
def test_matches_independent_loop(clamp, norm):
    rewards, mask, uids = make_batch(1)
    adv, ret = run(rewards, mask, uids, algorithm(adv_clamp=clamp, norm=norm))
    expected = spec.grpo_lambda_advantage(rewards, mask, list(uids), clamp, norm)
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ret, adv)
    if clamp is not None:
        assert adv.min().item() >= clamp - 1e-7
        unclamped = spec.grpo_lambda_advantage(rewards, mask, list(uids), None, norm)
        assert (unclamped < clamp - 1e-6).any(), "the batch must contain advantages the clamp cuts"


def test_default_clamp_is_minus_0_1():
    rewards, mask, uids = make_batch(2)
    adv, _ = run(rewards, mask, uids, algorithm())
    expected = spec.grpo_lambda_advantage(rewards, mask, list(uids), -0.1, True)
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)


def test_without_clamp_reduces_to_verl_grpo():
    rewards, mask, uids = make_batch(3)
    ours, _ = run(rewards, mask, uids, algorithm(adv_clamp=None))
    verls, _ = run(rewards, mask, uids, algorithm(), estimator="grpo")
    torch.testing.assert_close(ours, verls, rtol=1e-5, atol=1e-6)


def test_degenerate_groups_stay_finite():
    """Singleton groups, all-equal rewards, empty masks and verl's synthetic padding rows."""
    length = 5
    mask = torch.ones(7, length)
    mask[4:] = 0
    mask[4:, 0] = 1  # padding rows: one response token, zero reward
    mask[3] = 0  # a zero-length response
    rewards = torch.zeros(7, length)
    rewards[0, -1] = 1.0  # singleton group
    rewards[1, -1] = rewards[2, -1] = 0.5  # all-equal group of two
    uids = np.array(["solo", "same", "same", "empty", "pad", "pad", "pad"], dtype=object)
    adv, _ = run(rewards, mask, uids, algorithm())
    assert torch.isfinite(adv).all()
    expected = spec.grpo_lambda_advantage(rewards, mask, list(uids), -0.1, True)
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)
    assert adv[1:].abs().max() == 0


def test_accepts_future_keyword_arguments_and_an_algo_config_without_grpo_lambda():
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    rewards, mask, uids = make_batch(4)
    fn = get_adv_estimator_fn("grpo_lambda")
    adv, _ = fn(token_level_rewards=rewards, response_mask=mask, config=AlgoConfig(), index=uids, new_key=1)
    expected = spec.grpo_lambda_advantage(rewards, mask, list(uids), -0.1, True)
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "node,pattern",
    [
        ({"adv_clamp": 0.5}, r"adv_clamp must be a number ≤ 0 or null"),
        ({"adv_clamp": "low"}, r"adv_clamp must be"),
        (
            {"lam": 0.9},
            r"algorithm\.grpo_lambda\.lam is a loss setting: set \+actor_rollout_ref\.actor\.policy_loss\.lam",
        ),
        ({"clamp": -0.1}, r"algorithm\.grpo_lambda\.clamp is not a GRPO-λ estimator setting; allowed: \['adv_clamp'\]"),
    ],
)
def test_bad_estimator_settings_raise_one_line(node, pattern):
    rewards, mask, uids = make_batch(5)
    with pytest.raises(ValueError, match=pattern):
        run(rewards, mask, uids, algorithm(**node))


def test_missing_uid_is_a_clear_error():
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    with pytest.raises(ValueError, match="needs group ids"):
        get_adv_estimator_fn("grpo_lambda")(token_level_rewards=torch.zeros(2, 3), response_mask=torch.ones(2, 3))


def test_huge_rewards_keep_their_advantages():
    """Group statistics in float64: rewards of 1e20 (whose squares overflow float32) are not zeroed."""
    rewards = torch.zeros(4, 3)
    rewards[:, -1] = torch.tensor([4e20, 0.0, 4e20, 0.0])
    mask = torch.ones(4, 3)
    uids = np.array(["a"] * 4, dtype=object)
    adv, _ = run(rewards, mask, uids, algorithm(adv_clamp=None))
    verls, _ = run(rewards, mask, uids, algorithm(), estimator="grpo")
    expected = spec.grpo_lambda_advantage(rewards, mask, list(uids), None, True)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(adv, verls, rtol=1e-5, atol=1e-6)  # verl's own grpo stays finite too


@pytest.mark.parametrize(
    "uids, groups",
    [
        ([1.0, 1.0, 1.5, 1.5], [[0, 1], [2, 3]]),  # non-integer floats are not rounded together
        ([0, 0, "0", "0"], [[0, 1], [2, 3]]),  # an int and a string are different uids
        (["p", "p", "q", "q"], [[0, 1], [2, 3]]),
    ],
)
def test_groups_are_the_exact_uid_values(uids, groups):
    rewards = torch.zeros(4, 2)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 3.0, 2.0])
    mask = torch.ones(4, 2)
    adv, _ = run(rewards, mask, np.array(uids, dtype=object), algorithm(adv_clamp=None))
    expected = spec.grpo_lambda_advantage(rewards, mask, [next(g for g, m in enumerate(groups) if i in m)
                                                           for i in range(4)], None, True)  # fmt: skip
    torch.testing.assert_close(adv.double(), expected, rtol=1e-5, atol=1e-6)
    assert adv[0, 0] > 0 > adv[1, 0] and adv[2, 0] > 0 > adv[3, 0]  # each pair normalised on its own


@pytest.mark.parametrize("bad", [float("nan"), None])
def test_a_missing_uid_value_is_one_clear_error(bad):
    rewards, mask = torch.zeros(3, 2), torch.ones(3, 2)
    with pytest.raises(
        ValueError, match=r"^the group id \(uid\) of row 1 is (nan|None): every response needs a real group id$"
    ):
        run(rewards, mask, np.array(["a", bad, "a"], dtype=object), algorithm())


def test_norm_adv_by_std_must_be_a_boolean():
    rewards, mask, uids = make_batch(6)
    with pytest.raises(ValueError, match=r"^algorithm\.norm_adv_by_std_in_grpo must be true or false, got 'false'"):
        run(rewards, mask, uids, algorithm(norm="false"))


def test_the_loss_config_and_the_estimator_each_read_their_own_half():
    """verl's loss config carries the loss settings only; the estimator's node the estimator's only."""
    from verl_lambda.core.settings import AdvantageSettings, LossSettings
    from verl_lambda.verl.config import GRPOLambdaLossConfig
    from verl_lambda.verl.estimator import advantage_settings

    config = GRPOLambdaLossConfig(lam=0.5)
    assert config.loss_settings() == LossSettings(lam=0.5) and not hasattr(config, "adv_clamp")
    assert advantage_settings({"grpo_lambda": {"adv_clamp": -0.2}}) == AdvantageSettings(adv_clamp=-0.2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_reward_is_refused_naming_its_group(bad):
    """verl's grpo turns the whole group into NaN without a word; GRPO-λ refuses, naming the uid."""
    from verl_lambda.core.advantage import group_advantages

    scores = torch.tensor([1.0, 0.0, bad, 1.0])
    with pytest.raises(
        ValueError, match=r"score of response 2 \(group uid 'q7'\) is .*: every reward must be a finite"
    ):
        group_advantages(scores, ["q3", "q3", "q7", "q7"])
