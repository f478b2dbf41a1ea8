"""The traced log-ratio: fast == reference == the spec's loop, values and gradients."""

import itertools

import pytest
import spec_reference as spec
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lambda.core.choices import TRACE_ANCHORS, TRACE_NORMS, TRACE_STYLES, WEIGHTINGS
from verl_lambda.core.settings import GRPOLambdaSettings, LossSettings
from verl_lambda.core.trace import apply_trace, apply_trace_reference, discounted_cumsum

LAMS = [0.0, 0.5, 0.9, 0.99, 1.0]
# (trace, trace_anchor): every weight style in both readings of the spec (§4 a, b)
STYLES = [(trace, anchor) for anchor in TRACE_ANCHORS for trace in TRACE_STYLES]
EPSILONS = [0.0, 0.05, 0.3]
NORMS = list(TRACE_NORMS)
GRID = list(itertools.product(LAMS, STYLES, EPSILONS, NORMS))


def _inputs(seed, batch, length, dtype=torch.float64, leading=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, generator=g, dtype=torch.float64).to(dtype)
    mask = spec.random_mask(g, batch, length, interior_zeros=True, leading=leading)
    mask[0, :] = True  # one full row in every batch
    return x, mask


def _kwargs(lam, style, eps, norm, gamma=1.0):
    trace, anchor = style if isinstance(style, tuple) else (style, "token")
    return LossSettings(lam=lam, gamma=gamma, trace=trace, trace_anchor=anchor, trace_epsilon=eps, trace_norm=norm)


@pytest.mark.parametrize("lam,style,eps,norm", GRID)
def test_reference_matches_spec_loop(lam, style, eps, norm):
    x, mask = _inputs(1, 3, 13, leading=True)
    ref = apply_trace_reference(x, mask, _kwargs(lam, style, eps, norm))
    loop = spec.traced_log_ratio(x, mask, lam, 1.0, style[0], eps, norm, style[1])
    torch.testing.assert_close(ref, loop, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lam,style,eps,norm", GRID)
def test_fast_matches_reference_values_and_gradients_fp64(lam, style, eps, norm):
    x, mask = _inputs(2, 5, 150, leading=True)
    g = torch.Generator().manual_seed(3)
    upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
    outs, grads = [], []
    for fn in (apply_trace, apply_trace_reference):
        xx = x.clone().requires_grad_(True)
        y = fn(xx, mask, _kwargs(lam, style, eps, norm, gamma=0.97))
        (y * upstream).sum().backward()
        outs.append(y.detach())
        grads.append(xx.grad)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)
    assert torch.all(grads[0][~mask] == 0), "masked tokens must receive no gradient"
    assert torch.all(outs[0][~mask] == 0), "masked positions must output 0"


@pytest.mark.parametrize(
    "style,eps,norm",
    [("recent", 0.0, "none"), ("both", 0.01, "sum"), (("recent", "end"), 1e-7, "sum"), (("both", "end"), 0.0, "none")],
)
def test_fast_matches_reference_beyond_three_chunk_levels(style, eps, norm):
    x, mask = _inputs(4, 2, 4200)  # 64² < 4200: carries go through three levels
    kw = _kwargs(0.99, style, eps, norm)
    torch.testing.assert_close(apply_trace(x, mask, kw), apply_trace_reference(x, mask, kw), rtol=0, atol=1e-10)


@pytest.mark.parametrize("style,eps,norm", list(itertools.product(STYLES, [0.0, 0.01], NORMS)))
@pytest.mark.parametrize("lam", [0.9, 0.99, 0.999])
def test_fast_fp32_within_1e5_relative_of_fp64(lam, style, eps, norm):
    """float32 inputs keep 1e-5 relative accuracy at 16k tokens (fp64 checked against the reference above)."""
    x, mask = _inputs(4, 2, 16384)
    x = x * 0.1
    ref = apply_trace(x, mask, _kwargs(lam, style, eps, norm))
    fast = apply_trace(x.float(), mask, _kwargs(lam, style, eps, norm))
    assert fast.dtype == torch.float32
    scale = ref.abs().max()
    assert ((fast.double() - ref).abs().max() / scale).item() < 1e-5


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 4),
    length=st.integers(1, 200),
    seed=st.integers(0, 2**31 - 1),
    lam=st.sampled_from(LAMS + [0.3, 0.999]),
    gamma=st.sampled_from([1.0, 0.95]),
    style=st.sampled_from(STYLES),
    eps=st.sampled_from(EPSILONS + [1.0]),
    norm=st.sampled_from(NORMS),
    leading=st.booleans(),
)
def test_fast_matches_reference_random_shapes(batch, length, seed, lam, gamma, style, eps, norm, leading):
    x, mask = _inputs(seed, batch, length, leading=leading)
    kw = _kwargs(lam, style, eps, norm, gamma)
    torch.testing.assert_close(apply_trace(x, mask, kw), apply_trace_reference(x, mask, kw), rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [1, 63, 64, 65, 4095, 4096, 4097, 9000])
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.99, 1.0])
def test_discounted_cumsum_across_chunk_levels(length, decay):
    g = torch.Generator().manual_seed(length)
    x = torch.randn(2, length, generator=g, dtype=torch.float64)
    expected = torch.empty_like(x)
    running = torch.zeros(2, dtype=torch.float64)
    for t in range(length):  # the recursion y_t = decay · y_{t−1} + x_t
        running = decay * running + x[:, t]
        expected[:, t] = running
    torch.testing.assert_close(discounted_cumsum(x, decay), expected, rtol=1e-12, atol=1e-12)


def test_masked_tokens_neither_contribute_nor_advance_the_trace():
    """Inserting masked tokens between valid ones leaves ℓ at the valid tokens unchanged."""
    g = torch.Generator().manual_seed(7)
    dense = torch.randn(1, 40, generator=g, dtype=torch.float64)
    holes = torch.zeros(1, 70, dtype=torch.bool)
    holes[0, torch.randperm(70, generator=g)[:40].sort().values] = True
    spread = torch.full((1, 70), 123.0, dtype=torch.float64)  # garbage where masked
    spread[holes] = dense.flatten()
    for style, eps, norm in itertools.product(STYLES, [0.0, 0.05], NORMS):
        kw = _kwargs(0.9, style, eps, norm)
        a = apply_trace(dense, torch.ones_like(dense, dtype=torch.bool), kw)
        b = apply_trace(spread, holes, kw)
        torch.testing.assert_close(b[holes], a.flatten(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("style,eps,norm", list(itertools.product(STYLES, [0.0, 0.05], NORMS)))
@pytest.mark.parametrize("lam", [0.5, 0.99])
def test_gradient_of_trace_sum_is_the_spec_credit_shape(lam, style, eps, norm):
    """d(Σ_t ℓ_t)/dx_k = Σ_{t ≥ k} w(t, k): earlier tokens collect credit from every later one."""
    n = 60
    x = torch.zeros(1, n, dtype=torch.float64, requires_grad=True)
    apply_trace(x, torch.ones(1, n, dtype=torch.bool), _kwargs(lam, style, eps, norm)).sum().backward()
    expected = torch.tensor(spec.credit(n, lam, style[0], eps, norm, style[1]), dtype=torch.float64)
    torch.testing.assert_close(x.grad[0], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("lam", [0.99, 0.999])
@pytest.mark.parametrize(
    "style,eps,norm",
    [("recent", 0.0, "none"), ("both", 0.0, "none"), ("both", 0.01, "sum"), (("recent", "end"), 1e-7, "none"),
     (("both", "end"), 1e-7, "sum"), (("early", "end"), 0.0, "none"), ("early", 0.0, "none")],
)  # fmt: skip
def test_finite_at_32k_tokens(dtype, lam, style, eps, norm):
    length = 32768
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, length, generator=g) * 3).to(dtype).requires_grad_(True)
    mask = torch.ones(2, length, dtype=torch.bool)
    mask[1, length // 2 :] = False
    y = apply_trace(x, mask, _kwargs(lam, style, eps, norm))
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad.float()).all()
    assert y.dtype == torch.float32
    # Bounded by Σ_j w(t, j)|x_j|: no r^(−j) blow-up anywhere.
    assert y.abs().max() <= (x.detach().float().abs() * mask).sum(-1).max() + 1


def test_empty_and_all_masked_rows():
    x = torch.randn(3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 2] = True
    out = apply_trace(x, mask, LossSettings(trace="both", trace_epsilon=0.1, trace_norm="sum"))
    assert out[0].eq(0).all() and out[2].eq(0).all()
    assert out[1, 2].item() == pytest.approx(x[1, 2].item())
    assert apply_trace(torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool)).shape == (2, 0)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(lam=1.5), "lam"),
        (dict(lam=-0.1), "lam"),
        (dict(gamma=2.0), "gamma"),
        (dict(trace="bogus"), "trace"),
        (dict(trace_epsilon=-0.1), "trace_epsilon"),
        (dict(trace_norm="mean"), "trace_norm"),
        (dict(lam=True), "lam"),
        (dict(lam=float("nan")), "lam"),
        (dict(adv_clamp=0.5), "adv_clamp"),
    ],
)
def test_bad_settings_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        GRPOLambdaSettings.from_values(kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must both be"):
        apply_trace(torch.zeros(2, 3), torch.ones(2, 4))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="no CUDA device here: CUDA autocast not exercised"
            ),
        ),
    ],
)
@pytest.mark.parametrize(
    "style,eps,norm",
    [("recent", 0.0, "none"), ("both", 0.0, "none"), ("both", 0.01, "sum"), (("recent", "end"), 1e-7, "none"),
     (("both", "end"), 0.0, "sum"), (("early", "end"), 0.01, "none")],
)  # fmt: skip
def test_bf16_autocast_keeps_fp32_accuracy(device, style, eps, norm):
    """verl's engine runs the loss under torch.autocast(bf16): the trace must stay exact to float32."""
    x, mask = _inputs(9, 4, 2048)
    x = x * 0.05
    kw = _kwargs(0.99, style, eps, norm)
    ref = apply_trace_reference(x, mask, kw)
    with torch.autocast(device, dtype=torch.bfloat16):
        fast = apply_trace(x.float().to(device), mask.to(device), kw)
    assert fast.dtype == torch.float32
    assert ((fast.double().cpu() - ref).abs().max() / ref.abs().max()).item() < 1e-5


# The fast trace's backward pass is the transposed trace computed by hand (trace._Trace): the
# tests below check it on every code path it has, against torch.autograd.gradcheck and against the
# reference's autograd gradients.

GRAD_STYLES = [(style, eps, norm) for style in STYLES for eps in (0.0, 0.2) for norm in NORMS]


def _reference_grads(x, mask, kw, upstream, fn):
    xx = x.clone().requires_grad_(True)
    y = fn(xx, mask, kw)
    (y * upstream).sum().backward()
    return y.detach(), xx.grad


@pytest.mark.parametrize("style,eps,norm", GRAD_STYLES)
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_trace_backward_passes_gradcheck(lam, style, eps, norm):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3, 11, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False  # right padding
    mask[2, :2] = mask[2, 5] = False  # leading and interior holes
    kw = _kwargs(lam, style, eps, norm, gamma=0.9)
    assert torch.autograd.gradcheck(lambda v: apply_trace(v, mask, kw), (x,))
    for right_padded in (mask[:2], torch.ones(2, 11, dtype=torch.bool)):  # the no-compaction path
        rows = x[:2].detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda v, m=right_padded: apply_trace(v, m, kw), (rows,))


@pytest.mark.parametrize("compact", [False, True], ids=["as-on-cpu", "always-compact"])
@pytest.mark.parametrize("style,eps,norm", GRAD_STYLES)
def test_trace_gradients_match_the_reference_on_every_mask_layout(monkeypatch, compact, style, eps, norm):
    """Right-padded rows (no compaction on the CPU), holes, leading zeros, empty rows, and the
    accelerator path that compacts every row, at lengths across chunk boundaries."""
    from verl_lambda.core import trace

    if compact:
        monkeypatch.setattr(trace, "_has_gaps", lambda valid: valid.shape[-1] >= 2)
    for seed, length, holes in [(1, 31, False), (2, 97, False), (3, 97, True), (4, 1100, True), (5, 1100, False)]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(4, length, generator=g, dtype=torch.float64)
        mask = spec.random_mask(g, 4, length, interior_zeros=holes, leading=holes)
        mask[0] = True
        upstream = torch.randn(x.shape, generator=g, dtype=torch.float64)
        kw = _kwargs(0.99, style, eps, norm, gamma=0.98)
        fast, fast_grad = _reference_grads(x, mask, kw, upstream, apply_trace)
        ref, ref_grad = _reference_grads(x, mask, kw, upstream, apply_trace_reference)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(fast_grad, ref_grad, rtol=0, atol=1e-10)
        assert torch.all(fast_grad[~mask] == 0), "masked tokens must receive no gradient"


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 150),
    seed=st.integers(0, 2**31 - 1),
    lam=st.sampled_from(LAMS + [0.3]),
    style=st.sampled_from(STYLES),
    eps=st.sampled_from(EPSILONS + [1.0]),
    norm=st.sampled_from(NORMS),
    leading=st.booleans(),
)
def test_trace_gradients_match_reference_random_shapes(batch, length, seed, lam, style, eps, norm, leading):
    x, mask = _inputs(seed, batch, length, leading=leading)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    kw = _kwargs(lam, style, eps, norm, 0.95)
    _, fast = _reference_grads(x, mask, kw, upstream, apply_trace)
    _, ref = _reference_grads(x, mask, kw, upstream, apply_trace_reference)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 1023, 1024, 1025, 3000])
@pytest.mark.parametrize("decay", [0.0, 0.5, 0.99, 1.0])
def test_reverse_discounted_cumsum_is_the_flipped_one(length, decay):
    x = torch.randn(2, length, generator=torch.Generator().manual_seed(length), dtype=torch.float64)
    expected = discounted_cumsum(x.flip(-1), decay).flip(-1)
    torch.testing.assert_close(discounted_cumsum(x, decay, reverse=True), expected, rtol=1e-12, atol=1e-12)


LENGTH_WINDOWS = [key for key, chosen in WEIGHTINGS.items() if chosen.length_window is not None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("style, anchor", LENGTH_WINDOWS)
@pytest.mark.parametrize("eps", [0.0, 1e-7, 0.3])
def test_length_window_columns_are_the_formula_bit_for_bit(dtype, style, anchor, eps):
    """Column weights read from one table of powers (Weighting.length_window) equal choices.WEIGHTINGS' formula."""
    from verl_lambda.core import trace

    lengths = torch.tensor([0, 1, 2, 7, 50, 64, 63])
    kw = _kwargs(0.97, (style, anchor), eps, "none")
    fast = trace._column_weights(WEIGHTINGS[style, anchor], lengths, 64, kw, dtype)
    j = torch.arange(64, dtype=torch.float64)[None, :]
    formula = WEIGHTINGS[style, anchor].weight(None, j, lengths.double()[:, None], trace._power(kw.decay, "cpu"))
    formula = formula.clamp(min=eps).to(dtype)
    valid = j < lengths[:, None]
    assert torch.equal(fast[valid], formula[valid])
    assert torch.isfinite(fast).all()


def test_backward_inside_autocast_stays_exact():
    """A backward pass run inside torch.autocast(bf16) must not run the transposed chunk products in bf16."""
    x, mask = _inputs(8, 3, 700)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = _kwargs(0.99, "both", 0.0, "none")
    _, ref = _reference_grads(x, mask, kw, upstream, apply_trace_reference)
    xx = x.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (apply_trace(xx, mask, kw) * upstream.float()).sum().backward()
    assert ((xx.grad.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5
