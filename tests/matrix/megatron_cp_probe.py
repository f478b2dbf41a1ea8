"""verl's Megatron engine at context parallelism 2 (and 1) on CPU/gloo, against a single-rank float64 reference.

Launched by ``tests/matrix/test_megatron_paths.py`` (which asserts on the JSON it writes)::

    torchrun --nproc-per-node=2 --master-port=PORT tests/matrix/megatron_cp_probe.py --out RESULT.json
    torchrun ... megatron_cp_probe.py --no-cp-gather        # negative control: every case must report FAIL

What runs is verl's own code from the engine's ``forward_backward_batch`` down:
``MegatronEngine.forward_backward_batch`` (batch-token count all-reduced over DP, ``prepare_micro_batches``,
Megatron's ``forward_backward_no_pipelining`` schedule with its loss scaling), ``MegatronEngineWithLMHead
.forward_step`` (``gptmodel_forward_model_engine``: ``preprocess_thd_engine`` / ``preprocess_bshd_engine``
zig-zag CP split and label roll, ``postprocess_*_engine`` CP all-gather and reassembly,
``_lm_head_logits_processor`` -> ``vocab_parallel_log_probs_from_logits``), ``postprocess_micro_batch_func``,
and the loss a run uses, ``partial(ppo_loss, config=actor_config)`` with the actor config composed from
verl's ``ppo_megatron_trainer`` + the plugin overrides, so ``ppo_loss`` calls the registered ``grpo_lambda``.

Stand-ins (``mcore_stand_ins.py``), each as small as the CPU allows: the engine object is built without
``__init__`` (no model build, no optimizer; the attributes forward_backward_batch reads, from a real
``McoreEngineConfig`` and TransformerConfig with verl's ``finalize_model_grads`` hook); the transformer is
position-wise (logits = W[token]), exact on any CP chunk, so only verl's layout handling is under test (CP
attention needs TransformerEngine, CUDA only), with DDP's gradient sync over DP x CP; the gradient is read
from W after Megatron's backward and finalize_model_grads, as an optimizer would get it; a CPU shim for
the CUDA calls on the path.

Cases (one process group for all): data format THD and BSHD x CP 2 and 1 (CP 1 = the two processes as
DP 2 with the same batch) x trace anchor "token" and "end", lam 0.9, trace "both", holes in the response
mask, 2 micro-batches; plus THD at CP 2 with dynamic batch size, and with Megatron's per-token loss (the
3-tuple path verl >= 0.9.0 takes when Megatron-Bridge turns calculate_per_token_loss on at CP > 1; the
micro-batches' token counts are even, as verl counts one CP share as tokens // cp_size). Each case checks
against a reference built
by hand (no verl, no CP, ``tests/spec_reference.py`` float64 loss): the rows the loss received (shape,
log-probs, mask, advantages, old log-probs, one call per micro-batch in order, the same on every CP rank),
the loss (<= 1e-6 abs or 1e-5 rel) and the gradient (sum over CP of the local-chunk gradients = what
Megatron's DDP applies, <= 1e-5 relative to its largest entry).

``--no-cp-gather`` replaces ``torch.distributed.all_gather`` over the CP group by one that keeps only the
local chunk of a floating-point tensor (remote chunks zero: the loss then sees its CP chunk and nothing
else, as if computed per chunk); it must make every CP=2 case FAIL.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from functools import partial
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # tests/ (spec_reference) and tests/matrix (matrix_support, mcore_stand_ins)
    sys.path.insert(0, str(_path))

from mcore_stand_ins import LocalOnlyGather, LossSpy, StandIn, V, pad_rows, run_probe, transformer_config  # noqa: E402

PROMPT_LENS = [5, 4, 9, 2]  # micro-batches of 26 and 34 tokens: a CP share is exact
RESPONSE_LENS = [11, 6, 14, 9]
HOLES = [(0, 4), (2, 4), (2, 9), (3, 1)]  # (row, response position) with response_mask 0 (tool output)
MICRO_BATCH = 2
SETTINGS = dict(lam=0.9, gamma=1.0, trace="both", trace_epsilon=0.0, trace_norm="none", trace_application="ratio")
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
LOSS_ATOL, LOSS_RTOL, GRAD_RTOL, ROW_ATOL = 1e-6, 1e-5, 1e-5, 1e-6  # verl's log-probs are float32


# ---------------------------------------------------------------------------------------------------------
# the batch and the reference


def make_batch():
    """Sequences, old log-probs (the stand-in's own plus noise: ratios near 1, some clipped), one advantage
    per sample (of both signs), response masks with holes, and the stand-in's weights."""
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(0, V, (p + r,), generator=g) for p, r in zip(PROMPT_LENS, RESPONSE_LENS)]
    w0 = torch.randn(V, V, generator=g, dtype=torch.float64) * 0.5
    old = []
    for s, p, r in zip(seqs, PROMPT_LENS, RESPONSE_LENS):
        own = torch.log_softmax(w0[s[:-1]], -1).gather(-1, s[1:, None])[:, 0][p - 1 : p - 1 + r]
        old.append(own + 0.05 * torch.randn(r, generator=g, dtype=torch.float64))
    adv = [torch.full((r,), a, dtype=torch.float64) for r, a in zip(RESPONSE_LENS, (0.8, -1.1, 1.3, -0.6))]
    masks = [torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]
    for row, pos in HOLES:
        masks[row][pos] = 0
    return seqs, old, adv, masks, w0


def reference(seqs, old, adv, masks, w0, anchor, micro_batches):
    """Whole rows by hand (no verl, no CP): log p(s[t+1] | s[t]) = log_softmax(W[s[t]])[s[t+1]] for the
    response positions, the spec's float64 loss per micro-batch with verl's global-batch token-mean, and the
    gradient of their sum (Megatron sums micro-batch gradients; verl normalises by the global token count)."""
    import spec_reference as spec

    w = w0.clone().requires_grad_(True)
    settings = dict(SETTINGS, trace_anchor=anchor)
    batch_tokens = sum(int(m.sum()) for m in masks)
    rows, losses = {}, []
    for i, (s, p, r) in enumerate(zip(seqs, PROMPT_LENS, RESPONSE_LENS)):
        lp = torch.log_softmax(w[s[:-1]], -1).gather(-1, s[1:, None])[:, 0]
        rows[i] = lp[p - 1 : p - 1 + r]
    for mb in micro_batches:
        new = pad_rows([rows[i] for i in mb])
        width = new.shape[1]
        mask = pad_rows([masks[i] for i in mb], width).bool()
        token = spec.token_losses(
            pad_rows([old[i] for i in mb], width), new, pad_rows([adv[i] for i in mb], width), mask, settings,
            CLIP_LOW, CLIP_HIGH, CLIP_C,
        )  # fmt: skip
        losses.append(spec.aggregate(token, mask, "token-mean", batch_num_tokens=batch_tokens))
    sum(losses).backward()
    return {i: row.detach() for i, row in rows.items()}, [x.detach() for x in losses], w.grad.detach()


# ---------------------------------------------------------------------------------------------------------
# verl's engine, stand-in model


def build_engine(w0, data_format: str, cp: int, dynamic: bool, per_token: bool):
    from verl.workers.config.engine import McoreEngineConfig
    from verl.workers.engine.megatron.transformer_impl import MegatronEngineWithLMHead

    tf_config = transformer_config(cp)
    tf_config.calculate_per_token_loss = per_token  # what Megatron-Bridge turns on at CP > 1
    wanted = dict(
        context_parallel_size=cp, use_remove_padding=data_format == "thd", use_dynamic_bsz=dynamic,
        micro_batch_size_per_gpu=MICRO_BATCH, max_token_len_per_gpu=24, pad_bshd_to_minibatch_max=False,
    )  # fmt: skip
    known = {f.name for f in dataclasses.fields(McoreEngineConfig)}  # pad_bshd_to_minibatch_max: from 0.9.0
    engine_config = McoreEngineConfig(**{k: v for k, v in wanted.items() if k in known})
    engine = object.__new__(MegatronEngineWithLMHead)  # no __init__: it would build a model and an optimizer
    engine.engine_config = engine_config
    engine.tf_config = tf_config
    engine.model_config = types.SimpleNamespace(
        hf_config=types.SimpleNamespace(architectures=["LlamaForCausalLM"]),
        tokenizer=types.SimpleNamespace(pad_token_id=0),
        mtp=types.SimpleNamespace(enable=False, enable_train=False),
    )
    engine.enable_routing_replay = False
    engine.module = [StandIn(w0, tf_config)]
    return engine


def actor_config(anchor: str):
    """The actor config a Megatron run builds (verl's ppo_megatron_trainer + the plugin overrides)."""
    from matrix_support import PLUGIN_OVERRIDES, compose
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose(
        [
            *PLUGIN_OVERRIDES,
            *[f"actor_rollout_ref.actor.policy_loss.{k}={v}" for k, v in dict(SETTINGS, trace_anchor=anchor).items()],
            f"actor_rollout_ref.actor.clip_ratio_high={CLIP_HIGH}",
            "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        ],
        "ppo_megatron_trainer",
    )
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def make_data(seqs, old, adv, masks, dynamic: bool):
    """The TensorDict the v1 trainer hands the engine: every per-sample field nested."""
    from verl.utils import tensordict_utils as tu

    def nest(xs):
        return torch.nested.as_nested_tensor(list(xs), layout=torch.jagged)

    response_mask = nest(masks)
    return tu.get_tensordict(
        {
            "input_ids": nest(seqs),
            "prompts": nest(s[:p] for s, p in zip(seqs, PROMPT_LENS)),
            "responses": nest(s[p:] for s, p in zip(seqs, PROMPT_LENS)),
            "response_mask": response_mask,
            "loss_mask": nest(masks),
            "old_log_probs": nest(old),
            "advantages": nest(adv),
            "temperature": torch.ones(len(seqs)),
        },
        non_tensor_dict={
            "use_dynamic_bsz": dynamic, "micro_batch_size_per_gpu": MICRO_BATCH, "max_token_len_per_gpu": 24,
            "global_batch_size": len(seqs),
        },
    )  # fmt: skip


def micro_batch_rows(call, advantages):
    """Which samples a loss call got, found by their advantage rows (each sample's is a distinct constant)."""
    firsts = [float(a[0]) for a in advantages]
    return [firsts.index(float(row[0])) for row in call["advantages"]]


def run_case(name, data_format, cp, anchor, dynamic, per_token, no_gather):
    from megatron.core import parallel_state as mpu
    from verl.workers.utils.losses import ppo_loss

    seqs, old, adv, masks, w0 = make_batch()
    engine = build_engine(w0, data_format, cp, dynamic, per_token)
    loss_fn = partial(ppo_loss, config=actor_config(anchor))  # what engine_workers sets (set_loss_fn)
    data = make_data(seqs, old, adv, masks, dynamic)
    gather = LocalOnlyGather() if no_gather else None
    with LossSpy() as spy:
        if gather is not None:
            with gather:
                engine.forward_backward_batch(data, loss_fn, forward_only=False)
        else:
            engine.forward_backward_batch(data, loss_fn, forward_only=False)
    model = engine.module[0]
    w = model.W
    # Megatron's schedule scales each 2-tuple loss by cp_size / n_micro_batches and, through verl's hook
    # finalize_model_grads, has the model's DDP average the gradients over DP x CP: the gradient an
    # optimizer would apply, equal to the sum over CP ranks of the local-chunk gradients.
    grad = w.grad.detach().clone()
    micro_batches = [micro_batch_rows(call, adv) for call in spy.calls]
    ref_rows, ref_losses, ref_grad = reference(seqs, old, adv, masks, w0, anchor, micro_batches)

    out = {"case": name, "cp": cp, "format": data_format, "anchor": anchor, "dynamic_bsz": dynamic,
           "per_token_loss": per_token, "no_cp_gather": no_gather, "calls": len(spy.calls),
           "micro_batches": micro_batches}  # fmt: skip
    problems = []
    every = sorted(i for mb in micro_batches for i in mb)
    if every != list(range(len(seqs))):
        problems.append(f"the loss calls got samples {micro_batches}, not each sample once")
    if not dynamic and micro_batches != [list(range(k, k + MICRO_BATCH)) for k in range(0, len(seqs), MICRO_BATCH)]:
        problems.append(f"micro-batches {micro_batches} are not the batch's rows in order")
    row_err, loss_abs, loss_rel, shapes = 0.0, 0.0, 0.0, []
    for call, mb, ref_loss in zip(spy.calls, micro_batches, ref_losses):
        width = max(RESPONSE_LENS[i] for i in mb)
        shapes.append(list(call["log_prob"].shape))
        if list(call["log_prob"].shape) != [len(mb), width]:
            problems.append(f"log_prob {tuple(call['log_prob'].shape)}: not whole rows [{len(mb)}, {width}]")
            continue
        want = pad_rows([ref_rows[i] for i in mb], width)
        row_err = max(row_err, float((call["log_prob"].double() - want).abs().max()))
        if not torch.equal(call["response_mask"].long(), pad_rows([masks[i] for i in mb], width)):
            problems.append(f"response_mask of micro-batch {mb} is not the batch's (holes included)")
        for key, src in (("old_log_prob", old), ("advantages", adv)):
            if not torch.equal(call[key].double(), pad_rows([src[i] for i in mb], width)):
                problems.append(f"{key} of micro-batch {mb} is not the batch's")
        err = abs(float(call["loss"]) - float(ref_loss))
        loss_abs, loss_rel = max(loss_abs, err), max(loss_rel, err / max(abs(float(ref_loss)), 1e-30))
        dp = mpu.get_data_parallel_world_size()  # CP 1 runs as DP 2 on the same batch: tokens all-reduced over DP
        if call["global_batch_info"].get("batch_num_tokens") != dp * sum(int(m.sum()) for m in masks):
            problems.append(f"global_batch_info {call['global_batch_info']}")
    grad_err = float((grad - ref_grad).abs().max())
    grad_scale = float(ref_grad.abs().max())
    out.update(
        loss_shapes=shapes, row_err=row_err, loss_abs_err=loss_abs, loss_rel_err=loss_rel, grad_err=grad_err,
        grad_scale=grad_scale, loss=[float(c["loss"]) for c in spy.calls], ref_loss=[float(x) for x in ref_losses],
        grad_syncs=model.grad_syncs, gathers_disabled=gather.count if gather else None,
    )  # fmt: skip
    if row_err > ROW_ATOL:
        problems.append(f"rows seen by the loss differ from the reference rows by {row_err:.3g}")
    if loss_abs > LOSS_ATOL and loss_rel > LOSS_RTOL:
        problems.append(f"loss differs from the reference by {loss_abs:.3g} (rel {loss_rel:.3g})")
    if grad_err > GRAD_RTOL * grad_scale:
        problems.append(f"sum_CP gradient differs from the reference by {grad_err:.3g} (scale {grad_scale:.3g})")
    if model.grad_syncs != 1:
        problems.append(f"finalize_model_grads synchronised the gradients {model.grad_syncs} times, not once")
    if no_gather and not gather.count:
        problems.append("the negative control disabled no CP all-gather")
    out["problems"] = problems
    out["verdict"] = "FAIL" if problems else "PASS"
    return out


CASES = [  # name -> format, CP, anchor, dynamic batch size, Megatron's calculate_per_token_loss
    *[(f"{f}-cp2-{a}", f, 2, a, False, False) for f in ("thd", "bshd") for a in ("token", "end")],
    ("thd-cp2-token-dynbsz", "thd", 2, "token", True, False),
    ("thd-cp2-end-per-token-loss", "thd", 2, "end", False, True),  # verl >= 0.9.0 (megatron_per_token_loss)
    *[(f"{f}-cp1-{a}", f, 1, a, False, False) for f in ("thd", "bshd") for a in ("token", "end")],
]


def cases_of_this_verl():
    from matrix_support import has

    return [case for case in CASES if has("megatron_per_token_loss") or not case[5]]


NAN = float("nan")


def main() -> int:
    return run_probe(
        "verl megatron CP probe",
        cases_of_this_verl(),
        run_case,
        lambda out: (
            f"loss calls {out.get('calls')} shapes {out.get('loss_shapes')} rows {out.get('micro_batches')}; "
            f"max|row-ref| {out.get('row_err', NAN):.2e}; loss {out.get('loss')} vs ref {out.get('ref_loss')} "
            f"(abs {out.get('loss_abs_err', NAN):.2e}); max|grad-ref| {out.get('grad_err', NAN):.2e} of "
            f"{out.get('grad_scale', NAN):.3f}"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
