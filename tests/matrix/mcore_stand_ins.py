"""What the two Megatron probes (``megatron_cp_probe.py``, ``megatron_legacy_actor_probe.py``) put in place of
what a CPU lacks, each as small as the path allows; everything else they run is verl's and megatron-core's.

* :func:`cpu_shim`: the CUDA calls on the paths under test, mapped to the CPU;
* :class:`StandIn`: a position-wise "GPT" (logits = W[token]) that is exact on any CP chunk, with the three
  methods Megatron's schedule and ``finalize_model_grads`` call on a DDP-wrapped model;
* :class:`LocalOnlyGather`: the negative control (the CP all-gather keeps only the local chunk);
* :class:`LossSpy`: records what verl hands the registered ``grpo_lambda`` loss.
"""

from __future__ import annotations

import types

import torch
import torch.distributed as dist

V = 16  # vocabulary (and "hidden size") of the stand-in


def cpu_shim() -> None:
    """The CUDA calls on these paths: Megatron's schedule allocates its token counter with device="cuda"
    (schedules.py, forward_backward_no_pipelining); verl moves each micro-batch to get_device_id(), which is
    torch.cuda.current_device() where verl finds no accelerator; and verl 0.9.1, finding none, names the
    "cuda" device for the dynamic-batch-size collectives (seqlen_balancing.get_device_name); verl 0.7.1's
    legacy actor empties the device cache (get_torch_device().empty_cache(), torch.cpu has none)."""
    from megatron.core.pipeline_parallel import schedules
    from verl.utils import seqlen_balancing

    class _TorchCPU(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def zeros(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return torch.zeros(*args, **kwargs)

    schedules.torch = _TorchCPU("torch_for_megatron_schedules_on_cpu")
    torch.cuda.current_device = lambda: "cpu"
    if hasattr(seqlen_balancing, "get_device_name"):
        seqlen_balancing.get_device_name = lambda: "cpu"
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None


def transformer_config(cp: int):
    """The TransformerConfig Megatron's schedule and finalize_model_grads read from the model, with the hook
    verl registers (``register_megatron_training_hooks``; the legacy actor sets the same in its __init__)."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.transformer.transformer_config import TransformerConfig

    config = TransformerConfig(
        num_layers=1, hidden_size=V, num_attention_heads=1, context_parallel_size=cp, use_cpu_initialization=True,
        params_dtype=torch.float64, pipeline_dtype=torch.float64,
    )  # fmt: skip
    config.finalize_model_grads_func = finalize_model_grads
    return config


class StandIn(torch.nn.Module):
    """Position-wise "GPT": logits = W[token], exact on any CP chunk; what verl's forward hands it is all
    that matters. ``finish_grad_sync`` is what Megatron's DDP does at the end of a step (the gradients
    averaged over the DP x CP group; summed with ``calculate_per_token_loss``, as finalize_model_grads then
    divides by the token count through ``scale_gradients``), ``zero_grad_buffer`` what DDP's zeroing does."""

    def __init__(self, w0, config):
        from megatron.core.enums import ModelType

        super().__init__()
        self.W = torch.nn.Parameter(w0.clone())
        self.pre_process = self.post_process = True
        self.model_type = ModelType.encoder_or_decoder
        self.config = config
        self.grad_syncs = 0

    def set_input_tensor(self, tensor):  # Megatron's schedule hands the pipeline input (None at PP 1)
        assert tensor is None or list(tensor) == [None], tensor

    def forward(self, input_ids, attention_mask=None, position_ids=None, packed_seq_params=None, **kwargs):
        return self.W[input_ids]

    def finish_grad_sync(self, force_all_reduce=False):
        from megatron.core import parallel_state as mpu

        group = mpu.get_data_parallel_group(with_context_parallel=True)
        for p in self.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=group)
                if not self.config.calculate_per_token_loss:  # DDP's gradient_scaling_factor: 1 per token
                    p.grad /= dist.get_world_size(group)
        self.grad_syncs += 1

    def scale_gradients(self, scaling):  # finalize_model_grads with calculate_per_token_loss: / total tokens
        for p in self.parameters():
            if p.grad is not None:
                p.grad *= scaling

    def zero_grad_buffer(self):
        self.zero_grad(set_to_none=True)


class LocalOnlyGather:
    """Negative control: ``torch.distributed.all_gather`` over the CP group keeps only this rank's chunk of a
    floating-point tensor (the model output; the remote chunks stay zero), as if the loss were computed per
    CP chunk. Other gathers (a BSHD attention mask, other groups) run as usual. ``count``: gathers disabled."""

    def __init__(self):
        self.count, self.real = 0, dist.all_gather

    def __enter__(self):
        from megatron.core import parallel_state as mpu

        def local_only(tensor_list, tensor, group=None, async_op=False):
            if group is mpu.get_context_parallel_group() and tensor.is_floating_point():
                self.count += 1
                for t in tensor_list:
                    t.zero_()
                tensor_list[mpu.get_context_parallel_rank()].copy_(tensor)
                return None
            return self.real(tensor_list, tensor, group=group, async_op=async_op)

        dist.all_gather = local_only
        return self

    def __exit__(self, *exc):
        dist.all_gather = self.real


class LossSpy:
    """Wraps the registered ``grpo_lambda`` loss: records the tensors verl hands it and what it returns."""

    KEYS = ("log_prob", "old_log_prob", "advantages", "response_mask")

    def __enter__(self):
        from verl.trainer.ppo import core_algos

        self.registry, self.calls = core_algos.POLICY_LOSS_REGISTRY, []
        self.real = self.registry["grpo_lambda"]

        def spy(**kw):
            loss, metrics = self.real(**kw)
            self.calls.append(
                {k: kw[k].detach().clone() for k in self.KEYS}
                | {
                    "keywords": sorted(kw),
                    "loss": loss.detach().clone(),
                    "global_batch_info": dict(kw["config"].get("global_batch_info", None) or {}),
                }
            )
            return loss, metrics

        self.registry["grpo_lambda"] = spy
        return self

    def __exit__(self, *exc):
        self.registry["grpo_lambda"] = self.real


def pad_rows(rows, width=None):
    """Right-pad 1-d rows with zeros to ``width`` (default: the longest) and stack them."""
    width = width or max(r.numel() for r in rows)
    return torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])


def run_probe(title: str, cases, run_case, describe) -> int:
    """The command line and case loop both probes share (``torchrun --nproc-per-node=2 <probe>``).

    ``cases``: tuples ``(name, layout, cp, ...)``; ``run_case(*case, no_gather)`` returns a dict with
    at least ``verdict``, ``problems`` and ``loss``; ``describe(out)`` the case-specific part of its
    line. A case passes only on every rank, and only when the ranks' losses agree. ``--no-cp-gather``
    runs the negative control alone (the CP=2 cases with the CP all-gather disabled), ``--with-control``
    every case and then the control.
    """
    import argparse
    import json
    import os
    import time
    import traceback
    from pathlib import Path

    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--out", help="write the results as JSON here (rank 0)")
    parser.add_argument("--no-cp-gather", action="store_true", help="only the negative control (CP=2 cases)")
    parser.add_argument("--with-control", action="store_true", help="every case, then the negative control")
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    args = parser.parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    assert world == 2, "run with torchrun --nproc-per-node=2 (CP 2; CP 1 runs as DP 2)"
    started = time.monotonic()
    dist.init_process_group("gloo", rank=rank, world_size=world)
    cpu_shim()
    from megatron.core import parallel_state as mpu

    import verl_lambda.verl.register  # noqa: F401  (what VERL_USE_EXTERNAL_MODULES does in a worker)

    chosen = [case for case in cases if not args.cases or case[0] in args.cases]
    runs = [] if args.no_cp_gather else [(*case, False) for case in chosen]
    if args.no_cp_gather or args.with_control:  # the control: the CP=2 cases with the CP all-gather disabled
        runs += [(*case, True) for case in chosen if case[2] == 2]
    runs.sort(key=lambda run: -run[2])  # CP 2 first, then CP 1 (one model-parallel initialisation each)
    results, current_cp = [], None
    for run in runs:
        name, cp, no_gather = run[0], run[2], run[-1]
        if cp != current_cp:
            if current_cp is not None:
                mpu.destroy_model_parallel()
            mpu.initialize_model_parallel(context_parallel_size=cp)
            current_cp = cp
        case_started = time.monotonic()
        try:
            out = run_case(*run)
        except Exception as err:  # noqa: BLE001  (reported as the case's failure)
            out = {"case": name, "no_cp_gather": no_gather, "verdict": "FAIL", "problems": [f"raised {err!r}"],
                   "error": traceback.format_exc()}  # fmt: skip
        out["seconds"] = round(time.monotonic() - case_started, 2)
        everyone = [None] * world
        dist.all_gather_object(everyone, out)
        out["per_rank"] = [{k: r.get(k) for k in ("verdict", "row_err", "loss", "grad_err")} for r in everyone]
        if any(r["verdict"] != "PASS" for r in everyone):  # a case passes only on every rank
            out["verdict"] = "FAIL"
            out["problems"] = sorted({p for r in everyone for p in r["problems"]})
        if any(r.get("loss") != everyone[0].get("loss") for r in everyone):
            out["verdict"] = "FAIL"
            out["problems"] = [*out["problems"], "the ranks' losses differ"]
        if rank == 0:
            print(
                f"[{name}{' NO CP GATHER' if no_gather else ''}] {out['verdict']}: {describe(out)}"
                + (f"; gathers disabled {out.get('gathers_disabled')}" if no_gather else "")
                + "".join(f"\n    {p}" for p in out["problems"])
                + (f"\n{out['error']}" if "error" in out else ""),
                flush=True,
            )
        results.append(out)
    mpu.destroy_model_parallel()
    dist.destroy_process_group()
    if rank == 0:
        for control in (False, True):
            done = [r for r in results if r["no_cp_gather"] == control]
            if done:
                verdict = "FAIL" if any(r["verdict"] != "PASS" for r in done) else "PASS"
                what = "with the CP all-gather disabled" if control else "verl as installed"
                print(f"{title}, {what}: {verdict} ({len(done)} cases)")
        print(f"{title}: {time.monotonic() - started:.1f} s")
        if args.out:
            Path(args.out).write_text(json.dumps({"results": results, "seconds": time.monotonic() - started}))
    return 0
