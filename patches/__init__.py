"""Adapters for RL frameworks without a plugin registry.

This folder sits at the top of the repository and installs as ``verl_lambda.patches``: the mapping
is written once, in ``pyproject.toml`` (``[tool.setuptools.package-dir]``); inside the package and
in every import it is ``verl_lambda.patches``. One folder per framework:
:mod:`verl_lambda.patches.openrlhf` (``python -m verl_lambda.patches.openrlhf``).
"""
