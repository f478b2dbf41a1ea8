"""An ``hf`` rollout for verl 0.9.1 that generates with transformers on the CPU.

verl 0.9.1 ships only server rollouts (vLLM, SGLang, TRT-LLM). :mod:`verl_lambda.smoke.worker`
registers the rollout name ``hf`` (``actor_rollout_ref.rollout.name=hf``) in every process of a
harness run, by module path (Ray workers import this module themselves to unpickle its classes;
importing it changes nothing). It is made of three parts:

* :class:`HFServer` — a Ray actor that answers verl's token-in/token-out ``generate`` calls with a
  transformers causal LM (float32, KV-cache sampling loop, one request at a time) and returns
  verl's ``TokenOutput`` (token ids and their log-probs);
* :class:`HFReplica` — the ``RolloutReplica`` that starts one :class:`HFServer` per replica;
* :class:`HFServerAdapter` — the ``BaseRollout`` inside each actor/rollout worker; it pushes the
  trained weights (``checkpoint_engine.backend=naive``, verl's default) to its replica's server.

It is a test rollout: no batching, no tensor parallelism, no multi-modal inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from verl_lambda.smoke import require_supported_verl

require_supported_verl(__name__)

import ray  # noqa: E402
import torch  # noqa: E402
from verl.workers.rollout.base import BaseRollout  # noqa: E402
from verl.workers.rollout.replica import RolloutReplica, TokenOutput  # noqa: E402

__all__ = ["HFServer", "HFReplica", "HFServerAdapter", "server_name"]


def server_name(replica_rank: int) -> str:
    """Ray actor name of replica ``replica_rank``'s :class:`HFServer`."""
    return f"verl_lambda_hf_server_{replica_rank}"


def _sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> tuple[int, float]:
    """One token from ``logits`` (``[vocab]``) and its log-probability under the sampling distribution."""
    if temperature <= 0:
        token = int(logits.argmax())
        return token, float(torch.log_softmax(logits, -1)[token])
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop_sorted = probs.cumsum(-1) - probs > top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    log_probs = torch.log_softmax(logits, -1)
    token = int(torch.multinomial(log_probs.exp(), 1))
    return token, float(log_probs[token])


class HFServer:
    """Ray actor: generates for verl's agent loop with a transformers causal LM on the CPU."""

    def __init__(self, model_path: str, response_length: int) -> None:
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(1)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, attn_implementation="sdpa", dtype=torch.float32
        ).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set() if eos is None else set(eos if isinstance(eos, list) else [eos])
        self.response_length = response_length
        self.global_steps: int | None = None
        self._lock = asyncio.Lock()

    async def generate(
        self,
        request_id: str | None = None,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Sample one response to ``prompt_ids``: at most ``max_tokens`` (≤ the response length), until EOS."""
        params = dict(sampling_params)
        max_tokens = min(int(params.get("max_tokens") or self.response_length), self.response_length)
        temperature = float(params.get("temperature", 1.0))
        top_k = int(params.get("top_k", -1) or -1)
        top_p = float(params.get("top_p", 1.0) or 1.0)
        tokens: list[int] = []
        log_probs: list[float] = []
        async with self._lock:
            ids = torch.tensor([list(prompt_ids)])
            past = None
            with torch.no_grad():
                for _ in range(max_tokens):
                    out = self.model(
                        input_ids=ids if past is None else ids[:, -1:], past_key_values=past, use_cache=True
                    )
                    past = out.past_key_values
                    token, log_prob = _sample(out.logits[0, -1].float(), temperature, top_k, top_p)
                    tokens.append(token)
                    log_probs.append(log_prob)
                    ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
                    if token in self.eos_ids:
                        break
        return TokenOutput(
            token_ids=tokens,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None = None) -> int:
        """Replace the model's weights with the trainer's; returns the number of tensors loaded."""
        self.model.load_state_dict(state_dict, strict=False)
        self.global_steps = global_steps
        return len(state_dict)

    # Lifecycle calls verl's replica manager makes; a CPU model has nothing to free or restore.
    async def wake_up(self) -> None:
        pass

    async def sleep(self) -> None:
        pass

    async def abort_all_requests(self, reject_request: bool = False) -> None:
        pass

    async def resume_generation(self) -> None:
        pass

    async def clear_kv_cache(self) -> None:
        pass

    async def release_kv_cache(self) -> None:
        pass

    async def resume_kv_cache(self) -> None:
        pass

    async def start_profile(self, **kwargs: Any) -> None:
        pass

    async def stop_profile(self) -> None:
        pass


def _model_path(model_config: Any) -> str:
    """``local_path`` of an ``HFModelConfig``; verl 0.9.1 hands the replica a DictConfig with ``path`` only."""
    getter = getattr(model_config, "get", None)
    local = getter("local_path", None) if callable(getter) else getattr(model_config, "local_path", None)
    return local or model_config.path


class HFReplica(RolloutReplica):
    """One rollout replica = one :class:`HFServer` actor (no GPU, no placement group of its own)."""

    async def launch_servers(self) -> None:
        name = server_name(self.replica_rank)
        self._server_handle = (
            ray.remote(HFServer)
            .options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(_model_path(self.model_config), self.config.response_length)
        )
        self.servers = [self._server_handle]
        self._server_address = name


class HFServerAdapter(BaseRollout):
    """The rollout inside an actor/rollout worker: forwards the trained weights to its HFServer."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, model_config, device_mesh)
        replica_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        # verl gives replica r the worker ranks [r * size, (r + 1) * size)
        self.replica_rank = rank // replica_size
        self.is_leader = rank % replica_size == 0

    async def resume(self, tags: list[str]) -> None:
        pass

    async def release(self) -> None:
        pass

    async def update_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], wire_format: str = "named_tensors", **kwargs: Any
    ) -> None:
        # Every rank drains the generator: gathering FSDP2 shards (full_tensor) is a collective.
        state = {name: tensor.detach().to("cpu", torch.float32).clone() for name, tensor in weights}
        if self.is_leader:
            server = ray.get_actor(server_name(self.replica_rank))
            await server.load_weights.remote(state, kwargs.get("global_steps"))
