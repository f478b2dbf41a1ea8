"""GRPO-λ in OpenRLHF 0.11.x (``verl_lambda.patches.openrlhf``).

* :mod:`~verl_lambda.patches.openrlhf.patch` — what runs inside OpenRLHF's Ray workers: the
  patched loss and advantage, switched on by :func:`apply` (Ray's ``worker_process_setup_hook``,
  ``"verl_lambda.patches.openrlhf.apply"``);
* :mod:`~verl_lambda.patches.openrlhf.launcher` — ``python -m verl_lambda.patches.openrlhf``, which checks the
  command line and starts OpenRLHF with that hook.
"""

from verl_lambda.patches.openrlhf.patch import active_settings, apply, patch_status, remove

__all__ = ["apply", "remove", "active_settings", "patch_status"]
