"""What the demo's command line needs before any heavy import: the tasks, sizes and run settings.

Standard library only, so that ``verl-lambda demo`` parses and checks its arguments in a fraction of
a second; torch, transformers and verl are imported once the run starts. The GRPO-λ settings are not
here: they are :class:`verl_lambda.core.settings.GRPOLambdaSettings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ARCHITECTURES",
    "HEAD_SIZE",
    "ModelSize",
    "RLSettings",
    "SFTSettings",
    "Task",
    "TASKS",
    "EVAL_SPLIT_SEED",
    "PROMPT_LENGTH",
    "RESPONSE_LENGTH",
    "MAX_EVAL_SIZE",
    "default_cache_dir",
]

ARCHITECTURES = ("qwen2", "llama")
HEAD_SIZE = 32  # width of one attention head; the model has hidden_size / HEAD_SIZE heads

EVAL_SPLIT_SEED = 20251001
PROMPT_LENGTH = 7  # <bos> + "ab+cd:"
RESPONSE_LENGTH = 10  # 9 characters + <eos>
MAX_EVAL_SIZE = 5000  # of the 10,000 problems; the rest stay for training


@dataclass(frozen=True)
class ModelSize:
    hidden_size: int = 128
    num_layers: int = 2
    max_positions: int = 32

    @property
    def num_heads(self) -> int:
        return self.hidden_size // HEAD_SIZE


@dataclass(frozen=True)
class RLSettings:
    """The RL loop's settings, the same for every method (the GRPO-λ settings come per method)."""

    steps: int = 150
    prompts_per_step: int = 16
    group_size: int = 8
    mini_batches: int = 2  # PPO updates per step (one epoch over the batch)
    lr: float = 1e-4  # AdamW, the same for every method
    warmup_steps: int = 10  # linear learning-rate warm-up, in RL steps
    adam_betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    clip_ratio: float = 0.2
    eval_every: int = 10


@dataclass(frozen=True)
class SFTSettings:
    target_accuracy: float = 0.6  # stop once greedy accuracy on a probe of training problems reaches this
    max_steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    check_every: int = 25
    probe_size: int = 256


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/verl-lambda/demo`` or ``~/.cache/verl-lambda/demo``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "verl-lambda" / "demo"


@dataclass(frozen=True)
class Task:
    name: str
    decisive: str  # where the decisive tokens sit in the response: "early" or "late"
    answer_first: bool
    description: str

    def prompt(self, a: int, b: int) -> str:
        return f"{a:02d}+{b:02d}:"

    def target(self, a: int, b: int) -> str:
        answer, check = f"{a + b:03d}", f"{b:02d}+{a:02d}"
        return f"{answer}={check}" if self.answer_first else f"{check}={answer}"


TASKS = {
    task.name: task
    for task in (
        Task("answer_first", "early", True, "sum first, then the check: 23+45: -> 068=45+23"),
        Task("answer_last", "late", False, "the check first, then the sum: 23+45: -> 45+23=068"),
    )
}
