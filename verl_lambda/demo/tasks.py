"""Synthetic, exactly verifiable tasks: two-digit addition with a check written next to the answer.

Every prompt is ``"ab+cd:"`` (two zero-padded two-digit numbers). The response holds the sum as
three digits and a check that restates the problem with the operands swapped; only the order
differs between the two tasks:

* ``answer_first`` (decisive tokens early): ``"068=45+23"``, the answer, then the check;
* ``answer_last`` (decisive tokens late):  ``"45+23=068"``, the check, then the answer.

Both responses have the same 9 characters plus ``<eos>``; the reward is 1 when the response's tokens
up to its ``<eos>`` are exactly the target's, else 0. Copying the operands is easy, so whether a response is right is
decided by the three answer digits: at positions 0–2 in one task and 6–8 in the other.

The held-out evaluation split is fixed (it does not depend on the run's seed) and is closed under
swapping the operands, so no evaluation problem is seen in training in either order.
"""

from __future__ import annotations

import random

import torch

from verl_lambda.demo.options import EVAL_SPLIT_SEED, PROMPT_LENGTH, RESPONSE_LENGTH, TASKS, Task
from verl_lambda.demo.tokenizer import CharTokenizer

__all__ = ["EVAL_SPLIT_SEED", "PROMPT_LENGTH", "RESPONSE_LENGTH", "TASKS", "Task", "TaskData"]


class TaskData:
    """Problems of a task split into train and held-out eval sets, and their token tensors."""

    def __init__(self, task: Task, tokenizer: CharTokenizer, eval_size: int = 512):
        self.task, self.tokenizer = task, tokenizer
        pairs = sorted({(min(a, b), max(a, b)) for a in range(100) for b in range(100)})
        random.Random(EVAL_SPLIT_SEED).shuffle(pairs)
        eval_problems, train_problems = [], []
        for a, b in pairs:
            split = eval_problems if len(eval_problems) < eval_size else train_problems
            split.extend({(a, b), (b, a)})
        self.eval_problems = torch.tensor(sorted(eval_problems)[:eval_size])
        self.train_problems = torch.tensor(sorted(train_problems))
        every = [(a, b) for a in range(100) for b in range(100)]  # row a * 100 + b
        self._prompts = torch.tensor([tokenizer.encode_prompt(task.prompt(a, b)) for a, b in every])
        self._targets = torch.tensor([tokenizer.encode_response(task.target(a, b)) for a, b in every])

    def prompt_ids(self, problems: torch.Tensor) -> torch.Tensor:
        """``[n, PROMPT_LENGTH]`` token ids of the prompts."""
        return self._prompts[problems[:, 0] * 100 + problems[:, 1]]

    def target_ids(self, problems: torch.Tensor) -> torch.Tensor:
        """``[n, RESPONSE_LENGTH]`` token ids of the target responses (``<eos>`` included)."""
        return self._targets[problems[:, 0] * 100 + problems[:, 1]]

    def rewards(self, problems: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        """``[n]`` float rewards: 1 where the response is exactly the target up to its ``<eos>``."""
        target = self.target_ids(problems).to(response_ids.device)
        if response_ids.shape[1] < target.shape[1]:
            return torch.zeros(len(problems), device=response_ids.device)
        return (response_ids[:, : target.shape[1]] == target).all(dim=1).float()
