"""The registered `grpo_lambda` policy loss, checked through verl's own loss path."""

import itertools
import math

import numpy as np
import pytest
import spec_reference as spec
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig, PolicyLossConfig
from verl.workers.utils.losses import ppo_loss

from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_APPLICATIONS, TRACE_NORMS, TRACE_STYLES
from verl_lambda.verl.config import GRPOLambdaLossConfig

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean"]


def actor_config(policy_loss, **kwargs):
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss, **kwargs)


def batch(seed, n=6, length=24, dtype=torch.float64, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, length, generator=g, dtype=torch.float64).to(dtype) * 3
    new = old + torch.randn(n, length, generator=g, dtype=torch.float64).to(dtype) * spread
    adv = torch.randn(n, 1, generator=g, dtype=torch.float64).to(dtype).expand(n, length).clone()
    mask = spec.random_mask(g, n, length)
    mask[0] = True
    is_w = torch.rand(n, length, generator=g, dtype=torch.float64).to(dtype) + 0.5
    return old, new, adv, mask, is_w


def call_loss(name, cfg, old, new, adv, mask, mode, is_w=None):
    return get_policy_loss_fn(name)(
        old_log_prob=old,
        log_prob=new,
        advantages=adv,
        response_mask=mask,
        loss_agg_mode=mode,
        config=cfg,
        rollout_is_weights=is_w,
    )


SETTINGS = [
    dict(lam=lam, gamma=gamma, trace=trace, trace_epsilon=eps, trace_norm=norm)
    for lam, gamma, trace, eps, norm in itertools.product(
        [0.0, 0.5, 0.99, 1.0], [1.0, 0.9], ["recent", "both"], [0.0, 0.1], ["none", "sum"]
    )
    if not (gamma != 1.0 and lam in (0.0, 1.0))
] + [  # every style x anchor x application (spec §4, §4b)
    dict(lam=lam, gamma=1.0, trace=trace, trace_epsilon=eps, trace_norm=norm, trace_anchor=anchor,
         trace_application=application)
    for lam, trace, anchor, application, eps, norm in itertools.product(
        [0.0, 0.5, 0.99], TRACE_STYLES, TRACE_ANCHORS, TRACE_APPLICATIONS, [0.0, 1e-7, 0.1], TRACE_NORMS,
    )
    if (anchor, application) != ("token", "ratio") or trace == "early"
]  # fmt: skip


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_loss_and_gradient_match_independent_fp64_implementation(settings):
    old, new, adv, mask, is_w = batch(11)
    cfg = actor_config(GRPOLambdaLossConfig(**settings), clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    for mode in AGG_MODES:
        a = new.clone().requires_grad_(True)
        loss, metrics = call_loss("grpo_lambda", cfg, old, a, adv, mask, mode, is_w)
        loss.backward()
        b = new.clone().requires_grad_(True)
        expected = spec.aggregate(spec.token_losses(old, b, adv, mask, settings, 0.2, 0.28, 3.0, is_w), mask, mode)
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-12)
        assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("with_is_weights", [False, True])
def test_recent_lambda_zero_is_verl_vanilla(dtype, mode, with_is_weights):
    old, new, adv, mask, is_w = batch(5, dtype=dtype, spread=0.5)  # wide ratios: both clips active
    is_w = is_w if with_is_weights else None
    results = []
    for name, policy_loss in (
        ("vanilla", PolicyLossConfig(loss_mode="vanilla")),
        ("grpo_lambda", GRPOLambdaLossConfig(lam=0.0, trace="recent")),
    ):
        x = new.clone().requires_grad_(True)
        cfg = actor_config(policy_loss, clip_ratio_low=0.2, clip_ratio_high=0.3, clip_ratio_c=2.5)
        loss, metrics = call_loss(name, cfg, old, x, adv, mask, mode, is_w)
        loss.backward()
        results.append((loss.detach(), x.grad, metrics))
    (l0, g0, m0), (l1, g1, m1) = results
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(l1.to(dtype), l0, **tol)
    torch.testing.assert_close(g1, g0, **tol)
    for key in ("actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"):
        assert m1[key] == pytest.approx(m0[key], rel=1e-5, abs=1e-7), key
    assert m0["actor/pg_clipfrac"] > 0 and m0["actor/pg_clipfrac_lower"] > 0, "inputs must exercise both clips"


@pytest.mark.parametrize(
    "trace,eps,norm,anchor",
    [("recent", 0.0, "none", "token"), ("both", 0.0, "none", "token"), ("both", 0.05, "sum", "token"),
     ("early", 0.0, "none", "token"), ("recent", 1e-7, "none", "end"), ("both", 0.0, "sum", "end"),
     ("early", 0.05, "none", "end")],
)  # fmt: skip
def test_gradient_at_ratio_one_is_the_credit_shape(trace, eps, norm, anchor):
    """With π_θ = π_old and A > 0, d loss / d log π(o_k) = −A · Σ_{t ≥ k} w(t, k) under token-sum."""
    n, adv_value = 50, 0.7
    old = -torch.rand(1, n, dtype=torch.float64)
    x = old.clone().requires_grad_(True)
    adv = torch.full((1, n), adv_value, dtype=torch.float64)
    cfg = actor_config(
        GRPOLambdaLossConfig(lam=0.9, trace=trace, trace_epsilon=eps, trace_norm=norm, trace_anchor=anchor)
    )
    loss, _ = call_loss("grpo_lambda", cfg, old, x, adv, torch.ones(1, n, dtype=torch.bool), "token-sum")
    loss.backward()
    expected = -adv_value * torch.tensor(spec.credit(n, 0.9, trace, eps, norm, anchor), dtype=torch.float64)
    torch.testing.assert_close(x.grad[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("splits", [2, 3])
def test_micro_batches_with_global_batch_info_sum_to_the_full_batch_gradient(mode, splits):
    old, new, adv, mask, is_w = batch(8, n=6)
    info = dict(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0], loss_scale_factor=None)
    settings = GRPOLambdaLossConfig(lam=0.99, trace="both", trace_epsilon=0.01)

    def grad_of(rows_list):
        x = new.clone().requires_grad_(True)
        cfg = actor_config(settings)
        cfg.global_batch_info.update(info)
        total = sum(call_loss("grpo_lambda", cfg, old[r], x[r], adv[r], mask[r], mode, is_w[r])[0] for r in rows_list)
        total.backward()
        return total.detach(), x.grad

    whole = grad_of([slice(0, 6)])
    parts = grad_of([slice(i * 6 // splits, (i + 1) * 6 // splits) for i in range(splits)])
    torch.testing.assert_close(parts[0], whole[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(parts[1], whole[1], rtol=1e-12, atol=1e-14)


def _nested(tensors):
    return torch.nested.as_nested_tensor(tensors, layout=torch.jagged)


def test_through_verl_ppo_loss_with_nested_inputs_of_different_lengths():
    """verl's engine loss entry point: jagged per-sample tensors → padded rows → our loss."""
    g = torch.Generator().manual_seed(3)
    prompt_lens, response_lens = [3, 2, 5, 1], [4, 2, 7, 5]
    old = [-torch.rand(r, generator=g, dtype=torch.float64) for r in response_lens]
    full = [-torch.rand(p + r, generator=g, dtype=torch.float64) for p, r in zip(prompt_lens, response_lens)]
    adv = [torch.full((r,), float(torch.randn(1, generator=g))) for r in response_lens]
    masks = [torch.ones(r, dtype=torch.long) for r in response_lens]
    masks[2][3] = 0  # a tool-output token inside a response
    data = tu.get_tensordict(
        {
            "prompts": _nested([torch.zeros(p, dtype=torch.long) for p in prompt_lens]),
            "responses": _nested([torch.zeros(r, dtype=torch.long) for r in response_lens]),
            "response_mask": _nested(masks),
            "old_log_probs": _nested(old),
            "advantages": _nested([a.double() for a in adv]),
        },
        non_tensor_dict={"dp_size": 1, "batch_num_tokens": sum(int(m.sum()) for m in masks), "global_batch_size": 4},
    )
    settings = dict(lam=0.9, gamma=1.0, trace="both", trace_epsilon=0.0, trace_norm="none")
    cfg = actor_config(GRPOLambdaLossConfig(**settings))
    leaves = [f.clone().requires_grad_(True) for f in full]
    loss, metrics = ppo_loss(cfg, {"log_probs": _nested(leaves)}, data)
    loss.backward()

    # The same batch by hand: response log-probs are the last r positions shifted by one.
    width = max(response_lens)
    leaves_ref = [f.clone().requires_grad_(True) for f in full]
    pad = lambda rows: torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])  # noqa: E731
    new_rows = pad([leaf[p - 1 : p - 1 + r] for leaf, p, r in zip(leaves_ref, prompt_lens, response_lens)])
    mask = pad(masks).bool()
    expected = spec.aggregate(
        spec.token_losses(pad(old), new_rows, pad(adv).double(), mask, settings, 0.2, 0.2, 3.0), mask, "token-mean"
    )
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for got, want in zip(leaves, leaves_ref):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12)
    assert "actor/grpo_lambda/trace_abs_max" in metrics


def test_guard_fires_and_is_reported():
    n = 30
    old = torch.zeros(2, n)
    new = torch.full((2, n), 1.0)  # ℓ_t = t + 1 under λ = 1: past the ±20 guard from t = 20
    adv = torch.ones(2, n)
    cfg = actor_config(GRPOLambdaLossConfig(lam=1.0))
    x = new.clone().requires_grad_(True)
    loss, metrics = call_loss("grpo_lambda", cfg, old, x, adv, torch.ones(2, n, dtype=torch.bool), "token-mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert metrics["actor/grpo_lambda/guard_frac"] == pytest.approx(10 / 30)
    assert metrics["actor/grpo_lambda/trace_abs_max"] == pytest.approx(30.0)


@pytest.mark.parametrize("seed", range(4))
def test_trace_diagnostics_equal_the_float64_trace_on_both_sides_of_the_guard(seed):
    # ℓ reaches beyond −20 on some rows and beyond +20 on others (λ = 1 sums the log-ratios), so
    # trace_abs_max, trace_abs_mean and guard_frac must count |ℓ|, not ℓ.
    old, new, adv, mask, _ = batch(seed, n=8, length=40, spread=0.0)
    g = torch.Generator().manual_seed(100 + seed)
    step = torch.where(torch.rand(8, 1, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0).double()
    new = old + step * (0.5 + torch.rand(8, 40, generator=g, dtype=torch.float64))
    settings = dict(lam=1.0, gamma=1.0, trace="recent", trace_epsilon=0.0, trace_norm="none")
    _, metrics = call_loss("grpo_lambda", actor_config(GRPOLambdaLossConfig(**settings)), old, new, adv, mask,
                           "token-mean")  # fmt: skip
    ell = spec.trace(new - old, mask, 1.0, 1.0, "recent", 0.0, "none")[mask.bool()]
    assert (ell < -20).any() and (ell > 20).any(), "the inputs must put ℓ past the guard on both sides"
    assert metrics["actor/grpo_lambda/trace_abs_max"] == pytest.approx(ell.abs().max().item(), rel=1e-9)
    assert metrics["actor/grpo_lambda/trace_abs_mean"] == pytest.approx(ell.abs().mean().item(), rel=1e-9)
    assert metrics["actor/grpo_lambda/guard_frac"] == pytest.approx((ell.abs() > 20).double().mean().item(), rel=1e-12)


def test_plain_policy_loss_config_is_refused_with_the_target_hint():
    old, new, adv, mask, _ = batch(1)
    with pytest.raises(TypeError, match=r"_target_=verl_lambda\.verl\.config\.GRPOLambdaLossConfig"):
        call_loss(
            "grpo_lambda", actor_config(PolicyLossConfig(loss_mode="grpo_lambda")), old, new, adv, mask, "token-mean"
        )
    with pytest.raises(TypeError, match="_target_"):
        call_loss("grpo_lambda", None, old, new, adv, mask, "token-mean")


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(lam=1.5), r"policy_loss\.lam must be a number in \[0, 1\], got 1\.5"),
        (dict(trace="bogus"), r"policy_loss\.trace must be one of \['recent', 'both', 'early'\], got 'bogus'"),
        (
            dict(trace_anchor="bogus"),
            r"^actor_rollout_ref\.actor\.policy_loss\.trace_anchor must be one of \['token', 'end'\], got 'bogus'$",
        ),
        (
            dict(trace_application="traced"),
            r"policy_loss\.trace_application must be one of \['ratio', 'weight'\], got 'traced'",
        ),
        (dict(trace_epsilon=-0.01), r"policy_loss\.trace_epsilon must be"),
        (dict(gamma=1.01), r"policy_loss\.gamma must be"),
        (dict(trace_norm="l2"), r"policy_loss\.trace_norm must be one of"),
        (dict(loss_mode="vanilla"), r"loss_mode must be 'grpo_lambda'"),
        (dict(loss_mode="bypass_mode"), r"bypass_mode=true replaces the policy loss"),
    ],
)
def test_config_rejects_bad_values_in_one_line(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        GRPOLambdaLossConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_dual_clip_bound_must_exceed_one():
    old, new, adv, mask, _ = batch(1)
    cfg = actor_config(GRPOLambdaLossConfig(), clip_ratio_c=1.0)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        call_loss("grpo_lambda", cfg, old, new, adv, mask, "token-mean")


AUTOCAST_DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA device here: CUDA autocast not exercised"
        ),
    ),
]
AUTOCAST_SETTINGS = [
    dict(lam=0.99, gamma=1.0, trace="recent", trace_epsilon=0.0, trace_norm="none"),
    dict(lam=0.99, gamma=1.0, trace="both", trace_epsilon=0.0, trace_norm="none"),
    dict(lam=0.9, gamma=1.0, trace="both", trace_epsilon=0.01, trace_norm="sum"),
    dict(lam=0.999, gamma=0.99, trace="recent", trace_epsilon=0.1, trace_norm="sum"),
]


@pytest.mark.parametrize("device", AUTOCAST_DEVICES)
@pytest.mark.parametrize("settings", AUTOCAST_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_loss_under_bf16_autocast_equals_the_fp64_reference(device, settings):
    """verl's FSDP engine calls the loss inside torch.autocast(bf16): the result must not change."""
    old, new, adv, mask, is_w = batch(21, n=6, length=40, dtype=torch.float64, spread=0.05)
    cfg = actor_config(GRPOLambdaLossConfig(**settings), clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    b = new.clone().requires_grad_(True)
    expected = spec.aggregate(spec.token_losses(old, b, adv, mask, settings, 0.2, 0.28, 3.0, is_w), mask, "token-mean")
    expected.backward()
    on = dict(device=device, dtype=torch.float32)
    a = new.to(**on).requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss, metrics = call_loss(
            "grpo_lambda", cfg, old.to(**on), a, adv.to(**on), mask.to(device), "token-mean", is_w.to(**on)
        )
    loss.backward()
    assert loss.dtype == torch.float32
    assert metrics["actor/ppo_kl"] != 0.0  # off-policy: the trace changes the loss
    torch.testing.assert_close(loss.double().cpu(), expected, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(a.grad.double().cpu(), b.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("device", AUTOCAST_DEVICES)
def test_bf16_advantages_are_not_rounded(device):
    """Advantages stay in their own precision: a float32 advantage is not rounded to bf16."""
    old = torch.zeros(1, 4, device=device)
    adv = torch.full((1, 4), 1.0 + 2.0**-12, device=device)  # not representable in bf16
    cfg = actor_config(GRPOLambdaLossConfig(lam=0.99))
    with torch.autocast(device, dtype=torch.bfloat16):
        loss, _ = call_loss(
            "grpo_lambda", cfg, old, old.clone(), adv, torch.ones(1, 4, dtype=torch.bool, device=device), "token-mean"
        )
    assert loss.item() == -(1.0 + 2.0**-12)


NON_FINITE = {"-inf": float("-inf"), "+inf": float("inf"), "nan": float("nan")}


@pytest.mark.parametrize("style", ["recent", "both"])
@pytest.mark.parametrize("kind", list(NON_FINITE))
def test_a_non_finite_log_prob_at_a_valid_token_gives_the_clamped_loss(kind, style):
    """As vanilla: the token log-ratio is clamped to ±20 (NaN counts as 0) before the trace."""
    old, new, adv, mask, _ = batch(31, n=4, length=96, dtype=torch.float64, spread=0.05)
    mask[:] = True
    cfg = actor_config(GRPOLambdaLossConfig(lam=0.99, trace=style))
    bad = new.clone()
    bad[1, 70] = NON_FINITE[kind]
    same = new.clone()
    same[1, 70] = {"-inf": old[1, 70] - 20.0, "+inf": old[1, 70] + 20.0, "nan": old[1, 70]}[kind]
    results = []
    for log_prob in (bad, same):
        x = log_prob.clone().requires_grad_(True)
        loss, metrics = call_loss("grpo_lambda", cfg, old, x, adv, mask, "token-mean")
        loss.backward()
        results.append((loss, x.grad, metrics))
    (loss, grad, metrics), (loss_ref, grad_ref, metrics_ref) = results
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=0)
    keep = torch.ones_like(grad, dtype=torch.bool)
    keep[1, 70] = False  # no gradient reaches a clamped or NaN token; the clamped copy gets none either beyond ±20
    torch.testing.assert_close(grad[keep], grad_ref[keep], rtol=1e-12, atol=1e-15)
    assert grad[1, 70] == 0.0
    assert metrics["actor/grpo_lambda/token_guard_frac"] == pytest.approx(1 / mask.sum().item())
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("kind", list(NON_FINITE))
def test_non_finite_values_at_masked_tokens_have_no_effect(kind):
    old, new, adv, mask, _ = batch(33, n=4, length=50)
    mask[2, 20:] = False
    mask[2, 10] = False  # an interior masked token
    cfg = actor_config(GRPOLambdaLossConfig(lam=0.99, trace="both"))
    clean, _ = call_loss("grpo_lambda", cfg, old, new, adv, mask, "token-mean")
    dirty_new, dirty_old = new.clone(), old.clone()
    dirty_new[2, 10] = dirty_new[2, 30] = NON_FINITE[kind]
    dirty_old[2, 40] = NON_FINITE[kind]
    dirty, metrics = call_loss("grpo_lambda", cfg, dirty_old, dirty_new, adv, mask, "token-mean")
    assert torch.equal(clean, dirty)
    assert metrics["actor/grpo_lambda/token_guard_frac"] == 0.0


@pytest.mark.parametrize("lam", [0.5, 0.99])
@pytest.mark.parametrize("trace", list(TRACE_STYLES))
@pytest.mark.parametrize("update_style", ["ppo", "weight"])
def test_end_anchor_equals_the_authors_grpol_formula(lam, trace, update_style):
    """trace_anchor="end", trace_epsilon=1e-7 and the clamp reproduce the authors' grpol loss (their
    per-sequence option) where the ±20 guard and the dual clip, which their code lacks, do not fire."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    g = torch.Generator().manual_seed(41)
    n_rows, length = 8, 30
    lengths = torch.tensor([30, 25, 30, 12, 7, 30, 19, 1])
    mask = torch.arange(length)[None, :] < lengths[:, None]  # right-padded, as their per-sequence option assumes
    old = -torch.rand(n_rows, length, generator=g, dtype=torch.float64) * 2
    new = old + torch.randn(n_rows, length, generator=g, dtype=torch.float64) * 0.03
    rewards = torch.zeros(n_rows, length, dtype=torch.float64)
    rewards[torch.arange(n_rows), lengths - 1] = torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 0], dtype=torch.float64)
    uids = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    grpo = spec.grpo_lambda_advantage(rewards, mask, list(uids), None, True)  # verl grpo: no clamp
    assert grpo.min() < -0.1, "the clamp must matter"

    algorithm = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "grpo_lambda": {"adv_clamp": -0.1}})
    ours_adv, _ = get_adv_estimator_fn("grpo_lambda")(token_level_rewards=rewards, response_mask=mask, config=algorithm,
                                                       index=uids)  # fmt: skip
    settings = dict(lam=lam, trace=trace, trace_anchor="end", trace_epsilon=1e-7,
                    trace_application="ratio" if update_style == "ppo" else "weight")  # fmt: skip
    cfg = actor_config(GRPOLambdaLossConfig(**settings), clip_ratio_low=0.2, clip_ratio_high=0.2, clip_ratio_c=3.0)
    a = new.clone().requires_grad_(True)
    loss, metrics = call_loss("grpo_lambda", cfg, old, a, ours_adv.double(), mask, "token-mean")
    loss.backward()
    b = new.clone().requires_grad_(True)
    expected = spec.authors_grpol_loss(old, b, grpo, mask, lam, 1.0, trace, update_style, adv_clamp=-0.1)
    expected.backward()
    assert metrics["actor/grpo_lambda/guard_frac"] == 0 and metrics["actor/pg_clipfrac_lower"] == 0
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-12)
    # the inputs tell the trace apart: the same loss with λ = 0 is another number
    other = spec.authors_grpol_loss(old, new, grpo, mask, 0.0, 1.0, trace, update_style, adv_clamp=-0.1)
    assert abs(other.item() - expected.item()) > 1e-6


# trace_application="weight" computes e = T(1 + σ(log π − 1)) in one autograd Function whose backward
# pass is written by hand (objective._Eligibility): checked against gradcheck and plain autograd.

WEIGHT_SETTINGS = [
    dict(lam=0.9, gamma=1.0, trace=trace, trace_anchor=anchor, trace_epsilon=eps, trace_norm=norm,
         trace_application="weight")
    for trace, anchor, eps, norm in itertools.product(["recent", "both", "early"], ["token", "end"], [0.0, 0.1],
                                                      ["none", "sum"])
]  # fmt: skip


def _plain_eligibility(log_prob, mask, settings):
    """The eligibility as plain autograd ops over the reference trace."""
    from verl_lambda.core.trace import apply_trace_reference

    return apply_trace_reference(1.0 + torch.sigmoid(log_prob.nan_to_num(nan=0.0) - 1.0), mask, settings)


@pytest.mark.parametrize("settings", WEIGHT_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_weight_application_backward_passes_gradcheck(settings):
    from verl_lambda.core.objective import token_losses
    from verl_lambda.core.settings import LossSettings

    old, new, adv, mask, is_w = batch(13, n=3, length=12, spread=0.05)
    mask[1, 8:] = False
    mask[2, :2] = mask[2, 6] = False
    kw = LossSettings(**settings)
    x = new.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda lp: token_losses(old, lp, adv, mask, kw, rollout_is_weights=is_w)[0], (x,), atol=1e-8
    )


@pytest.mark.parametrize("settings", WEIGHT_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
@pytest.mark.parametrize("holes", [False, True])
def test_eligibility_equals_plain_autograd_with_non_finite_log_probs(settings, holes):
    """Values and gradients of e equal the plain autograd formula, NaN and ±inf log-probs included
    (at valid and masked tokens): no gradient reaches a NaN or infinite log-prob."""
    from verl_lambda.core import objective
    from verl_lambda.core.settings import LossSettings

    g = torch.Generator().manual_seed(17)
    log_prob = -torch.rand(4, 300, generator=g, dtype=torch.float64) * 3
    mask = spec.random_mask(g, 4, 300, interior_zeros=holes, leading=holes)
    mask[0] = True
    for row, col, value in [(0, 5, float("nan")), (0, 40, float("-inf")), (0, 41, float("inf")), (1, 2, float("nan"))]:
        log_prob[row, col] = value
    upstream = torch.randn(4, 300, generator=g, dtype=torch.float64)
    kw = LossSettings(**settings)
    results = []
    for fn in (lambda lp: objective._Eligibility.apply(lp, mask, kw, torch.float64), _plain_eligibility):
        lp = log_prob.clone().requires_grad_(True)
        e = fn(lp) if fn is not _plain_eligibility else fn(lp, mask, kw)
        (e * upstream).sum().backward()
        results.append((e.detach(), lp.grad))
    (e, grad), (e_ref, grad_ref) = results
    torch.testing.assert_close(e, e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=1e-10)
    assert grad[0, 5] == 0 and grad[0, 40] == 0 and grad[0, 41] == 0 and torch.all(grad[~mask] == 0)


def test_weight_application_backward_inside_autocast_equals_the_fp64_reference():
    settings = dict(lam=0.99, gamma=1.0, trace="both", trace_anchor="end", trace_epsilon=1e-7, trace_norm="none",
                    trace_application="weight")  # fmt: skip
    old, new, adv, mask, is_w = batch(23, n=6, length=300, dtype=torch.float64, spread=0.05)
    cfg = actor_config(GRPOLambdaLossConfig(**settings))
    b = new.clone().requires_grad_(True)
    expected = spec.aggregate(spec.token_losses(old, b, adv, mask, settings, 0.2, 0.2, 3.0), mask, "token-mean")
    expected.backward()
    a = new.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = call_loss("grpo_lambda", cfg, old.float(), a, adv.float(), mask, "token-mean")
        loss.backward()  # the hand-written backward passes run inside autocast too
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-9)
