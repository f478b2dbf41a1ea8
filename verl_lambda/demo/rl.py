"""The RL loop: sample groups, score them exactly, and update through verl's advantage and loss code.

verl pieces used as the trainer uses them:

* advantages: ``verl.trainer.ppo.ray_trainer.compute_advantage`` on a ``DataProto`` holding
  ``token_level_rewards``, ``response_mask`` and the group ids ``uid`` (``"grpo"`` for GRPO,
  the registered ``"grpo_lambda"`` estimator for GRPO-λ), with the algorithm config as a DictConfig;
* policy loss: ``verl.trainer.ppo.core_algos.get_policy_loss_fn`` (``"vanilla"`` or the registered
  ``"grpo_lambda"``), called with verl's ``ActorConfig``; both reduce with verl's ``agg_loss``.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict

import numpy as np
import torch
from tqdm.auto import tqdm

from verl_lambda.core.settings import GRPOLambdaSettings
from verl_lambda.demo.methods import Method
from verl_lambda.demo.model import build_model
from verl_lambda.demo.options import RESPONSE_LENGTH, RLSettings
from verl_lambda.demo.policy import generate, greedy_accuracy, response_log_probs, response_mask
from verl_lambda.demo.tasks import TaskData
from verl_lambda.verl.keys import ESTIMATOR_SECTION

__all__ = ["MAX_NEW_TOKENS", "RLSettings", "import_verl", "VerlUpdate", "train"]

MAX_NEW_TOKENS = RESPONSE_LENGTH + 2


def import_verl():
    """verl's pieces (imported on first use: importing verl takes seconds and prints engine notices)."""
    # verl reports at import that it found no GPU; on a CPU that is expected.
    logging.getLogger("verl.plugin.platform.platform_manager").addFilter(lambda record: record.levelno >= logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from verl import DataProto
            from verl.trainer.ppo.core_algos import get_policy_loss_fn
            from verl.trainer.ppo.ray_trainer import compute_advantage
            from verl.workers.config.actor import ActorConfig, PolicyLossConfig
        except ModuleNotFoundError as err:
            raise SystemExit(
                f"verl's trainer module needs '{err.name}', which is not installed: pip install 'verl-lambda[demo]'"
            ) from None
        from verl_lambda.verl.config import GRPOLambdaLossConfig
        from verl_lambda.verl.register import check_registered

    check_registered()
    return DataProto, compute_advantage, get_policy_loss_fn, ActorConfig, PolicyLossConfig, GRPOLambdaLossConfig


class VerlUpdate:
    """Advantages and policy loss of one method, through verl."""

    def __init__(self, method: Method, settings: RLSettings, grpo_lambda: GRPOLambdaSettings | None = None):
        """``grpo_lambda``: the method's GRPO-λ settings (:meth:`Method.settings`); unused by GRPO."""
        from omegaconf import OmegaConf

        (
            self.DataProto,
            self.compute_advantage,
            get_policy_loss_fn,
            ActorConfig,
            PolicyLossConfig,
            GRPOLambdaLossConfig,
        ) = import_verl()
        self.method = method
        if method.is_grpo_lambda:
            self.grpo_lambda = grpo_lambda if grpo_lambda is not None else method.settings(GRPOLambdaSettings())
            policy_loss = GRPOLambdaLossConfig(**asdict(self.grpo_lambda.loss))
        else:
            self.grpo_lambda = None
            policy_loss = PolicyLossConfig(loss_mode=method.loss_mode)
        batch = settings.prompts_per_step * settings.group_size
        self.actor_config = ActorConfig(
            strategy="fsdp",
            rollout_n=settings.group_size,
            ppo_mini_batch_size=settings.prompts_per_step // settings.mini_batches,
            ppo_micro_batch_size_per_gpu=batch // settings.mini_batches,
            clip_ratio=settings.clip_ratio,
            clip_ratio_low=settings.clip_ratio,
            clip_ratio_high=settings.clip_ratio,
            loss_agg_mode="token-mean",
            use_torch_compile=False,
            policy_loss=policy_loss,
        )
        algorithm = {"adv_estimator": method.estimator, "norm_adv_by_std_in_grpo": True}
        if self.grpo_lambda is not None:
            algorithm[ESTIMATOR_SECTION] = asdict(self.grpo_lambda.advantage)
        self.algorithm_config = OmegaConf.create(algorithm)
        self.loss_fn = get_policy_loss_fn(method.loss_mode)

    def advantages(self, rewards: torch.Tensor, mask: torch.Tensor, group_ids: np.ndarray) -> torch.Tensor:
        """``[n, T]`` advantages from verl's ``compute_advantage``; the reward sits on the last valid token."""
        last = mask.long().sum(dim=1) - 1
        token_level_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        token_level_rewards[torch.arange(len(rewards)), last] = rewards
        data = self.DataProto.from_dict(
            tensors={"token_level_rewards": token_level_rewards, "response_mask": mask},
            non_tensors={"uid": group_ids},
        )
        data = self.compute_advantage(
            data,
            adv_estimator=self.method.estimator,
            norm_adv_by_std_in_grpo=self.algorithm_config.norm_adv_by_std_in_grpo,
            config=self.algorithm_config,
        )
        return data.batch["advantages"]

    def loss(self, old_log_prob, log_prob, advantages, mask) -> tuple[torch.Tensor, dict]:
        return self.loss_fn(
            old_log_prob=old_log_prob,
            log_prob=log_prob,
            advantages=advantages,
            response_mask=mask,
            loss_agg_mode=self.actor_config.loss_agg_mode,
            config=self.actor_config,
            rollout_is_weights=None,
        )


METRIC_NAMES = {
    "actor/pg_clipfrac": "clipfrac",
    "actor/ppo_kl": "ppo_kl",
    "actor/grpo_lambda/trace_abs_mean": "trace_abs_mean",
    "actor/grpo_lambda/trace_abs_max": "trace_abs_max",
    "actor/grpo_lambda/guard_frac": "trace_guard_frac",
}


def train(
    method: Method,
    seed: int,
    arch: str,
    config_kwargs: dict,
    start_weights: dict,
    data: TaskData,
    settings: RLSettings,
    device,
    grpo_lambda: GRPOLambdaSettings | None = None,
) -> list[dict]:
    """One RL run from ``start_weights``; one record per step (step 0 is the starting point).

    ``grpo_lambda``: the method's GRPO-λ settings (default: its fixed settings over the defaults)."""
    update = VerlUpdate(method, settings, grpo_lambda)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_model(arch, config_kwargs)
    model.load_state_dict(start_weights)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=settings.adam_betas, weight_decay=settings.weight_decay
    )
    warmup = max(1, settings.warmup_steps * settings.mini_batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: min(1.0, (update + 1) / warmup))
    tokenizer = data.tokenizer
    group_ids = np.array(
        [f"p{i}" for i in range(settings.prompts_per_step) for _ in range(settings.group_size)], dtype=object
    )

    def evaluate() -> float:
        return greedy_accuracy(model, data, data.eval_problems, MAX_NEW_TOKENS, device)

    records = [{"method": method.name, "seed": seed, "step": 0, "eval_accuracy": evaluate()}]
    bar = tqdm(range(1, settings.steps + 1), desc=f"{method.label:<20} seed {seed}", leave=True, dynamic_ncols=True)
    for step in bar:
        rows = torch.randint(len(data.train_problems), (settings.prompts_per_step,), generator=generator)
        problems = data.train_problems[rows].repeat_interleave(settings.group_size, dim=0)
        prompts = data.prompt_ids(problems).to(device)
        responses = generate(model, prompts, MAX_NEW_TOKENS, tokenizer, sample=True)
        mask = response_mask(responses, tokenizer.eos_token_id)
        rewards = data.rewards(problems, responses)
        advantages = update.advantages(rewards, mask, group_ids)
        with torch.no_grad():
            old_log_prob = response_log_probs(model, prompts, responses)

        sums: dict[str, float] = {}
        for rows_mb in torch.arange(len(prompts), device=device).chunk(settings.mini_batches):
            log_prob = response_log_probs(model, prompts[rows_mb], responses[rows_mb])
            loss, metrics = update.loss(old_log_prob[rows_mb], log_prob, advantages[rows_mb], mask[rows_mb])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            values = {"loss": loss.item(), "grad_norm": grad_norm.item()}
            values.update({short: float(metrics[key]) for key, short in METRIC_NAMES.items() if key in metrics})
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value / settings.mini_batches

        record = {
            "method": method.name,
            "seed": seed,
            "step": step,
            "train_reward": rewards.mean().item(),
            "response_length": mask.sum(dim=1).float().mean().item(),
            **{key: value if math.isfinite(value) else None for key, value in sums.items()},
        }
        if step % settings.eval_every == 0 or step == settings.steps:
            record["eval_accuracy"] = evaluate()
        records.append(record)
        last_accuracy = next(r["eval_accuracy"] for r in reversed(records) if "eval_accuracy" in r)
        bar.set_postfix(reward=f"{record['train_reward']:.2f}", eval_acc=f"{last_accuracy:.2f}")
    bar.close()
    return records
