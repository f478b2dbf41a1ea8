"""The pure core of GRPO-λ: settings, choices, trace, objective, advantage. Imports only torch.

* :mod:`verl_lambda.core.settings` — every setting in one place: :class:`LossSettings` (read by the
  loss), :class:`AdvantageSettings` (read by the estimator) and :class:`GRPOLambdaSettings` (both);
* :mod:`verl_lambda.core.choices` — one table per closed choice (trace style, anchor, application,
  norm) and the weight w(t, j) of every style × anchor;
* :mod:`verl_lambda.core.trace` — the eligibility trace (fast O(B·L) and slow reference);
* :mod:`verl_lambda.core.objective` — the per-token GRPO-λ loss and its diagnostics;
* :mod:`verl_lambda.core.advantage` — the clamped group-normalised outcome advantage.
"""
