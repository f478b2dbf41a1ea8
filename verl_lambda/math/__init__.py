"""The math task of the recipes: data, reward and results table. Importing this package imports nothing.

* :mod:`verl_lambda.math.data` — ``python -m verl_lambda.math.data``: math sets to verl parquet;
* :mod:`verl_lambda.math.reward` — the boxed-answer reward (``reward.custom_reward_function.path=
  pkg://verl_lambda.math.reward``), scored by math-verify;
* :mod:`verl_lambda.math.eval` — ``python -m verl_lambda.math.eval``: validation metrics to a results table.
"""
