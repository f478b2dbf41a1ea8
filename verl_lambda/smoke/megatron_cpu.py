"""megatron-core 0.16.1 + mbridge 0.15.1 under verl 0.9.1's Megatron engine on a CPU-only torch.

:func:`apply` runs in every process of a Megatron harness run (from :mod:`verl_lambda.smoke.worker`),
after the CPU platform is installed; importing this module changes nothing. Every patch below is
applied only when torch has no CUDA, checks that the thing it replaces exists with the expected
shape first (:class:`PatchError` otherwise: a newer megatron-core / mbridge must be looked at
again, not silently half-patched), and is applied at most once per process. Written against
megatron-core 0.16.1 and mbridge 0.15.1 (the ``megatron`` extra pins both); docs/megatron.md lists
what each replaces.

What it does, and why (each item is one blocker met on the way to a CPU run):

* ``torch.cuda`` calls megatron-core makes unconditionally (``current_device`` for buffers,
  the CUDA RNG state for the model-parallel RNG tracker, ``synchronize`` in the p2p layer):
  CPU meanings (:func:`_cuda_stand_ins`).
* ``device="cuda"`` literals in megatron-core modules (pipeline schedules, optimizer, grad
  clipping, grad buffers, the local multi-tensor l2-norm): those modules see a ``torch`` whose
  factory functions map a CUDA device to the CPU (:func:`_cpu_factories_in`).
* megatron-core's optimizers (distributed and plain) sort parameters by ``param.type()`` and accept
  only ``torch.cuda.*Tensor`` names; grad clipping asserts ``torch.cuda.FloatTensor``: during
  those calls only, ``Tensor.type()`` names CPU float tensors as their CUDA twins
  (:func:`_optimizers_see_cuda_type_names`).
* ``Module.cuda(torch.cuda.current_device())`` in mbridge's ``get_model`` and ``weight.data.cuda()``
  in megatron-core's tied-embedding set-up: the identity on a CPU-only torch
  (:func:`_module_cuda_identity`).
* mbridge builds layers with ``use_transformer_engine=True`` and names weights in the
  TransformerEngine layout (layer norms fused into the linear layers): without TransformerEngine
  it gets megatron-core's local spec, and the local spec's separate layer norms are aliased to
  the TE names for weight loading and export (:func:`_mbridge_local_spec`).
* megatron-core's ``WrappedTorchNorm`` (the local spec's RMSNorm) refuses sequence parallelism
  (mbridge turns it on at TP > 1, as verl's recipes do): its weights are marked
  ``sequence_parallel`` as TE's and apex's norms mark theirs (:func:`_torch_norm_sequence_parallel`).
* the local spec's ``DotProductAttention`` refuses packed (THD) sequences, which verl uses with
  ``use_remove_padding=True``: a subclass that runs causal attention per packed sequence with
  ``torch.nn.functional.scaled_dot_product_attention`` (:class:`PackedDotProductAttention`).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import types
from typing import Any

import torch

__all__ = ["PatchError", "apply", "PackedDotProductAttention", "APPLIED", "SKIP_ENV"]

#: names of the patches applied in this process, in order
APPLIED: list[str] = []
#: comma-separated patch names (or parts of them) to leave out: reproduces the blocker each one fixes
SKIP_ENV = "VERL_LAMBDA_MEGATRON_CPU_SKIP"


class PatchError(RuntimeError):
    """A patched megatron-core / mbridge object is missing or has another shape than expected."""


def _once(name: str):
    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            skip = [part.strip() for part in os.environ.get(SKIP_ENV, "").split(",") if part.strip()]
            if name in APPLIED or any(part in name for part in skip):
                return
            fn(*args, **kwargs)
            APPLIED.append(name)

        return wrapper

    return decorator


def _expect_params(obj: Any, names: list[str], what: str) -> None:
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError) as err:
        raise PatchError(f"{what}: no signature ({err})") from err
    missing = [n for n in names if n not in params]
    if missing:
        raise PatchError(f"{what}: expected parameters {names}, missing {missing} (has {params})")


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


# --------------------------------------------------------------------------------------------
# torch.cuda on a CPU-only torch
# --------------------------------------------------------------------------------------------


@_once("torch.cuda stand-ins")
def _cuda_stand_ins() -> None:
    cuda = torch.cuda
    for name in ("current_device", "get_rng_state", "set_rng_state", "manual_seed", "synchronize"):
        if not hasattr(cuda, name):
            raise PatchError(f"torch.cuda.{name} is missing")
    cuda.current_device = lambda: "cpu"
    cuda.get_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    # the CPU generator only: torch.manual_seed itself calls torch.cuda.manual_seed_all
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.synchronize = lambda *args, **kwargs: None

    from megatron.core.tensor_parallel import random as mcore_random

    for name in ("_get_cuda_rng_state", "_set_cuda_rng_state"):
        if not callable(getattr(mcore_random, name, None)):
            raise PatchError(f"megatron.core.tensor_parallel.random.{name} is missing")
    _expect_params(mcore_random._get_cuda_rng_state, ["device", "clone", "graph_safe"], "_get_cuda_rng_state")
    _expect_params(mcore_random._set_cuda_rng_state, ["new_state", "device", "graph_safe"], "_set_cuda_rng_state")

    def _get_cuda_rng_state(device="cuda", clone=False, graph_safe=False):
        state = torch.get_rng_state()
        return state.clone() if clone else state

    def _set_cuda_rng_state(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    mcore_random._get_cuda_rng_state = _get_cuda_rng_state
    mcore_random._set_cuda_rng_state = _set_cuda_rng_state

    # The tracker's fork() warns when the CPU RNG state changed inside a "GPU RNG" region; here the
    # "GPU" state is the CPU generator's, so it always does (and restores it on exit, as it should).
    import logging

    def _not_the_cpu_rng_notice(record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()

    logging.getLogger(mcore_random.__name__).addFilter(_not_the_cpu_rng_notice)


class _TorchWithCPUFactories(types.ModuleType):
    """``torch``, except that its tensor factories put a tensor asked for on CUDA on the CPU."""

    _FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "as_tensor")

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        value = getattr(torch, name)
        if name in self._FACTORIES:

            @functools.wraps(value)
            def factory(*args, **kwargs):
                if _is_cuda(kwargs.get("device")):
                    kwargs["device"] = "cpu"
                kwargs.pop("pin_memory", None)
                return value(*args, **kwargs)

            return factory
        return value


_CPU_TORCH = _TorchWithCPUFactories()

#: megatron-core modules with ``device="cuda"`` literals on the training path
_CUDA_LITERAL_MODULES = (
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.grad_scaler",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.transformer.utils",
    "megatron.core.utils",
)


@_once("device='cuda' literals -> cpu")
def _cpu_factories_in(modules: tuple[str, ...] = _CUDA_LITERAL_MODULES) -> None:
    import importlib

    for name in modules:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is not torch:
            raise PatchError(f"{name}.torch is not the torch module")
        module.torch = _CPU_TORCH


_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}
_REAL_TENSOR_TYPE = torch.Tensor.type
_cuda_type_depth = 0


def _tensor_type_as_cuda(self, dtype=None, non_blocking=False, **kwargs):
    if dtype is None and not kwargs:
        name = _REAL_TENSOR_TYPE(self)
        return _CUDA_TYPE_NAMES.get(name, name)
    return _REAL_TENSOR_TYPE(self, dtype, non_blocking, **kwargs)


def _reporting_cuda_type_names(fn):
    """``fn`` during which ``tensor.type()`` names a CPU float tensor as its CUDA twin.

    megatron-core's optimizers sort parameters by ``param.type()`` and accept only
    ``torch.cuda.{Float,Half,BFloat16}Tensor``; grad clipping asserts ``torch.cuda.FloatTensor``.
    Only a call without arguments is affected, and only while ``fn`` runs.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _cuda_type_depth
        _cuda_type_depth += 1
        torch.Tensor.type = _tensor_type_as_cuda
        try:
            return fn(*args, **kwargs)
        finally:
            _cuda_type_depth -= 1
            if _cuda_type_depth == 0:
                torch.Tensor.type = _REAL_TENSOR_TYPE

    wrapper._verl_lambda_cuda_type_names = True
    return wrapper


@_once("megatron optimizers see CUDA type names")
def _optimizers_see_cuda_type_names() -> None:
    from megatron.core.optimizer import clip_grads
    from megatron.core.optimizer import optimizer as mcore_optimizer
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    targets = [
        (DistributedOptimizer, "__init__", ["self", "optimizer", "config", "grad_scaler", "init_state_fn"]),
        (mcore_optimizer.Float16OptimizerWithFloat16Params, "__init__", ["self", "optimizer", "config", "grad_scaler"]),
    ]
    for owner, name, params in targets:
        _expect_params(getattr(owner, name), params, f"{owner.__name__}.{name}")
    original_clip = clip_grads.clip_grad_by_total_norm_fp32
    _expect_params(original_clip, ["parameters", "max_norm", "total_norm"], "clip_grad_by_total_norm_fp32")
    if mcore_optimizer.clip_grad_by_total_norm_fp32 is not original_clip:
        raise PatchError("megatron.core.optimizer.optimizer.clip_grad_by_total_norm_fp32 is not clip_grads'")
    for owner, name, _ in targets:
        setattr(owner, name, _reporting_cuda_type_names(getattr(owner, name)))
    wrapped_clip = _reporting_cuda_type_names(original_clip)
    clip_grads.clip_grad_by_total_norm_fp32 = wrapped_clip
    mcore_optimizer.clip_grad_by_total_norm_fp32 = wrapped_clip


@_once("Module.cuda() / Tensor.cuda() are the identity")
def _module_cuda_identity() -> None:
    """mbridge's ``get_model`` calls ``module.cuda(torch.cuda.current_device())``; megatron-core's
    ``LanguageModule`` (tied embeddings over pipeline stages) calls ``weight.data.cuda()``."""
    module_cuda = torch.nn.Module.cuda
    _expect_params(module_cuda, ["self", "device"], "torch.nn.Module.cuda")

    def cuda(self, device=None):
        if device is None or device == "cpu" or _is_cuda(device):
            return self
        return module_cuda(self, device)

    def tensor_cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        if device is None or device == "cpu" or _is_cuda(device):
            return self
        return _REAL_TENSOR_CUDA(self, device, non_blocking, memory_format=memory_format)

    torch.nn.Module.cuda = cuda
    torch.Tensor.cuda = tensor_cuda


_REAL_TENSOR_CUDA = torch.Tensor.cuda


# --------------------------------------------------------------------------------------------
# Layer spec: local (no TransformerEngine), THD-capable core attention
# --------------------------------------------------------------------------------------------


def _packed_attention_class():
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    _expect_params(
        DotProductAttention.forward,
        ["query", "key", "value", "attention_mask", "attn_mask_type", "attention_bias", "packed_seq_params"],
        "DotProductAttention.forward",
    )

    class PackedDotProductAttention(DotProductAttention):
        """megatron-core's local ``DotProductAttention``, plus packed (THD) sequences.

        For ``packed_seq_params.qkv_format == "thd"`` the query is ``[t, heads, head_dim]`` and
        the key/value ``[t, groups, head_dim]`` (all sequences of the micro-batch packed one after
        another, boundaries in ``cu_seqlens``); each sequence gets causal attention over itself,
        as TransformerEngine's fused attention computes it. The result is ``[t, heads*head_dim]``.
        Anything else goes to ``DotProductAttention`` unchanged.
        """

        def forward(
            self,
            query,
            key,
            value,
            attention_mask,
            attn_mask_type=None,
            attention_bias=None,
            packed_seq_params=None,
        ):
            if packed_seq_params is None:
                return super().forward(
                    query, key, value, attention_mask, attn_mask_type=attn_mask_type, attention_bias=attention_bias
                )
            if packed_seq_params.qkv_format != "thd":
                raise NotImplementedError(f"packed qkv_format {packed_seq_params.qkv_format!r}")
            mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
            if mask_type not in (AttnMaskType.causal, AttnMaskType.padding_causal):
                raise NotImplementedError(f"packed attention with mask type {mask_type}")
            if attention_bias is not None:
                raise NotImplementedError("packed attention with an attention bias")
            cu_q = packed_seq_params.cu_seqlens_q_padded
            if cu_q is None:
                cu_q = packed_seq_params.cu_seqlens_q
            cu_kv = packed_seq_params.cu_seqlens_kv_padded
            if cu_kv is None:
                cu_kv = packed_seq_params.cu_seqlens_kv
            if not torch.equal(cu_q, cu_kv):
                raise NotImplementedError("packed attention with different q and kv sequence boundaries")
            repeat = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
            if repeat > 1:
                key = key.repeat_interleave(repeat, dim=1)
                value = value.repeat_interleave(repeat, dim=1)
            scale = self.softmax_scale
            if self.config.apply_query_key_layer_scaling:
                scale = scale * self.layer_number  # the layer scaling cancels in the softmax
            dropout = self.attention_dropout.p if self.training else 0.0
            out = query.new_zeros(query.shape[0], query.shape[1], value.shape[-1])
            bounds = cu_q.tolist()
            for start, end in zip(bounds[:-1], bounds[1:]):
                if end <= start:
                    continue
                q = query[start:end].transpose(0, 1)  # [heads, L, head_dim]
                k = key[start:end].transpose(0, 1)
                v = value[start:end].transpose(0, 1)
                o = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=True, scale=scale, dropout_p=dropout
                )
                out[start:end] = o.transpose(0, 1)
            return out.reshape(out.shape[0], -1)

    return PackedDotProductAttention


PackedDotProductAttention = None  # set by apply()


@_once("local spec core attention = PackedDotProductAttention")
def _local_spec_packed_attention() -> None:
    global PackedDotProductAttention
    from megatron.core.models.backends import LocalSpecProvider
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    if LocalSpecProvider.core_attention(LocalSpecProvider()) is not DotProductAttention:
        raise PatchError("LocalSpecProvider.core_attention() is not DotProductAttention")
    PackedDotProductAttention = _packed_attention_class()
    LocalSpecProvider.core_attention = lambda self: PackedDotProductAttention


@_once("WrappedTorchNorm with sequence parallelism")
def _torch_norm_sequence_parallel() -> None:
    """megatron-core's torch norm refuses ``sequence_parallel``; TE's and apex's norms support it by
    marking their weights ``sequence_parallel`` so that ``finalize_model_grads`` sums their
    gradients over the tensor-parallel group (each rank saw only its slice of the sequence)."""
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    original = WrappedTorchNorm.__new__
    _expect_params(original, ["cls", "config", "hidden_size", "eps"], "WrappedTorchNorm.__new__")

    def __new__(cls, config, hidden_size, *args, **kwargs):
        if not config.sequence_parallel:
            return original(cls, config, hidden_size, *args, **kwargs)
        config.sequence_parallel = False
        try:
            norm = original(cls, config, hidden_size, *args, **kwargs)
        finally:
            config.sequence_parallel = True
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    WrappedTorchNorm.__new__ = __new__


#: local-spec parameter names -> the TransformerEngine-spec names mbridge's mappings know
_LOCAL_TO_TE_NAMES = {
    ".input_layernorm.weight": ".self_attention.linear_qkv.layer_norm_weight",
    ".pre_mlp_layernorm.weight": ".mlp.linear_fc1.layer_norm_weight",
}


@_once("mbridge: local layer spec + local-spec weight names")
def _mbridge_local_spec() -> None:
    from mbridge.core import bridge as mbridge_bridge
    from mbridge.core import llm_bridge
    from megatron.core.models.gpt import gpt_layer_specs

    if gpt_layer_specs.HAVE_TE:
        return  # TransformerEngine present: leave mbridge's TE spec alone
    original_spec = llm_bridge.get_gpt_decoder_block_spec
    if original_spec is not gpt_layer_specs.get_gpt_decoder_block_spec:
        raise PatchError("mbridge.core.llm_bridge.get_gpt_decoder_block_spec is not megatron-core's")
    _expect_params(original_spec, ["config", "use_transformer_engine"], "get_gpt_decoder_block_spec")

    def get_gpt_decoder_block_spec(config, use_transformer_engine, *args, **kwargs):
        return original_spec(config, False, *args, **kwargs)

    llm_bridge.get_gpt_decoder_block_spec = get_gpt_decoder_block_spec

    Bridge = mbridge_bridge.Bridge
    original_map = Bridge._weight_name_mapping_mcore_to_hf
    _expect_params(original_map, ["self", "mcore_weights_name"], "Bridge._weight_name_mapping_mcore_to_hf")

    def _weight_name_mapping_mcore_to_hf(self, mcore_weights_name: str) -> list[str]:
        for local, te in _LOCAL_TO_TE_NAMES.items():
            if mcore_weights_name.endswith(local):
                mcore_weights_name = mcore_weights_name[: -len(local)] + te
                break
        return original_map(self, mcore_weights_name)

    Bridge._weight_name_mapping_mcore_to_hf = _weight_name_mapping_mcore_to_hf


def apply() -> list[str]:
    """Apply every patch (once) on a torch without CUDA; returns the names applied in this process."""
    if torch.cuda.is_available():
        return APPLIED
    _cuda_stand_ins()
    _module_cuda_identity()
    _cpu_factories_in()
    _optimizers_see_cuda_type_names()
    _local_spec_packed_attention()
    _torch_norm_sequence_parallel()
    if "mbridge" in sys.modules or _importable("mbridge"):
        _mbridge_local_spec()
    return APPLIED


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
