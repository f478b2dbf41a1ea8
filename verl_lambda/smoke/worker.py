"""What every process of a harness run imports: ``VERL_USE_EXTERNAL_MODULES=verl_lambda.smoke.worker``.

In a process whose environment marks it as part of a harness run (:data:`HARNESS_ENV`, set by
:func:`verl_lambda.smoke.harness.harness_env`: ``fsdp`` or ``megatron``), importing this module

* installs the CPU pieces: the ``cpu`` platform (:func:`verl_lambda.smoke.platform.install`), the
  ``hf`` rollout (:mod:`verl_lambda.smoke.rollout`, by module path) and, for ``megatron``, megatron-core on
  a CPU (:func:`verl_lambda.smoke.megatron_cpu.apply`);
* in the driver of a plain ``python -m verl.trainer.main_ppo`` (a command that does not go through
  ``python -m verl_lambda.launch.main_ppo``), runs the launcher's checks on that command line
  first: a command the launcher would refuse ends there, before Ray starts, with the launcher's one
  line and exit status 2 (the line is also written to :data:`REFUSAL_ENV`'s file, for the smoke
  command to repeat).

Anywhere else importing it changes nothing: torch and verl are patched only inside the processes of
a harness run, never by importing the package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["HARNESS_ENV", "ENGINES", "REFUSAL_ENV", "ROLLOUT_NAME", "plain_verl_arguments", "install"]

#: marks a process as part of a harness run; its value is the engine (one of :data:`ENGINES`)
HARNESS_ENV = "VERL_LAMBDA_HARNESS"
ENGINES = ("fsdp", "megatron")
#: a file the driver writes the launcher's refusal to (one line)
REFUSAL_ENV = "VERL_LAMBDA_HARNESS_REFUSAL"
_VERL_MAIN = "verl.trainer.main_ppo"


def plain_verl_arguments(argv: Sequence[str] | None = None) -> list[str] | None:
    """The overrides of a ``python [-X ...] -m verl.trainer.main_ppo ARGS`` (or ``python .../verl/trainer/main_ppo.py
    ARGS``) interpreter command line ``argv`` (default: this process's), or None for any other program."""
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "-m":
            return argv[i + 2 :] if argv[i + 1 : i + 2] == [_VERL_MAIN] else None
        if word == "-c":
            return None
        if word in ("-X", "-W"):  # interpreter options that take a value
            i += 2
            continue
        if not word.startswith("-"):  # the script
            path = word.replace(os.sep, "/")
            return argv[i + 1 :] if path.endswith("verl/trainer/main_ppo.py") else None
        i += 1
    return None


def _check_plain_verl_command(args: list[str]) -> None:
    from verl_lambda.cli import LaunchError, one_line
    from verl_lambda.launch.main_ppo import PROG, check_command_line

    try:
        check_command_line(args)
    except LaunchError as err:
        line = f"{PROG}: error: {one_line(err)}"
        print(line, file=sys.stderr, flush=True)
        refusal = os.environ.get(REFUSAL_ENV)
        if refusal:
            with open(refusal, "w", encoding="utf-8") as f:
                f.write(line + "\n")
        os._exit(2)  # inside verl's own import: nothing else may run


#: ``actor_rollout_ref.rollout.name`` of the transformers rollout (:mod:`verl_lambda.smoke.rollout`)
ROLLOUT_NAME = "hf"
_ROLLOUT_MODULE = "verl_lambda.smoke.rollout"


def _register_hf_rollout() -> None:
    """verl's ``hf`` rollout name -> :mod:`verl_lambda.smoke.rollout`, by module path: a Ray worker
    that unpickles one of its classes imports that module first, and it imports verl, which imports
    this one, so nothing here may need it imported already."""
    import importlib

    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: importlib.import_module(_ROLLOUT_MODULE).HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{_ROLLOUT_MODULE}.HFServerAdapter"


def install(engine: str | None = None) -> None:
    """Install the CPU pieces for ``engine`` (default: this process's :data:`HARNESS_ENV`) in this process."""
    engine = os.environ.get(HARNESS_ENV) if engine is None else engine
    if engine not in ENGINES:
        raise ValueError(f"{HARNESS_ENV} must be one of {list(ENGINES)}, got {engine!r}")
    from verl_lambda.smoke import platform

    platform.install()
    _register_hf_rollout()
    if engine == "megatron":
        from verl_lambda.smoke import megatron_cpu

        megatron_cpu.apply()


if os.environ.get(HARNESS_ENV):
    install()
    _args = plain_verl_arguments()
    if _args is not None:
        _check_plain_verl_command(_args)
