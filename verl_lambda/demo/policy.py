"""Sampling, greedy decoding and per-token log-probabilities of a causal LM on fixed-length prompts."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def generate(model, prompt_ids: torch.Tensor, max_new_tokens: int, tokenizer, sample: bool) -> torch.Tensor:
    """``[n, max_new_tokens]`` response ids from ``model.generate``; padded after ``<eos>``.

    ``sample=True`` draws from the model's distribution (temperature 1, no top-k/top-p);
    ``sample=False`` decodes greedily. Sampling uses torch's global random generator.
    """
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sample else dict(do_sample=False)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model.generate(
            input_ids=prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **sampling,
        )
    model.train(was_training)
    responses = output[:, prompt_ids.shape[1] :]
    return F.pad(responses, (0, max_new_tokens - responses.shape[1]), value=tokenizer.pad_token_id)


def response_mask(response_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """``[n, T]`` bool: the response tokens up to and including the first ``<eos>``."""
    is_eos = (response_ids == eos_token_id).int()
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos
    return eos_before == 0


def response_log_probs(model, prompt_ids: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
    """``[n, T]`` log π(response token | everything before it).

    No attention mask is needed: prompts have one length, and the padding after ``<eos>`` only
    comes after the tokens whose log-probabilities matter (causal attention).
    """
    sequence = torch.cat([prompt_ids, response_ids], dim=1)
    logits = model(input_ids=sequence).logits[:, prompt_ids.shape[1] - 1 : -1].float()
    return torch.gather(logits.log_softmax(dim=-1), 2, response_ids.unsqueeze(-1)).squeeze(-1)


def greedy_accuracy(model, data, problems: torch.Tensor, max_new_tokens: int, device) -> float:
    """Share of ``problems`` whose greedy response earns reward 1."""
    prompts = data.prompt_ids(problems).to(device)
    responses = generate(model, prompts, max_new_tokens, data.tokenizer, sample=False)
    return data.rewards(problems, responses).mean().item()
