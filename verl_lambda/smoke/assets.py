"""The tiny model, tokenizer and dataset of a smoke run, built locally (nothing is downloaded).

* :func:`build_model` — a random Llama causal LM (hidden 64, 2 layers, ~87 k parameters) and a
  character-level fast tokenizer with a plain chat template, both saved with ``save_pretrained`` so
  verl loads them like any Hugging Face checkpoint. A Llama config is used because transformers
  keeps the generic fast tokenizer for it (a Qwen2 config makes it swap in Qwen's tokenizer class).
* :func:`build_dataset` — ``train.parquet`` / ``test.parquet`` in verl's RL format: one-digit
  additions ``"a+b=? Answer as #### N"`` with the sum as ground truth.
* :func:`build_assets` — both under one folder, returned as :class:`Assets`.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

from verl_lambda.smoke import require_supported_verl

require_supported_verl(__name__)

__all__ = ["Assets", "build_assets", "build_model", "build_dataset", "CHAT_TEMPLATE", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ["<pad>", "<unk>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DATA_SOURCE = "verl_lambda/smoke_addition"


@dataclass(frozen=True)
class Assets:
    """Paths of a built model folder and dataset files."""

    model: Path
    train_file: Path
    val_file: Path


def _vocabulary(multiple: int = 1) -> dict[str, int]:
    characters = [c for c in string.printable if c not in "\x0b\x0c\r"]  # digits, letters, punctuation, space, \t, \n
    tokens = SPECIAL_TOKENS + characters
    tokens += [f"<extra_{i}>" for i in range(-len(tokens) % multiple)]  # tensor parallelism splits the vocabulary
    return {token: i for i, token in enumerate(tokens)}


def build_model(out: Path, seed: int = 0, vocab_multiple: int = 1) -> Path:
    """Write a random tiny Llama and its character tokenizer to ``out``; returns ``out``.

    ``vocab_multiple`` pads the vocabulary with unused ``<extra_i>`` tokens to a multiple of it
    (Megatron splits the embedding and output layer across tensor-parallel ranks, and mbridge
    does not pad the vocabulary itself).
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _vocabulary(vocab_multiple)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIAL_TOKENS + [t for t in vocab if t.startswith("<extra_")])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
    tokenizer.save_pretrained(out)
    # AutoTokenizer must give back the generic fast tokenizer with the character pre-tokenizer.
    config_file = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["chat_template"] = CHAT_TEMPLATE
    config_file.write_text(json.dumps(tokenizer_config, indent=1))

    stop_ids = [vocab["<eos>"], vocab["<|end|>"]]
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=vocab["<pad>"],
        eos_token_id=stop_ids,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.save_pretrained(out)
    return out


def _rows(count: int, split: str, rng: random.Random) -> list[dict]:
    rows = []
    for index in range(count):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"{a}+{b}=? Answer as #### N"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"split": split, "index": index, "question": f"{a}+{b}", "answer": str(a + b)},
            }
        )
    return rows


def build_dataset(out: Path, n_train: int = 16, n_val: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """Write ``train.parquet`` and ``test.parquet`` (verl's RL columns) to ``out``; returns both paths."""
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    train, val = out / "train.parquet", out / "test.parquet"
    pd.DataFrame(_rows(n_train, "train", rng)).to_parquet(train)
    pd.DataFrame(_rows(n_val, "test", rng)).to_parquet(val)
    return train, val


def build_assets(root: Path, vocab_multiple: int = 1) -> Assets:
    """Build the model in ``root/model`` and the dataset in ``root/data``."""
    root = Path(root)
    model = build_model(root / "model", vocab_multiple=vocab_multiple)
    train, val = build_dataset(root / "data")
    return Assets(model=model, train_file=train, val_file=val)
