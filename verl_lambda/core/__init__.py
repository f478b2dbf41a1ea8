"""The pure core of GRPO-λ: settings, trace, objective, advantage. Imports only torch.

* :mod:`verl_lambda.core.settings` — :class:`GRPOLambdaSettings`, every setting in one place;
* :mod:`verl_lambda.core.trace` — the eligibility trace (fast O(B·L) and slow reference);
* :mod:`verl_lambda.core.objective` — the per-token GRPO-λ loss and its diagnostics;
* :mod:`verl_lambda.core.advantage` — the clamped group-normalised outcome advantage.
"""
