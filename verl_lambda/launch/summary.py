"""What the launcher prints before it starts verl: the GRPO-λ settings and the run's numbers."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verl_lambda.launch.grpo_lambda import GRPOLambdaRun
from verl_lambda.launch.preflight import RunShape
from verl_lambda.verl.keys import ESTIMATOR_NAME, LOSS_CONFIG_PATH, MODULES_ENV, REGISTRATION_KEY, config_key

__all__ = ["summary_lines"]


def _row(label: str, value: Any) -> str:
    return f"  {label:<52} {value}"


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def _grpo_lambda_lines(cfg: DictConfig, run: GRPOLambdaRun | None) -> list[str]:
    if run is None:
        return [
            _row(
                "off",
                f"algorithm.adv_estimator={_get(cfg, 'algorithm.adv_estimator')} "
                f"{LOSS_CONFIG_PATH}.loss_mode={_get(cfg, f'{LOSS_CONFIG_PATH}.loss_mode')}",
            )
        ]
    decay = run.settings.loss.decay
    lines = [
        _row("algorithm.adv_estimator", ESTIMATOR_NAME),
        _row("algorithm.norm_adv_by_std_in_grpo", run.norm_adv_by_std),
        _row(f"{LOSS_CONFIG_PATH}.loss_mode", _get(cfg, f"{LOSS_CONFIG_PATH}.loss_mode")),
    ]
    for name, value in run.settings.values().items():
        lines.append(_row(config_key(name), "null (off)" if value is None else value))
    horizon = "unbounded (gamma*lam = 1)" if decay >= 1 else f"{1 / (1 - decay):.0f} tokens"
    return lines + [_row("trace horizon 1/(1 - gamma*lam)", horizon)]


def _trained_weights(cfg: DictConfig) -> str:
    rank = _get(cfg, "actor_rollout_ref.model.lora_rank", 0) or 0
    if not rank:
        return "all (full fine-tuning)"
    modules = _get(cfg, "actor_rollout_ref.model.target_modules", None)
    return f"LoRA rank {rank}, alpha {_get(cfg, 'actor_rollout_ref.model.lora_alpha')}, modules {modules}"


def summary_lines(cfg: DictConfig, shape: RunShape, run: GRPOLambdaRun | None, warnings: list[str]) -> list[str]:
    """The resolved GRPO-λ settings and the effective batch / length numbers, one item a line."""
    lines = ["GRPO-λ settings", *_grpo_lambda_lines(cfg, run)]
    modules = _get(cfg, REGISTRATION_KEY)
    if modules is None and MODULES_ENV in os.environ:  # a Ray job: its runtime env carries them
        modules = f"{os.environ[MODULES_ENV]} (from the Ray job's runtime env)"
    lines.append(_row("plugin in Ray workers", f"{MODULES_ENV}={modules}"))
    n_gpus = shape.gpus
    if shape.strategy == "megatron":
        tp, pp, cp = shape.megatron_tp, shape.megatron_pp, shape.sequence_split
        engine = f"megatron TP {tp} x PP {pp} x CP {cp} -> DP {n_gpus // (tp * pp * cp)}"
    else:
        engine = f"{shape.strategy} (Ulysses SP {shape.sequence_split}) -> DP {n_gpus // shape.sequence_split}"
    if shape.dynamic_batch:
        micro = f"dynamic, {_get(cfg, 'actor_rollout_ref.actor.ppo_max_token_len_per_gpu')} tokens per GPU"
    else:
        micro = f"{_get(cfg, 'actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu')} responses per GPU"
    prompts, mini, n, epochs = shape.prompts, shape.mini_batch, shape.n, shape.epochs
    whole = prompts % mini == 0
    updates = f"{prompts // mini} x {epochs} epoch(s)" if whole else f"{prompts / mini:.2f} (not whole) x {epochs}"
    val = "actor_rollout_ref.rollout.val_kwargs"
    sampling = (
        f"sampled at temperature {_get(cfg, f'{val}.temperature')}, top_p {_get(cfg, f'{val}.top_p')}"
        if _get(cfg, f"{val}.do_sample", False)
        else "greedy"
    )
    lines += [
        "Batch and lengths",
        _row("model", _get(cfg, "actor_rollout_ref.model.path")),
        _row("GPUs", f"{n_gpus} = {shape.nodes} node(s) x {shape.gpus_per_node}"),
        _row("actor engine", engine),
        _row("prompts per step (data.train_batch_size)", prompts),
        _row("responses per step (x rollout.n)", f"{prompts * n} = {prompts} x {n}"),
        _row("optimizer updates per step", f"{updates} (ppo_mini_batch_size {mini} prompts = {mini * n} responses)"),
        _row(
            "max prompt / response / sequence tokens",
            f"{shape.prompt_length} / {shape.response_length} / {shape.longest}",
        ),
        _row("tokens per step at most", prompts * n * shape.longest),
        _row("actor micro-batches", micro),
        _row("trained weights", _trained_weights(cfg)),
        _row(
            "rollout",
            f"{_get(cfg, 'actor_rollout_ref.rollout.name')}, TP {shape.rollout_tp} -> {n_gpus // shape.rollout_tp} "
            f"replicas, temperature {_get(cfg, 'actor_rollout_ref.rollout.temperature')}",
        ),
        _row(
            "validation" + (" (the whole run: trainer.val_only)" if _get(cfg, "trainer.val_only", False) else ""),
            f"{_get(cfg, f'{val}.n')} response(s) per problem, {sampling}",
        ),
    ]
    return lines + [f"warning: {w}" for w in warnings]
