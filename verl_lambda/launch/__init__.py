"""``python -m verl_lambda.launch.main_ppo``: verl's ``main_ppo`` with GRPO-λ checked before Ray starts.

* :mod:`verl_lambda.launch.main_ppo` — the launcher: compose the config once, check it, run verl;
* :mod:`verl_lambda.launch.checks` — every check of a composed config (:func:`check_launch`);
* :mod:`verl_lambda.launch.preflight` — general verl checks (types, sizes, budgets, files);
* :mod:`verl_lambda.launch.grpo_lambda` — the GRPO-λ checks and the worker modules;
* :mod:`verl_lambda.launch.summary` — the printed summary.

Importing this package imports nothing.
"""
