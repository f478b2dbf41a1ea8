"""Adapters for RL frameworks without a plugin registry (installed as ``verl_lambda.patches``)."""
