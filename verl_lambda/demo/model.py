"""A tiny causal LM built from a transformers config (Qwen2 or LLaMA architecture), random init."""

from __future__ import annotations

import torch

from verl_lambda.demo.options import ARCHITECTURES, HEAD_SIZE, ModelSize

__all__ = ["ARCHITECTURES", "HEAD_SIZE", "ModelSize", "model_config", "build_model", "count_parameters"]


def model_config(arch: str, vocab_size: int, size: ModelSize, tokenizer) -> dict:
    """The keyword arguments of the transformers config (also the SFT cache key)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return dict(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=2 * size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        max_position_embeddings=size.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
    )


def build_model(arch: str, config_kwargs: dict) -> torch.nn.Module:
    """A randomly initialised ``Qwen2ForCausalLM`` or ``LlamaForCausalLM`` (uses the current torch seed)."""
    if arch == "qwen2":
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    elif arch == "llama":
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model
    else:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return Model(Config(**config_kwargs))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
