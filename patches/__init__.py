"""Adapters for RL frameworks without a plugin registry (installed as ``verl_lambda.patches``).

One folder per framework: :mod:`verl_lambda.patches.openrlhf`.
"""
