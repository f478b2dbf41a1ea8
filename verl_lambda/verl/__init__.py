"""Everything of verl-lambda that talks to verl. Importing this package imports nothing.

Imports run one way, each module only from those above it:

* :mod:`~verl_lambda.verl.keys` — registry names, config paths, the public module paths (no verl);
* :mod:`~verl_lambda.verl.version` — the supported verl range, checked before verl is imported;
* :mod:`~verl_lambda.verl.estimator` — the ``grpo_lambda`` advantage estimator and its config reader;
* :mod:`~verl_lambda.verl.loss` — the ``grpo_lambda`` policy loss;
* :mod:`~verl_lambda.verl.register` — adds both to verl's registries on import: the ``verl.plugins``
  entry point and the ``VERL_USE_EXTERNAL_MODULES`` target;
* :mod:`~verl_lambda.verl.config` — :class:`GRPOLambdaLossConfig`, the loss's config class
  (``policy_loss._target_``); importing it registers the plugin (the ``_target_`` route).
"""
