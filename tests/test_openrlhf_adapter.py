"""OpenRLHF adapter (``verl_lambda.patches.openrlhf``, launcher ``verl_lambda.patches.openrlhf``) on CPU.

Needs ``openrlhf==0.11.2`` (installed with ``--no-deps``) and ``deepspeed`` (installs and imports on
CPU). Two GPU-only packages that OpenRLHF imports at module level cannot be installed here, so
:func:`install_gpu_stubs` puts placeholders into ``sys.modules`` when (and only when) the real ones
are missing:

* ``flash_attn`` (``flash_attn.bert_padding``, ``flash_attn.utils.distributed``), imported by
  ``openrlhf.models.ring_attn_utils`` through ``openrlhf.models``;
* ``vllm`` (``SamplingParams``, ``vllm.inputs.TokensPrompt``, ``vllm.utils.random_uuid``), imported
  by ``openrlhf.trainer.ray`` and ``openrlhf.trainer.ppo_utils.samples_generator``.

Nothing under test calls into them; every placeholder function raises if called. The placeholders
live in ``sys.modules`` only while OpenRLHF's modules are imported (:func:`gpu_stubs`): other test
files in the same process (verl's ``unpad_input`` picks ``flash_attn`` when it is importable) must
never see them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import os
import subprocess
import sys
import types
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ray_wait import ray_result

pytest.importorskip("openrlhf", reason="install openrlhf==0.11.2 --no-deps (see docs/openrlhf.md)")
pytest.importorskip("deepspeed", reason="install deepspeed (see docs/openrlhf.md)")


def install_gpu_stubs() -> list[str]:
    """Placeholders for the GPU-only modules OpenRLHF imports; returns the names stubbed."""

    def unavailable(*args, **kwargs):
        raise RuntimeError("placeholder: this GPU-only module is not installed")

    layout = {
        "flash_attn": {},
        "flash_attn.bert_padding": dict(
            index_first_axis=unavailable, pad_input=unavailable, rearrange=unavailable, unpad_input=unavailable
        ),
        "flash_attn.utils": {},
        "flash_attn.utils.distributed": dict(all_gather=unavailable),
        "vllm": dict(SamplingParams=type("SamplingParams", (), {})),
        "vllm.inputs": dict(TokensPrompt=dict),
        "vllm.utils": dict(random_uuid=unavailable),
    }
    stubbed = []
    for top in ("flash_attn", "vllm"):
        if top in sys.modules or importlib.util.find_spec(top) is not None:
            continue
        for name, attrs in layout.items():
            if name.split(".")[0] != top:
                continue
            module = types.ModuleType(name)
            # transformers probes importlib.util.find_spec("flash_attn"), which needs a __spec__.
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            module.__dict__.update(attrs, __placeholder__=True)
            sys.modules[name] = module
            stubbed.append(name)
    return stubbed


@contextmanager
def gpu_stubs():
    """The placeholders in ``sys.modules`` for the duration of the block, and never after it."""
    stubbed = install_gpu_stubs()
    try:
        yield stubbed
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)


with gpu_stubs():
    import openrlhf.cli.train_ppo_ray  # noqa: F401  (the launcher runs this module)
    import openrlhf.models.loss as orl_loss
    import openrlhf.trainer.ppo_utils.experience_maker as orl_maker
    from openrlhf.trainer.ppo_utils.experience import Experience
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

from verl_lambda.cli import DRY_RUN_ENV  # noqa: E402
from verl_lambda.core.settings import GRPOLambdaSettings, env_var, setting_fields  # noqa: E402
from verl_lambda.patches.openrlhf import launcher, patch  # noqa: E402

ORIGINAL_FORWARD = orl_loss.PolicyLoss.forward
ORIGINAL_ADVANTAGES = orl_maker.RemoteExperienceMaker.compute_advantages_and_returns


@pytest.fixture(autouse=True)
def _restore_openrlhf():
    patch.remove()
    yield
    patch.remove()
    assert orl_loss.PolicyLoss.forward is ORIGINAL_FORWARD


# ───────────────────────────────────────────────────────────────────── installation


def test_no_placeholder_outlives_the_openrlhf_imports():
    leaked = [name for name, module in list(sys.modules.items()) if vars(module).get("__placeholder__") is True]
    assert not leaked, f"placeholders left in sys.modules (other tests would import them): {leaked}"


def test_openrlhf_imports_and_passes_the_compatibility_checks():
    version = patch.check_openrlhf()
    assert version is not None and version.startswith("0.11.")
    assert tuple(inspect.signature(ORIGINAL_FORWARD).parameters)[-3:] == (
        "dp_size",
        "batch_num_tokens",
        "global_batch_size",
    )


def test_defaults_match_the_verl_configs():
    from verl_lambda.verl.config import GRPOLambdaLossConfig
    from verl_lambda.verl.estimator import advantage_settings

    ours = launcher.read_settings([], environ={})[0]
    assert ours == GRPOLambdaSettings()
    assert ours.loss == GRPOLambdaLossConfig().loss_settings()
    assert ours.advantage == advantage_settings(None)
    assert ours.advantage.adv_clamp == -0.1


def test_settings_round_trip_through_environment_variables():
    settings = GRPOLambdaSettings.from_values(
        dict(lam=0.9, gamma=0.97, trace="both", trace_epsilon=0.01, trace_norm="sum", adv_clamp=None)
    )
    env = patch.settings_to_env(settings)
    assert env["GRPO_LAMBDA"] == "1" and env["GRPO_LAMBDA_TRACE"] == "both" and env["GRPO_LAMBDA_ADV_CLAMP"] == "none"
    assert patch.settings_from_env(env) == settings
    assert patch.settings_from_env({}) is None
    assert patch.settings_from_env({"GRPO_LAMBDA": "0", "GRPO_LAMBDA_LAM": "0.5"}) is None
    with pytest.raises(
        ValueError, match=r"^GRPO_LAMBDA_TRACE must be one of \['recent', 'both', 'early'\], got 'foo'$"
    ):
        patch.settings_from_env({"GRPO_LAMBDA": "1", "GRPO_LAMBDA_TRACE": "foo"})


# ──────────────────────────────────────────────────────────────────── loss vs verl


def _random_batch(seed: int, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    batch, length = 5, 23
    lengths = torch.tensor([23, 17, 9, 1, 20])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask[4, 6:9] = False  # a multi-turn row: observation tokens inside the response
    old = -torch.rand(batch, length, generator=gen, dtype=torch.float64) * 3.0
    new = old + 0.08 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    scalar = torch.tensor([1.3, -0.1, 0.7, -0.1, -1.8], dtype=torch.float64)
    advantages = scalar[:, None] * mask
    rollout = old + 0.3 * torch.randn(batch, length, generator=gen, dtype=torch.float64)
    return old.to(dtype), new.to(dtype), advantages.to(dtype), mask, rollout.to(dtype)


def _openrlhf_loss(policy_loss, old, new, adv, mask, rollout=None, **batch_info):
    log_probs = new.clone().requires_grad_(True)
    out = policy_loss(log_probs, old, adv, action_mask=mask, rollout_log_probs=rollout, **batch_info)
    (grad,) = torch.autograd.grad(out[0], log_probs)
    return out, grad


def _verl_loss(settings, old, new, adv, mask, *, agg, clip_low, clip_high, dual_clip, batch_info, is_weights=None):
    from verl.workers.config.actor import ActorConfig

    from verl_lambda.verl.config import GRPOLambdaLossConfig
    from verl_lambda.verl.register import compute_policy_loss_grpo_lambda

    config = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        clip_ratio_c=dual_clip,
        loss_agg_mode=agg,
        global_batch_info=dict(batch_info),
        policy_loss=GRPOLambdaLossConfig(**asdict(settings.loss)),
    )
    log_prob = new.clone().requires_grad_(True)
    loss, metrics = compute_policy_loss_grpo_lambda(
        old, log_prob, adv, mask, agg, config, rollout_is_weights=is_weights
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    return loss, grad, metrics


SETTINGS = [
    GRPOLambdaSettings.from_values(dict(lam=0.99, trace="recent")),
    GRPOLambdaSettings.from_values(dict(lam=0.9, gamma=0.95, trace="both")),
    GRPOLambdaSettings.from_values(dict(lam=0.8, trace="recent", trace_epsilon=0.05, trace_norm="sum")),
    GRPOLambdaSettings.from_values(dict(lam=0.97, trace="both", trace_epsilon=0.02)),
    GRPOLambdaSettings.from_values(dict(lam=0.0, trace="recent")),
    GRPOLambdaSettings.from_values(dict(lam=0.99, trace="recent", trace_anchor="end", trace_epsilon=1e-7)),
    GRPOLambdaSettings.from_values(
        dict(lam=0.9, trace="early", trace_anchor="end", trace_application="weight", trace_norm="sum")
    ),
]
# OpenRLHF's --actor.loss_agg_mode -> PolicyLoss(token_level_loss=...); verl's loss_agg_mode
AGG_MODES = [("token-mean", True), ("seq-mean-token-mean", False)]
# dp_size and the global counts OpenRLHF's get_loss_batch_info hands the loss (here: 2 DP ranks,
# this micro-batch holding part of the step's 141 tokens / 11 sequences), or none of them.
BATCH_INFOS = [{}, {"dp_size": 2, "batch_num_tokens": 141.0, "global_batch_size": 11.0}]


@pytest.mark.parametrize(
    "settings",
    SETTINGS,
    ids=lambda s: "-".join(f"{value}" for value in s.loss.__dict__.values()),
)
@pytest.mark.parametrize("agg,token_level", AGG_MODES, ids=[m for m, _ in AGG_MODES])
@pytest.mark.parametrize("batch_info", BATCH_INFOS, ids=["local", "global"])
def test_patched_policy_loss_equals_verl_loss(settings, agg, token_level, batch_info):
    old, new, adv, mask, _ = _random_batch(seed=7)
    policy_loss = orl_loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=3.0, token_level_loss=token_level)
    patch.apply(settings)
    assert orl_loss.PolicyLoss.forward is not ORIGINAL_FORWARD
    out, grad = _openrlhf_loss(policy_loss, old, new, adv, mask, **batch_info)
    loss_v, grad_v, metrics = _verl_loss(
        settings, old, new, adv, mask, agg=agg, clip_low=0.2, clip_high=0.28, dual_clip=3.0, batch_info=batch_info
    )
    torch.testing.assert_close(out[0], loss_v, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, grad_v, rtol=0, atol=1e-6)
    assert grad.abs().sum() > 0
    assert out[1].item() == pytest.approx(metrics["actor/pg_clipfrac"], abs=1e-7)
    assert out[2].item() == pytest.approx(metrics["actor/ppo_kl"], abs=1e-7)
    assert len(out) == 5 and out[3] is None and out[4] is None  # OpenRLHF's tuple, no IS correction
    # A trace with λ > 0 changes the gradient: the test can tell the patched loss from PPO.
    if settings.loss.lam > 0:
        patch.remove()
        _, plain_grad = _openrlhf_loss(policy_loss, old, new, adv, mask, **batch_info)
        assert (plain_grad - grad).abs().max() > 1e-3


def test_token_mean_reduction_is_the_global_token_mean():
    """OpenRLHF token-level loss ↔ verl token-mean: Σ(loss·mask)/batch_num_tokens·dp_size, checked by hand."""
    from verl_lambda.core.objective import token_losses

    settings = GRPOLambdaSettings.from_values(dict(lam=0.95, trace="both"))
    old, new, adv, mask, _ = _random_batch(seed=3)
    patch.apply(settings)
    policy_loss = orl_loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=None)
    out, _ = _openrlhf_loss(policy_loss, old, new, adv, mask, dp_size=4, batch_num_tokens=200.0, global_batch_size=9.0)
    per_token, _ = token_losses(old, new, adv, mask, settings.loss, clip_ratio_c=None)
    expected = (per_token * mask).sum() / 200.0 * 4
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


IS_MODES = [
    dict(is_correction_level="token", is_correction_mode="clip", is_correction_threshold=[0.5, 2.0]),
    dict(is_correction_level="token", is_correction_mode="mask", is_correction_threshold=[0.5, 2.0]),
    dict(is_correction_level="seq", is_correction_mode="mask", is_correction_threshold=[0.8, 1.25]),
    dict(is_correction_level="token", is_correction_gating="tv", is_correction_threshold=[0.0, 0.2]),
]


@pytest.mark.parametrize("is_mode", [{}] + IS_MODES, ids=["off", "tis", "icepop", "seq-mask", "tv"])
@pytest.mark.parametrize("dual_clip", [None, 3.0], ids=["no-dual", "dual"])
@pytest.mark.parametrize("token_level", [True, False], ids=["token", "seq"])
def test_lambda_zero_reproduces_openrlhf_ppo_loss(is_mode, dual_clip, token_level):
    """λ = 0 with `recent` is the identity trace: the patched forward must give OpenRLHF's own
    PPO loss, gradient, clip ratio, KL and IS outputs — an implementation independent of ours."""
    old, new, adv, mask, rollout = _random_batch(seed=11)
    kwargs = dict(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=dual_clip, token_level_loss=token_level, **is_mode)
    info = {"dp_size": 2, "batch_num_tokens": 141.0, "global_batch_size": 11.0}
    reference, reference_grad = _openrlhf_loss(orl_loss.PolicyLoss(**kwargs), old, new, adv, mask, rollout, **info)
    patch.apply(GRPOLambdaSettings.from_values(dict(lam=0.0, trace="recent")))
    out, grad = _openrlhf_loss(orl_loss.PolicyLoss(**kwargs), old, new, adv, mask, rollout, **info)
    assert len(out) == len(reference) == 5
    for ours, theirs in zip(out, reference):
        if theirs is None:
            assert ours is None
        else:
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-6)
    if is_mode:
        assert reference[3] is not None  # the IS branch really ran


def test_is_correction_weights_reach_the_traced_loss():
    """TIS (token clip) with λ > 0: the loss is the verl loss with the truncated IS weights,
    the weights computed here by hand as clamp(exp(old − rollout), 0.5, 2)."""
    settings = GRPOLambdaSettings.from_values(dict(lam=0.9, trace="recent"))
    old, new, adv, mask, rollout = _random_batch(seed=5)
    weights = torch.exp(old - rollout).clamp(0.5, 2.0)
    assert ((weights == 0.5) | (weights == 2.0))[mask].any()  # the truncation matters here
    policy_loss = orl_loss.PolicyLoss(
        clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=3.0, is_correction_level="token", is_correction_mode="clip",
        is_correction_threshold=[0.5, 2.0],
    )  # fmt: skip
    patch.apply(settings)
    out, grad = _openrlhf_loss(policy_loss, old, new, adv, mask, rollout)
    loss_v, grad_v, _ = _verl_loss(
        settings, old, new, adv, mask, agg="token-mean", clip_low=0.2, clip_high=0.2, dual_clip=3.0, batch_info={},
        is_weights=weights,
    )  # fmt: skip
    torch.testing.assert_close(out[0], loss_v, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, grad_v, rtol=0, atol=1e-6)
    vllm_kl = ((rollout - old) * mask).sum() / mask.sum()
    torch.testing.assert_close(out[3], vllm_kl, rtol=0, atol=1e-6)


def test_gspo_is_refused_while_grpo_lambda_is_on():
    patch.apply(GRPOLambdaSettings())
    old, new, adv, mask, _ = _random_batch(seed=1)
    with pytest.raises(ValueError, match="policy_loss_type must be ppo"):
        orl_loss.PolicyLoss(policy_loss_type="gspo")(new, old, adv, action_mask=mask)


def test_the_is_weight_probe_swaps_nothing_per_micro_batch():
    """OpenRLHF's aggregate_loss is wrapped once, when the loss module is patched, and restored by
    remove(); a forward call changes no module global of OpenRLHF."""
    real = orl_loss.aggregate_loss
    patch.apply(GRPOLambdaSettings())
    wrapper = orl_loss.aggregate_loss
    assert wrapper is not real and inspect.unwrap(wrapper) is real
    old, new, adv, mask, _ = _random_batch(seed=2)
    during = []

    def spy(self, log_probs, old_log_probs, advantages, action_mask, rollout_log_probs):
        during.append(orl_loss.aggregate_loss)  # what OpenRLHF's forward finds in its module while probed
        orl_loss.aggregate_loss(torch.full_like(log_probs, 2.0), action_mask, True)
        return (None,) * 5

    weights, _ = patch._openrlhf_is_weights(spy, None, old, mask, None)
    assert during == [wrapper] and orl_loss.aggregate_loss is wrapper
    assert torch.all(weights[mask] == 2.0) and torch.all(weights[~mask] == 0.0)
    orl_loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2)(new, old, adv, action_mask=mask)
    assert orl_loss.aggregate_loss is wrapper
    patch.remove()
    assert orl_loss.aggregate_loss is real


def test_the_is_weight_probe_refuses_an_openrlhf_of_another_shape():
    """If OpenRLHF's forward stops handing aggregate_loss exactly one per-token matrix, the probe says so."""
    patch.apply(GRPOLambdaSettings())
    old, _, _, mask, _ = _random_batch(seed=3)

    def twice(self, log_probs, old_log_probs, advantages, action_mask, rollout_log_probs):
        orl_loss.aggregate_loss(log_probs, action_mask, True)
        orl_loss.aggregate_loss(log_probs, action_mask, True)
        return (log_probs.sum(), None, None, None, None)

    def per_sequence(self, log_probs, old_log_probs, advantages, action_mask, rollout_log_probs):
        orl_loss.aggregate_loss(log_probs.sum(-1), action_mask, True)
        return (log_probs.sum(), None, None, None, None)

    for fake in (twice, per_sequence):
        with pytest.raises(patch.UnsupportedOpenRLHF, match="reads exactly one per-token matrix"):
            patch._openrlhf_is_weights(fake, None, old, mask, None)


def test_trainer_rules_are_one_function_called_by_the_launcher_and_the_workers(monkeypatch):
    calls = []
    real = patch.check_trainer_options
    monkeypatch.setattr(patch, "check_trainer_options", lambda **kw: calls.append(kw) or real(**kw))
    launcher.check_trainer_args(GOOD_ARGS)
    patch.apply(GRPOLambdaSettings())
    maker = _maker("group_norm", n=4)
    maker.compute_advantages_and_returns(_experiences(ORDER))
    old, new, adv, mask, _ = _random_batch(seed=4)
    orl_loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.2)(new, old, adv, action_mask=mask)
    assert calls[0] == dict(estimator="group_norm", policy_loss_type="ppo", kl_use_loss=True, kl_coef=0.01)
    assert dict(estimator="group_norm", kl_use_loss=True, kl_coef=0.0) in calls[1:]  # the experience maker
    assert calls[-1] == dict(policy_loss_type="ppo")  # the policy loss


# ──────────────────────────────────────────────────────────────── advantage vs verl


def _maker(estimator: str, n: int, **extra_args):
    args = SimpleNamespace(
        algo=SimpleNamespace(
            advantage=SimpleNamespace(estimator=estimator, gamma=1.0, lambd=1.0, no_std_norm=False),
            kl=SimpleNamespace(use_loss=True),
        ),
        rollout=SimpleNamespace(n_samples_per_prompt=n, max_new_tokens=16),
        reward=SimpleNamespace(
            clip_range=(-10.0, 10.0),
            overlong_buffer_len=extra_args.get("overlong_buffer_len"),
            overlong_penalty_factor=1.0,
            stop_properly_penalty_coef=None,
        ),
        data=SimpleNamespace(max_len=64),
    )
    maker = object.__new__(orl_maker.RemoteExperienceMaker)
    maker.strategy = SimpleNamespace(args=args)
    maker.args = args
    maker.advantage_estimator = estimator
    maker.kl_ctl = FixedKLController(extra_args.get("kl_coef", 0.0))
    maker.initial_model_group = extra_args.get("initial_model_group")
    return maker


# 3 prompts × 4 samples; rewards by rollout position (sample k belongs to prompt k // 4)
REWARDS = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5]
LENGTHS = [5, 14, 3, 16, 7, 9, 16, 2, 11, 6, 15, 8]


def _experiences(order):
    """Micro-batches of the 12 samples in a shuffled order, right-padded action masks."""
    experiences = []
    for chunk in order:
        width = max(LENGTHS[k] for k in chunk) + 2
        mask = torch.tensor([[t < LENGTHS[k] for t in range(width)] for k in chunk])
        experiences.append(
            Experience(
                action_mask=mask,
                rewards=torch.tensor([REWARDS[k] for k in chunk]),
                response_length=torch.tensor([float(LENGTHS[k]) for k in chunk]),
                kl=torch.zeros(len(chunk), width),
                index=list(chunk),
                info={},
            )
        )
    return experiences


ORDER = [[5, 0, 11], [3, 8], [1, 9, 2, 6], [10, 4, 7]]


def _hand_advantages(rewards, n, by_std, clamp):
    out = []
    for k, r in enumerate(rewards):
        group = rewards[(k // n) * n : (k // n + 1) * n]
        mean = sum(group) / n
        std = (sum((g - mean) ** 2 for g in group) / (n - 1)) ** 0.5
        value = (r - mean) / (std + 1e-6) if by_std else r - mean
        out.append(value if clamp is None else max(value, clamp))
    return out


@pytest.mark.parametrize(
    "estimator,clamp", [("group_norm", -0.1), ("group_norm", None), ("dr_grpo", -0.2)], ids=["grpo", "noclamp", "dr"]
)
def test_patched_advantage_equals_verl_estimator(estimator, clamp):
    from verl_lambda.verl.register import compute_grpo_lambda_outcome_advantage

    patch.apply(GRPOLambdaSettings.from_values(dict(adv_clamp=clamp)))
    maker = _maker(estimator, n=4)
    experiences = maker.compute_advantages_and_returns(_experiences(ORDER))

    expected = _hand_advantages(REWARDS, 4, estimator == "group_norm", clamp)
    verl, _ = compute_grpo_lambda_outcome_advantage(
        torch.tensor(REWARDS)[:, None],
        torch.ones(12, 1),
        {"grpo_lambda": {"adv_clamp": clamp}, "norm_adv_by_std_in_grpo": estimator == "group_norm"},
        index=np.array([f"prompt-{k // 4}" for k in range(12)], dtype=object),
    )
    assert min(expected) < 0 and (clamp is None or min(expected) == clamp)
    for experience in experiences:
        assert experience.advantages.shape == experience.action_mask.shape
        assert torch.equal(experience.advantages, experience.returns)
        for row, k in enumerate(experience.index):
            values = experience.advantages[row]
            valid = experience.action_mask[row]
            assert torch.all(values[~valid] == 0)
            torch.testing.assert_close(values[valid], torch.full((LENGTHS[k],), expected[k]), rtol=0, atol=1e-6)
            torch.testing.assert_close(values[valid], verl[k].expand(LENGTHS[k]), rtol=0, atol=0)


def test_patched_advantage_is_openrlhf_group_norm_then_clamp():
    """Against OpenRLHF's own (unpatched) group_norm: equal up to its ε (1e-9 vs verl's 1e-6)."""
    reference = _maker("group_norm", n=4).compute_advantages_and_returns(_experiences(ORDER))
    patch.apply(GRPOLambdaSettings.from_values(dict(adv_clamp=-0.1)))
    ours = _maker("group_norm", n=4).compute_advantages_and_returns(_experiences(ORDER))
    for a, b in zip(ours, reference):
        clamped = torch.where(b.action_mask, b.advantages.clamp(min=-0.1), torch.zeros_like(b.advantages))
        torch.testing.assert_close(a.advantages, clamped, rtol=1e-5, atol=1e-5)


def test_patched_advantage_uses_openrlhf_length_penalties():
    patch.apply(GRPOLambdaSettings.from_values(dict(adv_clamp=None)))
    maker = _maker("group_norm", n=4, overlong_buffer_len=4)
    experiences = maker.compute_advantages_and_returns(_experiences(ORDER))
    # DAPO overlong penalty with max_new_tokens 16, buffer 4: −min(len − 12, 4)/4 for len > 12
    penalised = [r - min(L - 12, 4) / 4 if L > 12 else r for r, L in zip(REWARDS, LENGTHS)]
    expected = _hand_advantages(penalised, 4, True, None)
    for experience in experiences:
        for row, k in enumerate(experience.index):
            got = experience.advantages[row][experience.action_mask[row]]
            torch.testing.assert_close(got, torch.full_like(got, expected[k]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "estimator,extra,match",
    [
        ("reinforce_baseline", {}, "pass --algo.advantage.estimator group_norm"),
        ("group_norm", {"kl_coef": 0.01, "initial_model_group": object()}, "KL penalty as a loss term"),
    ],
)
def test_patched_advantage_refuses_what_grpo_lambda_cannot_use(estimator, extra, match):
    patch.apply(GRPOLambdaSettings())
    maker = _maker(estimator, n=4, **extra)
    maker.strategy.args.algo.kl.use_loss = False
    with pytest.raises(ValueError, match=match):
        maker.compute_advantages_and_returns(_experiences(ORDER))


# ───────────────────────────────────────────────────────────────────── version check


def test_unsupported_version_is_refused_naming_the_range():
    with pytest.raises(patch.UnsupportedOpenRLHF) as info:
        patch.check_version("0.10.2", environ={})
    assert ">=0.11.0,<0.12" in str(info.value) and "0.10.2" in str(info.value)
    assert patch.check_version("0.11.1", environ={}) == "0.11.1"
    with pytest.raises(patch.UnsupportedOpenRLHF):
        patch.check_version("0.12.0", environ={})
    assert patch.check_version("0.12.0", environ={patch.ENV_ALLOW_UNTESTED: "1"}) == "0.12.0"


def test_changed_signature_is_refused_naming_the_range():
    class PolicyLoss010(torch.nn.Module):  # the 0.10.x forward: no global batch information
        def __init__(
            self, clip_eps_low=0.2, clip_eps_high=0.2, dual_clip=None, token_level_loss=True, policy_loss_type="ppo"
        ):
            super().__init__()

        def forward(self, log_probs, old_log_probs, advantages, action_mask=None, rollout_log_probs=None):
            return aggregate_loss(log_probs, action_mask)  # noqa: F821

    with pytest.raises(patch.UnsupportedOpenRLHF) as info:
        patch.check_policy_loss(PolicyLoss010, orl_loss.aggregate_loss, "0.10.2")
    message = str(info.value)
    assert ">=0.11.0,<0.12" in message and "PolicyLoss.forward(" in message and "dp_size" in message

    class Maker(orl_maker.RemoteExperienceMaker):
        def compute_advantages_and_returns(self, experiences, gamma):
            return experiences

    with pytest.raises(patch.UnsupportedOpenRLHF, match=r">=0\.11\.0,<0\.12.*compute_advantages_and_returns"):
        patch.check_experience_maker(Maker, "0.11.9")

    def aggregate_loss(loss, mask, mode="token-mean"):
        return loss

    with pytest.raises(patch.UnsupportedOpenRLHF, match=r"aggregate_loss\(loss, mask, mode\)"):
        patch.check_policy_loss(orl_loss.PolicyLoss, aggregate_loss, "0.11.2")
    patch.check_policy_loss(orl_loss.PolicyLoss, orl_loss.aggregate_loss, "0.11.2")  # the real ones pass


def test_apply_refuses_an_unsupported_installed_version(monkeypatch):
    monkeypatch.setattr(patch, "_installed_version", lambda: "0.10.4")
    monkeypatch.delenv(patch.ENV_ALLOW_UNTESTED, raising=False)
    with pytest.raises(patch.UnsupportedOpenRLHF, match=r"supports openrlhf>=0\.11\.0,<0\.12.*found openrlhf 0\.10\.4"):
        patch.apply(GRPOLambdaSettings())
    assert orl_loss.PolicyLoss.forward is ORIGINAL_FORWARD


# ──────────────────────────────────────────────────────────────────────── launcher


class _RayInitCalled(Exception):
    pass


# The first test imported OpenRLHF's CLI module; running it again as __main__ makes runpy warn.
_RUNPY_AGAIN = pytest.mark.filterwarnings("ignore:'openrlhf.cli.train_ppo_ray' found in sys.modules:RuntimeWarning")


@pytest.fixture
def fake_ray(monkeypatch):
    """Records ray.init calls and stops there, so no Ray starts."""
    import ray

    calls = []

    def init(*args, **kwargs):
        calls.append(kwargs)
        raise _RayInitCalled

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    for var in [patch.ENV_SWITCH, patch.ENV_ALLOW_UNTESTED, DRY_RUN_ENV, *(env_var(f.name) for f in setting_fields())]:
        monkeypatch.delenv(var, raising=False)
    return SimpleNamespace(calls=calls, init=init)


GOOD_ARGS = [
    "--actor.model_name_or_path", "Qwen/Qwen2.5-7B",
    "--algo.advantage.estimator", "group_norm",
    "--algo.kl.use_loss",
    "--rollout.n_samples_per_prompt", "4",
    "--reward.clip_range", "-10", "10",
]  # fmt: skip


@_RUNPY_AGAIN
def test_launcher_hands_over_to_openrlhf_with_hook_and_its_runtime_env(fake_ray, monkeypatch):
    monkeypatch.setenv("GRPO_LAMBDA_TRACE", "both")
    saved_argv = list(sys.argv)
    with pytest.raises(_RayInitCalled):  # OpenRLHF parsed its arguments and reached ray.init
        launcher.main(["--lambda.lam", "0.9", *GOOD_ARGS, "--lambda.adv_clamp=none"])
    assert sys.argv == saved_argv
    import ray

    assert ray.init is fake_ray.init  # the launcher's wrapper is gone again
    (kwargs,) = fake_ray.calls
    runtime_env = kwargs["runtime_env"]
    assert runtime_env["worker_process_setup_hook"] == "verl_lambda.patches.openrlhf.apply"
    env = runtime_env["env_vars"]
    # OpenRLHF's own defaults survive ...
    assert {"TOKENIZERS_PARALLELISM", "NCCL_DEBUG", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"} <= set(env)
    # ... next to the GRPO-λ settings: flags, then environment, then defaults
    assert env["GRPO_LAMBDA"] == "1"
    assert patch.settings_from_env(env) == GRPOLambdaSettings.from_values(dict(lam=0.9, trace="both", adv_clamp=None))


def test_launcher_splits_its_options_out_in_order():
    flags, rest, switches = launcher.split_lambda_args(
        ["--a", "1", "--lambda.lam", "0.5", "--reward.clip_range", "-10", "10", "--lambda.trace=both", "--z"]
    )
    assert flags == {"lam": "0.5", "trace": "both"} and not switches
    assert rest == ["--a", "1", "--reward.clip_range", "-10", "10", "--z"]


@pytest.mark.parametrize(
    "extra,env,needle",
    [
        (["--lambda.lam", "1.5"], {}, "--lambda.lam must be a number in [0, 1], got 1.5"),
        (["--lambda.trace", "old"], {}, "--lambda.trace must be one of ['recent', 'both', 'early'], got 'old'"),
        (["--lambda.trace_anchor", "start"], {}, "--lambda.trace_anchor must be one of ['token', 'end'], got 'start'"),
        (["--lambda.adv_clamp", "0.3"], {}, "--lambda.adv_clamp must be a number ≤ 0 or none, got 0.3"),
        (["--lambda.lam", "abc"], {}, "--lambda.lam expects a number, got 'abc'"),
        (["--lambda.lamda", "0.9"], {}, "unknown option --lambda.lamda"),
        ([], {"GRPO_LAMBDA_TRACE_EPSILON": "2"}, "GRPO_LAMBDA_TRACE_EPSILON must be a number in [0, 1], got 2.0"),
        (["--algo.advantage.estimator", "reinforce_baseline"], {}, "--algo.advantage.estimator group_norm"),
        (["--actor.policy_loss_type", "gspo"], {}, "--actor.policy_loss_type must be ppo"),
        (
            [],
            {"GRPO_LAMBDA_TRCAE": "both"},
            "GRPO_LAMBDA_TRCAE is not a GRPO-λ variable: did you mean GRPO_LAMBDA_TRACE?",
        ),
    ],
)
def test_bad_settings_fail_before_ray_with_one_line(fake_ray, monkeypatch, capsys, extra, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher.main([*GOOD_ARGS, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("verl_lambda.patches.openrlhf: error: ")
    assert needle in err
    assert fake_ray.calls == []  # Ray was never started


def test_a_switch_refuses_a_value(fake_ray, capsys):
    """--lambda.off=false must not switch GRPO-λ off: a flag that takes no value refuses one."""
    assert launcher.main(["--lambda.off=false", *GOOD_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lambda.off takes no value" in err and fake_ray.calls == []


def test_the_unpatched_baseline_checks_the_openrlhf_import_too(fake_ray, monkeypatch, capsys):
    def no_vllm():
        raise ModuleNotFoundError("No module named 'vllm'")

    monkeypatch.setattr(patch, "import_openrlhf", no_vllm)
    assert launcher.main(["--lambda.off", *GOOD_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot import OpenRLHF's trainer modules: No module named 'vllm'" in err
    assert "Traceback" not in err and fake_ray.calls == []


@_RUNPY_AGAIN
def test_kl_in_reward_fails_before_ray(fake_ray, capsys):
    args = [a for a in GOOD_ARGS if a != "--algo.kl.use_loss"]
    assert launcher.main(args) == 2
    assert "--algo.kl.use_loss" in capsys.readouterr().err and fake_ray.calls == []
    with pytest.raises(_RayInitCalled):
        launcher.main([*args, "--algo.kl.init_coef", "0"])


def test_unsupported_openrlhf_fails_before_ray(fake_ray, monkeypatch, capsys):
    monkeypatch.setattr(patch, "_installed_version", lambda: "0.9.10")
    assert launcher.main(GOOD_ARGS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ">=0.11.0,<0.12" in err and "0.9.10" in err
    assert fake_ray.calls == []


# ─────────────────────────────────────────────────────────────────────────── recipes

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "openrlhf"


def _recipe_argv(script: str, tmp_path, env=None) -> tuple[list[str], dict[str, str]]:
    """The python3 command line a recipe runs and its GRPO_LAMBDA_* variables (python3 replaced by a
    recorder on PATH)."""
    record = tmp_path / f"{script}.args"
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "python3").write_text(
        '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$RECORD"\nenv | grep "^GRPO_LAMBDA_" > "$RECORD.env" || true\n'
    )
    (fake / "python3").chmod(0o755)
    run_env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record), **(env or {})}
    done = subprocess.run(["bash", str(RECIPES / script)], env=run_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    variables = dict(line.split("=", 1) for line in Path(f"{record}.env").read_text().splitlines())
    return record.read_text().split("\0")[:-1], variables


_NAMING = {"--ckpt.output_dir", "--ckpt.path", "--logger.tensorboard_dir", "--logger.wandb.run_name"}


def _without(argv: list[str], drop) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif drop(token):
            skip = True
        else:
            out.append(token)
    return out


@_RUNPY_AGAIN
def test_recipes_pass_the_launcher_and_openrlhf_parser_and_are_matched(fake_ray, tmp_path, monkeypatch, capsys):
    lam_argv, lam_env = _recipe_argv("run_qwen2.5-7b_grpo_lambda.sh", tmp_path, {"TRACE": "both"})
    base_argv, base_env = _recipe_argv("run_qwen2.5-7b_grpo.sh", tmp_path, {"TRACE": "both"})
    assert lam_env == {"GRPO_LAMBDA_TRACE": "both"} and base_env == {}
    assert lam_argv[:2] == base_argv[:2] == ["-m", "verl_lambda.patches.openrlhf"]
    # matched: the same OpenRLHF arguments once GRPO-λ's switch-off and the run's names are set aside
    assert "--lambda.off" in base_argv and not any(t.startswith("--lambda.") for t in lam_argv)
    lam_rest = _without(lam_argv[2:], lambda t: t in _NAMING)
    assert lam_rest == _without([t for t in base_argv[2:] if t != "--lambda.off"], lambda t: t in _NAMING)
    # both recipes pass the launcher's checks and OpenRLHF's own argument parser (dry run)
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    monkeypatch.setenv("GRPO_LAMBDA_TRACE", lam_env["GRPO_LAMBDA_TRACE"])
    assert launcher.main(lam_argv[2:]) == 0
    out = capsys.readouterr().out
    assert (
        "GRPO-λ lam=0.99 gamma=1.0 trace=both trace_epsilon=0.0 trace_norm=none trace_anchor=token "
        "trace_application=ratio adv_clamp=-0.1" in out
    )
    assert "dry run: OpenRLHF accepted its arguments" in out and '"GRPO_LAMBDA_TRACE": "both"' in out
    monkeypatch.delenv("GRPO_LAMBDA_TRACE")
    assert launcher.main(base_argv[2:]) == 0
    out = capsys.readouterr().out
    assert "GRPO-λ off (--lambda.off)" in out and "worker_process_setup_hook" not in out
    assert fake_ray.calls == []


def test_recipe_reward_function_scores_boxed_answers():
    spec = importlib.util.spec_from_file_location("math_reward_func", RECIPES / "math_reward_func.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompt = (
        "<|im_start|>user\nWhat is 1/2 + 1/4? Put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    queries = [
        prompt + "1/2 + 1/4 = \\boxed{\\frac{3}{4}}<|im_end|>",
        prompt + "It is \\boxed{1}<|im_end|>",
        prompt + "no box",
    ]
    labels = [{"style": "rule", "ground_truth": "3/4"}, {"style": "rule", "ground_truth": "3/4"}, "3/4"]
    out = module.reward_func(queries, [prompt] * 3, labels)
    assert out["rewards"].tolist() == [1.0, 0.0, 0.0] and torch.equal(out["scores"], out["rewards"])


# ────────────────────────────────────────────────────────────────── Ray setup hook


@pytest.fixture(scope="module")
def ray_with_hook():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    if ray.is_initialized():
        ray.shutdown()
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # ship install_gpu_stubs to the workers
    env = patch.settings_to_env(GRPOLambdaSettings.from_values(dict(lam=0.9, trace="both")))
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": launcher.SETUP_HOOK, "env_vars": env},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(module)


def _probe_worker():
    from verl_lambda.patches.openrlhf import patch as worker_patch

    before = dict(worker_patch.patch_status())
    install_gpu_stubs()
    import openrlhf.models.loss  # noqa: F401  (first import in this process: patched on import)
    import openrlhf.trainer.ppo_utils.experience_maker  # noqa: F401

    settings = worker_patch.active_settings()
    return {
        "before": before,
        "after": worker_patch.patch_status(),
        "settings": None if settings is None else worker_patch.settings_to_env(settings),
    }


def test_setup_hook_patches_openrlhf_inside_a_ray_actor(ray_with_hook):
    ray = ray_with_hook

    @ray.remote(num_cpus=1)
    class Probe:
        def report(self):
            return _probe_worker()

    probe = Probe.remote()
    try:
        report = ray_result(ray, probe.report.remote(), "a Ray actor whose setup hook patches OpenRLHF")
    finally:
        ray.kill(probe)
    assert report["before"] == {
        "PolicyLoss.forward": False,
        "RemoteExperienceMaker.compute_advantages_and_returns": False,
    }  # OpenRLHF was not loaded when the hook ran
    assert report["after"] == {"PolicyLoss.forward": True, "RemoteExperienceMaker.compute_advantages_and_returns": True}
    assert report["settings"]["GRPO_LAMBDA_LAM"] == "0.9" and report["settings"]["GRPO_LAMBDA_TRACE"] == "both"
    # the hook runs in Ray's workers only: this (driver) process is untouched
    assert patch.patch_status() == {
        "PolicyLoss.forward": False,
        "RemoteExperienceMaker.compute_advantages_and_returns": False,
    }
