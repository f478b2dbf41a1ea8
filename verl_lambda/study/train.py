"""One run of the study: one setting × method × seed, trained through verl's advantage and loss code.

The verl calls are the demo's (:class:`verl_lambda.demo.rl.VerlUpdate`): advantages from verl's
``compute_advantage`` (``grpo`` for GRPO, the registered ``grpo_lambda`` estimator with
``algorithm.grpo_lambda.adv_clamp`` otherwise) and the loss from ``get_policy_loss_fn`` (``vanilla``
or ``grpo_lambda`` with a ``GRPOLambdaLossConfig``), reduced by verl's ``agg_loss`` (token-mean).

Pairing: the policy's initial weights, the prompts of every step and the uniform numbers behind
every sample come from the seed alone, so every method of one seed starts from the same policy, sees
the same prompts, and draws its first batch identically (common random numbers afterwards).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from verl_lambda.study.options import ARMS, StudyConfig, StudyMethod
from verl_lambda.study.stats import steps_to_threshold
from verl_lambda.study.task import CreditTask, MarkovPolicy, exact_metrics, sample

__all__ = ["verl_update", "run_one", "credit_through_verl"]


def verl_update(method: StudyMethod, config: StudyConfig, mini_batches: int):
    """The demo's :class:`VerlUpdate` for a study method (verl's advantage and loss functions)."""
    from verl_lambda.demo.methods import Method
    from verl_lambda.demo.options import RLSettings
    from verl_lambda.demo.rl import VerlUpdate

    settings = RLSettings(
        prompts_per_step=config.prompts_per_step,
        group_size=config.group_size,
        mini_batches=mini_batches,
        clip_ratio=config.clip_ratio,
    )
    demo_method = Method(method.name, method.name, method.description, method.fixed)
    return VerlUpdate(demo_method, settings, method.settings())


def run_one(config: StudyConfig, position: str, arm_name: str, method: StudyMethod, seed: int) -> dict:
    """Train one policy; returns the run's scalars and its curves (exact expected reward per step)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    arm = ARMS[arm_name]
    task = CreditTask(config, position)
    update = verl_update(method, config, arm.mini_batches)
    torch.manual_seed(seed)
    policy = MarkovPolicy(config)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    prompt_generator = torch.Generator().manual_seed(1_000_003 * seed + 1)
    sample_generator = torch.Generator().manual_seed(1_000_003 * seed + 2)
    batch = config.prompts_per_step * config.group_size
    group_ids = np.array(
        [f"p{i}" for i in range(config.prompts_per_step) for _ in range(config.group_size)], dtype=object
    )
    mask = torch.ones(batch, config.length, dtype=torch.bool)
    chunks = torch.arange(batch).chunk(arm.mini_batches)

    expected, train_reward = [], []
    sums = {"clipfrac": 0.0, "grad_norm": 0.0, "trace_abs_max": 0.0}
    updates = 0
    steps = config.steps_for(arm_name)
    for _ in range(steps):
        with torch.no_grad():
            table = policy.table()
        expected.append(exact_metrics(table, task, entropy=False)["expected_reward"])
        prompt_ids = torch.randint(config.prompts, (config.prompts_per_step,), generator=prompt_generator)
        prompt_ids = prompt_ids.repeat_interleave(config.group_size)
        responses = sample(table, prompt_ids, sample_generator)
        rewards = task.reward(prompt_ids, responses)
        train_reward.append(rewards.mean().item())
        advantages = update.advantages(rewards, mask, group_ids)
        on_policy = arm.updates_per_step == 1
        if not on_policy:
            with torch.no_grad():
                old_log_prob = policy.log_probs(prompt_ids, responses)
        for _epoch in range(arm.epochs):
            for rows in chunks:
                log_prob = policy.log_probs(prompt_ids[rows], responses[rows])
                if on_policy:  # one update on the whole batch: the old log-probs are these, bit for bit
                    old_log_prob = log_prob.detach()
                loss, metrics = update.loss(old_log_prob[rows], log_prob, advantages[rows], mask[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                updates += 1
                sums["grad_norm"] += float(grad_norm)
                sums["clipfrac"] += float(metrics.get("actor/pg_clipfrac", 0.0))
                sums["trace_abs_max"] = max(
                    sums["trace_abs_max"], float(metrics.get("actor/grpo_lambda/trace_abs_max", 0.0))
                )
    with torch.no_grad():
        final = exact_metrics(policy.table(), task)
    expected.append(final["expected_reward"])
    reached = steps_to_threshold(expected, config.threshold, config.smooth)
    return {
        "setting": f"{position}/{arm_name}",
        "position": position,
        "arm": arm_name,
        "method": method.name,
        "seed": seed,
        **method.reading(),
        "steps": steps,
        "final_reward": final["expected_reward"],
        "mean_reward": float(np.mean(expected[1:])),
        "steps_to_threshold": reached,
        "final_train_reward": float(np.mean(train_reward[-config.smooth :])),
        "final_filler_entropy": final["filler_entropy"],
        "final_slot_accuracy": final["slot_accuracy"],
        "mean_clipfrac": sums["clipfrac"] / max(updates, 1),
        "mean_grad_norm": sums["grad_norm"] / max(updates, 1),
        "max_trace_abs": sums["trace_abs_max"] if method.is_grpo_lambda else None,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "expected_curve": expected,  # step 0 ... steps (the policy before each step, then the final one)
        "train_curve": train_reward,
    }


def credit_through_verl(method: StudyMethod, length: int, log_prob: float) -> list[float]:
    """Per-position gradient weight at ρ = 1 of ``method``'s loss, through verl's loss function:
    d(token-sum of the loss)/d log π(o_k) for an advantage of −1 on one response of ``length`` tokens
    whose tokens all have log-probability ``log_prob`` (GRPO: 1 for every position)."""
    config = StudyConfig(length=length, prompts_per_step=1, group_size=1)
    update = verl_update(method, config, mini_batches=1)
    old = torch.full((1, length), float(log_prob), dtype=torch.float64)
    new = old.clone().requires_grad_(True)
    mask = torch.ones(1, length, dtype=torch.bool)
    advantages = torch.full_like(old, -1.0)
    loss, _ = update.loss(old, new, advantages, mask)  # token-mean: divide by the token count
    (grad,) = torch.autograd.grad(loss * length, new)
    values = grad[0].tolist()
    return [v if math.isfinite(v) else float("nan") for v in values]
