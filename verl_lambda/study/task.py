r"""The credit task and its policy: long responses, a few decisive tokens, exact probabilities.

**Task.** A prompt is one of ``P`` ids. A response is ``L`` tokens over a vocabulary of ``V``. ``K``
positions of the response are decisive (:func:`~verl_lambda.study.options.decisive_positions`:
early, middle, late or spread); prompt ``p`` has a fixed target token ``target[p, k]`` for each.
The reward is the share of decisive tokens equal to their target,

    R = (1/K) Σ_k [o_{d_k} = target[p, k]]  ∈ {0, 1/K, ..., 1},

so it is verifiable and the truth is known: every other token is filler that cannot change it. At
the start the policy is near uniform, so the chance reward is 1/V (0.0625 for V = 16) and the
filler has the highest entropy it can have (log V per token): with uniform credit, the L − K
filler tokens add gradient noise of zero mean to every update.

**Policy.** A first-order Markov policy π(o_t | o_{t−1}, t, p): an MLP on [prompt embedding,
embedding of the previous token (a start token at t = 0), fixed sinusoidal features of t]. Every
learned parameter is shared by all positions (the position features are not learned), so filler
gradients compete with the decisive tokens' gradients in every parameter and Adam's
per-parameter normalisation cannot undo a per-position reweighting. Because the policy depends on
(p, t, o_{t−1}) only, its whole conditional table ``[P, L, V + 1, V]`` is one batched forward pass:
sampling is a lookup per position, and the exact expected reward and the exact filler entropy of
the current policy follow from the marginals of the chain (a forward recursion), with no sampling
noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from verl_lambda.study.options import StudyConfig, decisive_positions

__all__ = ["CreditTask", "MarkovPolicy", "sample", "exact_metrics"]


class CreditTask:
    """Targets, positions and the exact reward of one position setting."""

    def __init__(self, config: StudyConfig, position: str):
        self.config = config
        self.position = position
        self.positions = torch.tensor(decisive_positions(position, config.length, config.decisive))
        generator = torch.Generator().manual_seed(config.task_seed)
        self.targets = torch.randint(config.vocab, (config.prompts, config.decisive), generator=generator)

    def reward(self, prompt_ids: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """``[B]`` share of decisive tokens equal to their target."""
        hits = responses[:, self.positions] == self.targets[prompt_ids]
        return hits.float().mean(dim=1)


POSITION_FEATURE_SEED = 7


def _position_features(length: int, size: int, kind: str = "random") -> torch.Tensor:
    """``[length, size]`` fixed (never learned) features of the position: ``random``, rows drawn from a
    normal distribution with a fixed seed (nearly orthogonal for size ≳ 64); ``sinusoid``, sin/cos
    with periods from 2 to 4·length."""
    if kind == "random":
        generator = torch.Generator().manual_seed(POSITION_FEATURE_SEED)
        return torch.randn(length, size, generator=generator) / math.sqrt(size) * 2.0
    half = size // 2
    periods = torch.logspace(math.log10(2.0), math.log10(4.0 * length), half, dtype=torch.float64)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * (2 * math.pi / periods)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class MarkovPolicy(nn.Module):
    """π(o_t | o_{t−1}, t, p): one MLP shared by every position (see the module docstring)."""

    def __init__(self, config: StudyConfig, prompt_dim: int = 16, token_dim: int = 16, position_dim: int = 64):
        super().__init__()
        self.vocab, self.length, self.prompts = config.vocab, config.length, config.prompts
        self.start = config.vocab  # the previous-token id at t = 0
        self.prompt_embedding = nn.Embedding(config.prompts, prompt_dim)
        self.token_embedding = nn.Embedding(config.vocab + 1, token_dim)
        self.register_buffer("position_features", _position_features(config.length, position_dim), persistent=False)
        hidden = config.hidden
        self.first = nn.Linear(prompt_dim + token_dim + position_dim, hidden)
        self.second = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, config.vocab)
        with torch.no_grad():  # start near uniform: the filler starts at (almost) the highest entropy
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def _first_parts(self):
        """The first layer split by input: W·[prompt; token; position] + b = P[p] + T[u] + X[t]."""
        prompt_dim = self.prompt_embedding.embedding_dim
        token_dim = self.token_embedding.embedding_dim
        w = self.first.weight
        by_prompt = self.prompt_embedding.weight @ w[:, :prompt_dim].T
        by_token = self.token_embedding.weight @ w[:, prompt_dim : prompt_dim + token_dim].T
        by_position = self.position_features @ w[:, prompt_dim + token_dim :].T + self.first.bias
        return by_prompt, by_token, by_position

    def _head(self, pre: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.second(torch.relu(pre)))).log_softmax(dim=-1)

    def log_probs(self, prompt_ids: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` log π(o_t | o_{t−1}, t, p) of the given responses."""
        by_prompt, by_token, by_position = self._first_parts()
        previous = torch.cat([torch.full_like(responses[:, :1], self.start), responses[:, :-1]], dim=1)
        pre = by_prompt[prompt_ids][:, None, :] + by_token[previous] + by_position[None, : responses.shape[1]]
        log_probs = self._head(pre)
        return log_probs.gather(2, responses.unsqueeze(-1)).squeeze(-1)

    def table(self) -> torch.Tensor:
        """``[P, L, V + 1, V]`` log π(v | previous u, position t, prompt p) for every p, t, u."""
        by_prompt, by_token, by_position = self._first_parts()
        pre = by_prompt[:, None, None, :] + by_position[None, :, None, :] + by_token[None, None, :, :]
        return self._head(pre)


def sample(table: torch.Tensor, prompt_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[B, L]`` responses drawn from the policy's table (Gumbel-max, one position at a time)."""
    batch, length, vocab = len(prompt_ids), table.shape[1], table.shape[3]
    gumbel = -torch.log(-torch.log(torch.rand(length, batch, vocab, generator=generator).clamp_(min=1e-12)))
    responses = torch.empty(length, batch, dtype=torch.long)
    flat = table.reshape(-1, vocab)  # row (p·L + t)·(V + 1) + u
    base = prompt_ids * (length * (vocab + 1))
    previous = torch.full((batch,), vocab, dtype=torch.long)  # the start token
    for t in range(length):
        rows = flat.index_select(0, base + (t * (vocab + 1)) + previous)
        previous = torch.argmax(rows.add_(gumbel[t]), dim=-1)
        responses[t] = previous
    return responses.T.contiguous()


def exact_metrics(table: torch.Tensor, task: CreditTask, entropy: bool = True) -> dict[str, float]:
    """The current policy's exact expected reward (mean over prompts), its exact accuracy at each
    decisive position, and (``entropy``) the mean entropy in nats of its filler tokens, from the
    chain's marginals. Without ``entropy`` the recursion stops at the last decisive position."""
    probs = table.double().exp()  # [P, L, V + 1, V]
    prompts, length, vocab = probs.shape[0], probs.shape[1], probs.shape[3]
    decisive = {int(t): k for k, t in enumerate(task.positions)}
    token_entropy_table = -(probs * table.double()).sum(dim=-1) if entropy else None  # [P, L, V + 1]
    accuracy = torch.zeros(prompts, len(decisive), dtype=torch.float64)
    filler_entropy, filler_count = 0.0, 0
    marginal = probs[:, 0, vocab]  # [P, V]: the distribution of o_0
    last = length - 1 if entropy else max(decisive)
    for t in range(last + 1):
        if t > 0:
            previous = marginal
            marginal = torch.bmm(previous.unsqueeze(1), probs[:, t, :vocab]).squeeze(1)
        if t in decisive:
            k = decisive[t]
            accuracy[:, k] = marginal.gather(1, task.targets[:, k : k + 1]).squeeze(1)
        elif entropy:
            if t == 0:
                token_entropy = token_entropy_table[:, 0, vocab]
            else:
                token_entropy = (previous * token_entropy_table[:, t, :vocab]).sum(dim=-1)
            filler_entropy += token_entropy.mean().item()
            filler_count += 1
    result = {"expected_reward": accuracy.mean().item(), "slot_accuracy": accuracy.mean(dim=0).tolist()}
    if entropy:
        result["filler_entropy"] = filler_entropy / max(filler_count, 1)
    return result
