"""A CPU harness for verl's real trainer, and the ``verl-lambda smoke`` check built on it.

verl 0.9.1 cannot train without an accelerator: it has no CPU platform, its rollouts are vLLM /
SGLang / TRT-LLM servers and its resource pool asks Ray for GPUs. The modules here fill exactly
those gaps, so that ``python -m verl.trainer.main_ppo`` (or ``python -m verl_lambda.launch.main_ppo``)
runs one or two real training steps of a tiny model on a laptop:

* :mod:`verl_lambda.smoke.platform` — a ``cpu`` platform in verl's platform registry
  (selected with ``VERL_PLATFORM=cpu``);
* :mod:`verl_lambda.smoke.rollout` — an ``hf`` rollout (``actor_rollout_ref.rollout.name=hf``)
  that generates with transformers;
* :mod:`verl_lambda.smoke.assets` — a tiny random Llama, a character tokenizer and a tiny
  verifiable dataset, built locally (nothing is downloaded);
* :mod:`verl_lambda.smoke.reward` — a toy reward that is not always 0 for a random model;
* :mod:`verl_lambda.smoke.harness` — the overrides, environment and process handling of a run;
* :mod:`verl_lambda.smoke.cli` — ``verl-lambda smoke -- <your training command>``.

Ray workers import the first two through ``VERL_USE_EXTERNAL_MODULES`` (see
:data:`verl_lambda.smoke.harness.HARNESS_MODULES`). Every module is written against verl 0.9.1's
internals and refuses any other verl version (:func:`require_supported_verl`).
"""

from __future__ import annotations

from verl_lambda.verl.version import UnsupportedVerl, check_verl_version

#: the only verl the harness is written against (it patches verl internals)
SUPPORTED_VERL = "==0.9.1"

__all__ = ["SUPPORTED_VERL", "UnsupportedVerl", "require_supported_verl"]


def require_supported_verl(module: str) -> None:
    """Raise :class:`~verl_lambda.verl.version.UnsupportedVerl` (one line naming the supported
    version) unless verl is 0.9.1; ``module`` names the harness module that asks."""
    check_verl_version(supported=SUPPORTED_VERL, who=f"{module} (it patches verl internals)")
