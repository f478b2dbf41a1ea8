"""verl-lambda: GRPO-λ (token-level credit assignment through eligibility traces) for verl.

The maths (:mod:`verl_lambda.core`: settings, trace, objective, group advantage) is plain torch and
imports no framework. verl glue lives in :mod:`verl_lambda.verl.config` and :mod:`verl_lambda.verl.register`;
importing either registers the ``grpo_lambda`` advantage estimator and policy loss with verl.
"""

__version__ = "0.1.0"
