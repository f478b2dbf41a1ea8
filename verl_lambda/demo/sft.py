"""Supervised warm-up: teach the format and part of the task, then stop while the model still errs.

The checkpoint is cached on disk, keyed by everything that shapes it (task, tokenizer, model
config, warm-up settings, seed), so every RL method of one seed starts from the same weights and
later runs skip the warm-up.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from verl_lambda.demo.model import build_model
from verl_lambda.demo.options import SFTSettings, default_cache_dir
from verl_lambda.demo.policy import greedy_accuracy
from verl_lambda.demo.tasks import EVAL_SPLIT_SEED, RESPONSE_LENGTH, TaskData

__all__ = ["CACHE_FORMAT", "SFTSettings", "default_cache_dir", "checkpoint_path", "warm_up", "load_or_warm_up"]

CACHE_FORMAT = 1


def checkpoint_path(
    cache_dir: Path, arch: str, config_kwargs: dict, data: TaskData, settings: SFTSettings, seed: int
) -> Path:
    key = json.dumps(
        {
            "format": CACHE_FORMAT,
            "task": data.task.name,
            "eval_split_seed": EVAL_SPLIT_SEED,
            "vocab": data.tokenizer.vocab,
            "arch": arch,
            "model": config_kwargs,
            "sft": asdict(settings),
            "seed": seed,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"sft-{data.task.name}-{arch}-seed{seed}-{digest}.pt"


def warm_up(model, data: TaskData, settings: SFTSettings, seed: int, device) -> dict:
    """Train ``model`` on target responses until the probe accuracy reaches the target; return a summary."""
    generator = torch.Generator().manual_seed(seed)
    probe = data.train_problems[torch.randperm(len(data.train_problems), generator=generator)[: settings.probe_size]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    model.train()
    accuracy, step = 0.0, 0
    # the total is the step limit; the warm-up usually stops well before it, when the target is reached
    bar = tqdm(total=settings.max_steps, desc=f"{'SFT warm-up':<20} seed {seed}", leave=True, dynamic_ncols=True)
    for step in range(1, settings.max_steps + 1):
        rows = torch.randint(len(data.train_problems), (settings.batch_size,), generator=generator)
        problems = data.train_problems[rows]
        prompts, targets = data.prompt_ids(problems).to(device), data.target_ids(problems).to(device)
        logits = model(input_ids=torch.cat([prompts, targets], dim=1)).logits[:, prompts.shape[1] - 1 : -1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.update(1)
        if step % settings.check_every == 0:
            accuracy = greedy_accuracy(model, data, probe, RESPONSE_LENGTH + 2, device)
            bar.set_postfix(loss=f"{loss.item():.3f}", probe_acc=f"{accuracy:.2f}")
            if accuracy >= settings.target_accuracy:
                bar.set_postfix(loss=f"{loss.item():.3f}", probe_acc=f"{accuracy:.2f}", stopped="target reached")
                break
    bar.close()
    return {"steps": step, "probe_accuracy": accuracy, "reached_target": accuracy >= settings.target_accuracy}


def load_or_warm_up(
    arch: str, config_kwargs: dict, data: TaskData, settings: SFTSettings, seed: int, cache_dir, device
) -> tuple[dict, dict]:
    """The warmed-up weights (a CPU state dict) and the warm-up summary, from the cache when present.

    The summary names the checkpoint by its file name in ``cache_dir`` (``file``), never by an
    absolute path: it goes into metrics.json."""
    path = checkpoint_path(cache_dir, arch, config_kwargs, data, settings, seed) if cache_dir else None
    if path is not None and path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return saved["state_dict"], {**saved["info"], "cached": True, "file": path.name}
    torch.manual_seed(seed)
    model = build_model(arch, config_kwargs).to(device)
    info = warm_up(model, data, settings, seed, device)
    state_dict = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": state_dict, "info": info}, partial)
        os.replace(partial, path)
    return state_dict, {**info, "cached": False, "file": None if path is None else path.name}
