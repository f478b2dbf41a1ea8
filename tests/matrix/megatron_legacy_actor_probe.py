"""verl 0.7.x's legacy Megatron actor (``MegatronPPOActor``) on CPU/gloo, against a float64 reference by hand.

Launched by ``tests/matrix/test_megatron_paths.py`` in the verl 0.7.1 venv (which asserts on the JSON)::

    torchrun --nproc-per-node=2 --master-port=PORT tests/matrix/megatron_legacy_actor_probe.py --out RESULT.json
    torchrun ... megatron_legacy_actor_probe.py --no-cp-gather      # negative control: every case must FAIL

What runs is verl 0.7.1's default Megatron path from the worker's ``update_actor`` down:
``MegatronPPOActor.__init__`` (with the actor config the worker builds: verl's ``ppo_megatron_trainer`` +
the plugin overrides through ``omega_conf_to_dataclass``), ``make_minibatch_iterator``, ``update_policy``
(zero_grad, ``forward_backward_batch``, optimizer step, per mini-batch and epoch), ``forward_backward_batch``
(micro-batch split or ``rearrange_micro_batches``, Megatron's ``forward_backward_no_pipelining`` schedule
with its loss scaling and ``finalize_model_grads``), its ``forward_step`` (``get_mcore_forward_fn`` ->
``model_forward``: ``preprocess_packed_seqs`` CP split / ``postprocess_packed_seqs`` CP all-gather for THD,
``preprocess_bshd`` for BSHD, the ``logits_processor`` -> ``vocab_parallel_log_probs_from_logits``) and its
``loss_func`` closure, which slices ``log_probs[:, -response_length-1:-1]`` and calls the registered
``grpo_lambda`` loss with 7 keywords.

Stand-ins: the model (position-wise, logits = W[token], exact on any CP chunk; DDP's grad sync as an
average over DP x CP), the optimizer (plain SGD with ``step() -> (ok, grad_norm, None)`` in place of
Megatron's DistributedOptimizer, which needs CUDA buffers) and the CPU shim of ``mcore_stand_ins``.

Cases: THD at CP 2 and CP 1, BSHD at CP 1 (verl 0.7.1's BSHD refuses CP), dynamic batch size (CP 2 and 1),
2 mini-batches x 2 epochs (4 optimizer steps); CP 1 runs the two processes as DP 2 with the same batch. Every
case checks, step by step: each loss call got whole right-padded ``[micro_batch, response_length]`` rows
(log-probs, mask with holes, advantages, old log-probs) of the mini-batch, in order (fixed micro-batches),
each sample once per epoch; its loss equals the spec's float64 loss (micro-batch token-mean, as
``global_batch_info`` is empty in 0.7.1; <= 1e-6 abs or 1e-5 rel); the gradient the optimizer got equals the
reference (sum over micro-batches of their gradients / their number, <= 1e-5 of its largest entry); and the
parameters after ``update_policy`` equal the reference's SGD steps.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
for _path in (HERE.parent, HERE):  # tests/ (spec_reference) and tests/matrix (matrix_support, mcore_stand_ins)
    sys.path.insert(0, str(_path))

from mcore_stand_ins import LocalOnlyGather, LossSpy, StandIn, V, pad_rows, run_probe, transformer_config  # noqa: E402

PROMPT_LENS = [3, 2, 5, 1, 4, 2, 3, 5]
RESPONSE_LENS = [4, 2, 7, 5, 6, 3, 7, 1]
HOLES = [(0, 1), (2, 3), (2, 5), (4, 2), (6, 0), (6, 4)]  # (row, response position) with response_mask 0
ADVANTAGES = [0.8, -1.1, 1.3, -0.6, 0.4, -0.9, 1.7, -0.3]  # one per sample (of both signs), distinct
SETTINGS = dict(lam=0.9, gamma=1.0, trace="both", trace_epsilon=0.0, trace_norm="none", trace_application="ratio")
CLIP_LOW, CLIP_HIGH, CLIP_C = 0.2, 0.28, 3.0
LR = 0.5
LOSS_ATOL, LOSS_RTOL, GRAD_RTOL, ROW_ATOL = 1e-6, 1e-5, 1e-5, 1e-6  # verl's log-probs are float32
KEYWORDS = sorted(
    ["old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config", "rollout_is_weights"]
)


def make_batch(w0):
    """A left-right padded batch as verl 0.7.1's trainer holds it (prompts left-padded to P, responses
    right-padded to R), old log-probs = the stand-in's own + noise, response masks with holes."""
    g = torch.Generator().manual_seed(11)
    n, big_p, big_r = len(PROMPT_LENS), max(PROMPT_LENS), max(RESPONSE_LENS)
    input_ids = torch.zeros(n, big_p + big_r, dtype=torch.long)
    attention_mask = torch.zeros(n, big_p + big_r, dtype=torch.long)
    response_mask = torch.zeros(n, big_r, dtype=torch.long)
    seqs = []
    for i, (p, r) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        seq = torch.randint(0, V, (p + r,), generator=g)
        seqs.append(seq)
        input_ids[i, big_p - p : big_p + r] = seq
        attention_mask[i, big_p - p : big_p + r] = 1
        response_mask[i, :r] = 1
    for row, pos in HOLES:
        response_mask[row, pos] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    own = reference_rows(w0, seqs)
    old = torch.stack([own[i] + 0.05 * torch.randn(big_r, generator=g, dtype=torch.float64) for i in range(n)])
    adv = torch.tensor(ADVANTAGES, dtype=torch.float64)[:, None].expand(n, big_r)
    batch = dict(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        responses=input_ids[:, big_p:].clone(), response_mask=response_mask,
        old_log_probs=(old * response_mask).float(), advantages=(adv * response_mask).float(),
    )  # fmt: skip
    return batch, seqs


def reference_rows(w, seqs):
    """log p(response token | previous token) = log_softmax(W[s[t]])[s[t+1]], right-padded to R (by hand)."""
    rows = []
    for s, p, r in zip(seqs, PROMPT_LENS, RESPONSE_LENS):
        lp = torch.log_softmax(w[s[:-1]], -1).gather(-1, s[1:, None])[:, 0]
        rows.append(lp[p - 1 : p - 1 + r])
    return pad_rows(rows, max(RESPONSE_LENS))


def spec_micro_batch_loss(w, seqs, batch, rows, anchor="token"):
    import spec_reference as spec

    new = reference_rows(w, seqs)[rows]
    mask = batch["response_mask"][rows].bool()
    settings = dict(SETTINGS, trace_anchor=anchor)
    old, adv = batch["old_log_probs"][rows].double(), batch["advantages"][rows].double()
    token = spec.token_losses(old, new, adv, mask, settings, CLIP_LOW, CLIP_HIGH, CLIP_C)
    return spec.aggregate(token, mask, "token-mean")  # global_batch_info is empty: micro-batch token-mean


class SGDStandIn:
    """In place of Megatron's DistributedOptimizer: plain SGD; records the gradient of every step."""

    def __init__(self, model, spy):
        self.model, self.spy, self.steps = model, spy, []

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self):
        w = self.model.W
        grad = w.grad.detach().clone()
        self.steps.append({"grad": grad, "calls": len(self.spy.calls)})
        w -= LR * grad
        return True, float(grad.norm()), None


def actor_config(cp: int, mini: int, micro: int, epochs: int, dynamic: bool, data_format: str, anchor: str):
    """The actor config verl 0.7.1's Megatron worker builds (ppo_megatron_trainer + the plugin overrides;
    rollout.n 1, so ppo_mini_batch_size is per rank already)."""
    from matrix_support import PLUGIN_OVERRIDES, compose
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose(
        [
            *PLUGIN_OVERRIDES,
            *[f"actor_rollout_ref.actor.policy_loss.{k}={v}" for k, v in dict(SETTINGS, trace_anchor=anchor).items()],
            f"actor_rollout_ref.actor.clip_ratio_high={CLIP_HIGH}",
            "actor_rollout_ref.actor.loss_agg_mode=token-mean",
            "actor_rollout_ref.rollout.n=1",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
            f"actor_rollout_ref.actor.ppo_epochs={epochs}",
            f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic}",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24",
            "actor_rollout_ref.actor.use_kl_loss=False",
            "actor_rollout_ref.actor.entropy_coeff=0",
            f"actor_rollout_ref.actor.megatron.context_parallel_size={cp}",
            f"actor_rollout_ref.actor.megatron.use_remove_padding={data_format == 'thd'}",
        ],
        "ppo_megatron_trainer",
    )
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def run_case(name, data_format, cp, mini, micro, epochs, dynamic, anchor, no_gather):
    from verl import DataProto
    from verl.workers.actor.megatron_actor import MegatronPPOActor

    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(V, V, generator=g, dtype=torch.float64) * 0.5
    batch, seqs = make_batch(w0)
    n = len(seqs)
    config = actor_config(cp, mini, micro, epochs, dynamic, data_format, anchor)
    tf_config = transformer_config(cp)
    model = StandIn(w0, tf_config)
    spy = LossSpy()
    optimizer = SGDStandIn(model, spy)
    actor = MegatronPPOActor(
        config=config,
        model_config=types.SimpleNamespace(vocab_size=V, hidden_size=V),
        hf_config=types.SimpleNamespace(architectures=["LlamaForCausalLM"]),
        tf_config=tf_config,
        actor_module=[model],  # what the worker passes: a list of model chunks (one per VPP stage)
        actor_optimizer=optimizer,
    )
    data = DataProto.from_dict(tensors={k: v.clone() for k, v in batch.items()}, meta_info={"temperature": 1.0})
    data.meta_info["micro_batch_size"] = config.ppo_micro_batch_size_per_gpu  # what update_actor sets
    gather = LocalOnlyGather() if no_gather else None
    with spy:
        if gather is not None:
            with gather:
                metrics = actor.update_policy(dataloader=actor.make_minibatch_iterator(data=data))
        else:
            metrics = actor.update_policy(dataloader=actor.make_minibatch_iterator(data=data))

    firsts = [float(a) for a in batch["advantages"][:, 0]]
    problems, step_rows = [], []
    row_err = loss_abs = loss_rel = grad_err = grad_scale = 0.0
    shapes = set()
    w_ref, start = w0.clone(), 0
    mini_batches = [list(range(k, k + mini)) for _ in range(epochs) for k in range(0, n, mini)]
    if len(optimizer.steps) != len(mini_batches):
        problems.append(f"{len(optimizer.steps)} optimizer steps, not {len(mini_batches)} (mini-batches x epochs)")
    for step, want_rows in zip(optimizer.steps, mini_batches):
        calls, start = spy.calls[start : step["calls"]], step["calls"]
        w = w_ref.clone().requires_grad_(True)
        got_rows, total = [], 0.0
        for call in calls:
            rows = [firsts.index(float(a)) for a in call["advantages"][:, 0]]
            got_rows.append(rows)
            shapes.add(tuple(call["log_prob"].shape))
            if call["keywords"] != KEYWORDS:
                problems.append(f"the loss was called with {call['keywords']}, not verl 0.7.1's 7 keywords")
            if call["global_batch_info"]:
                problems.append(f"global_batch_info {call['global_batch_info']} (0.7.1's legacy actor: empty)")
            if tuple(call["log_prob"].shape) != (len(rows), max(RESPONSE_LENS)):
                problems.append(f"log_prob {tuple(call['log_prob'].shape)}: not [micro_batch, response_length] rows")
                continue
            want = reference_rows(w_ref, seqs)[rows]
            # every response position (holes included); past a response's end verl 0.7.1 leaves the log-prob
            # of the following pad token there (its label mask is the attention mask), which response_mask
            # masks: the loss must ignore it, so the loss check below covers it
            inside = torch.arange(want.shape[1])[None] < torch.tensor([RESPONSE_LENS[i] for i in rows])[:, None]
            row_err = max(row_err, float(((call["log_prob"].double() - want) * inside).abs().max()))
            if bool((call["response_mask"].bool() & ~inside).any()):
                problems.append(f"response_mask of rows {rows} is set past a response's end")
            for key, column in (("response_mask", "response_mask"), ("old_log_prob", "old_log_probs")):
                if not torch.equal(call[key].to(batch[column].dtype), batch[column][rows]):
                    problems.append(f"{key} of rows {rows} is not the batch's (holes included)")
            if not torch.equal(call["advantages"], batch["advantages"][rows]):
                problems.append(f"advantages of rows {rows} are not the batch's")
            ref_loss = spec_micro_batch_loss(w, seqs, batch, rows, anchor)
            err = abs(float(call["loss"]) - ref_loss.item())
            loss_abs, loss_rel = max(loss_abs, err), max(loss_rel, err / max(abs(ref_loss.item()), 1e-30))
            total = total + ref_loss / len(calls)  # Megatron: loss x cp / n_micro; DDP: mean over DP x CP
        step_rows.append(got_rows)
        flat = sorted(i for rows in got_rows for i in rows)
        if flat != want_rows:
            problems.append(f"the step's loss calls got samples {got_rows}, not the mini-batch {want_rows} once each")
        if not dynamic and got_rows != [want_rows[k : k + micro] for k in range(0, len(want_rows), micro)]:
            problems.append(f"micro-batches {got_rows} are not the mini-batch's rows {want_rows} in order")
        if isinstance(total, float):
            continue
        total.backward()
        grad_err = max(grad_err, float((step["grad"] - w.grad).abs().max()))
        grad_scale = max(grad_scale, float(w.grad.abs().max()))
        with torch.no_grad():
            w_ref = w_ref - LR * w.grad
    param_err = float((model.W.detach() - w_ref).abs().max())
    if row_err > ROW_ATOL:
        problems.append(f"rows seen by the loss differ from the reference rows by {row_err:.3g}")
    if loss_abs > LOSS_ATOL and loss_rel > LOSS_RTOL:
        problems.append(f"loss differs from the reference by {loss_abs:.3g} (rel {loss_rel:.3g})")
    if grad_err > GRAD_RTOL * grad_scale:
        problems.append(f"gradient differs from the reference by {grad_err:.3g} (scale {grad_scale:.3g})")
    if param_err > GRAD_RTOL * LR * grad_scale * len(mini_batches):
        problems.append(f"parameters after update_policy differ from the reference SGD steps by {param_err:.3g}")
    if model.grad_syncs != len(optimizer.steps):
        problems.append(f"finalize_model_grads synchronised {model.grad_syncs} times in {len(optimizer.steps)} steps")
    if no_gather and not gather.count:
        problems.append("the negative control disabled no CP all-gather")
    if "actor/pg_loss" not in metrics:
        problems.append(f"update_policy returned no actor/pg_loss: {sorted(metrics)}")
    return {
        "case": name, "cp": cp, "format": data_format, "dynamic_bsz": dynamic, "no_cp_gather": no_gather,
        "calls": len(spy.calls), "steps": len(optimizer.steps), "step_rows": step_rows,
        "loss_shapes": sorted(shapes), "row_err": row_err, "loss_abs_err": loss_abs, "loss_rel_err": loss_rel,
        "grad_err": grad_err, "grad_scale": grad_scale, "param_err": param_err,
        "loss": [float(c["loss"]) for c in spy.calls], "grad_syncs": model.grad_syncs,
        "gathers_disabled": gather.count if gather else None, "problems": problems,
        "verdict": "FAIL" if problems else "PASS",
    }  # fmt: skip


CASES = [  # name -> format, CP, mini-batch, micro-batch, epochs, dynamic batch size, trace anchor
    ("thd-cp2", "thd", 2, 8, 2, 1, False, "token"),
    ("thd-cp2-end-dynbsz", "thd", 2, 8, 2, 1, True, "end"),
    ("thd-cp1", "thd", 1, 8, 2, 1, False, "token"),
    ("bshd-cp1-end", "bshd", 1, 8, 2, 1, False, "end"),
    ("thd-cp1-dynbsz", "thd", 1, 8, 2, 1, True, "token"),
    ("thd-cp1-2mini-2epochs", "thd", 1, 4, 2, 2, False, "token"),
]


NAN = float("nan")


def main() -> int:
    return run_probe(
        "verl legacy Megatron actor probe",
        CASES,
        run_case,
        lambda out: (
            f"{out.get('steps')} steps, {out.get('calls')} loss calls, shapes {out.get('loss_shapes')}, rows per "
            f"step {out.get('step_rows')}; max|row-ref| {out.get('row_err', NAN):.2e}; max|loss-ref| "
            f"{out.get('loss_abs_err', NAN):.2e}; max|grad-ref| {out.get('grad_err', NAN):.2e} of "
            f"{out.get('grad_scale', NAN):.3f}; max|W-W_ref| {out.get('param_err', NAN):.2e}"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
