r"""Run OpenRLHF's PPO trainer with GRPO-λ (``python -m verl_lambda.patches.openrlhf``).

    python -m verl_lambda.patches.openrlhf [--lambda.<setting> VALUE ...] <openrlhf.cli.train_ppo_ray args>

The ``--lambda.*`` options (anywhere on the line) are taken out; every other argument goes to
OpenRLHF's ``openrlhf.cli.train_ppo_ray`` unchanged. There is one option per setting of
:class:`~verl_lambda.core.settings.GRPOLambdaSettings` (``--lambda.lam 0.99``, ``--lambda.trace both``,
``--lambda.adv_clamp none``, ...; ``--lambda.help`` lists them with their defaults), each also read
from its environment variable (``GRPO_LAMBDA_LAM``, ...); a flag wins over the variable. In order:

1. the settings are checked, and so are the OpenRLHF options GRPO-λ depends on
   (``--algo.advantage.estimator group_norm`` or ``dr_grpo``, ``--actor.policy_loss_type ppo``,
   KL as a loss term); then the installed OpenRLHF's version and the signatures of the methods
   the patches replace. Any problem ends the run here, before Ray starts, with one line on stderr
   and exit status 2;
2. OpenRLHF's CLI module runs as ``__main__`` (as ``python -m openrlhf.cli.train_ppo_ray`` would).
   When it starts Ray, its own ``runtime_env`` (its environment-variable defaults) is extended with
   ``worker_process_setup_hook="verl_lambda.patches.openrlhf.apply"`` and the GRPO-λ settings as
   environment variables, so every Ray worker patches OpenRLHF's loss and advantage code
   (see :mod:`verl_lambda.patches.openrlhf.patch`).

Dry run: ``--dry-run`` or ``VERL_LAMBDA_DRY_RUN=1`` runs steps 1 and 2 up to the point where
OpenRLHF would start Ray (so OpenRLHF's own parser and checks see the arguments), prints the
runtime environment Ray would get, and exits 0.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from verl_lambda.cli import LaunchError, command_main, dry_run
from verl_lambda.core.settings import GRPOLambdaSettings, check_environment_names, env_var, setting_fields
from verl_lambda.patches.openrlhf import patch

__all__ = [
    "OPENRLHF_CLI",
    "SETUP_HOOK",
    "FLAG_PREFIX",
    "split_lambda_args",
    "read_settings",
    "check_trainer_args",
    "runtime_env_additions",
    "merge_runtime_env",
    "main",
]

OPENRLHF_CLI = "openrlhf.cli.train_ppo_ray"
SETUP_HOOK = "verl_lambda.patches.openrlhf.apply"
FLAG_PREFIX = "--lambda."
PROG = "verl_lambda.patches.openrlhf"


def _flag(name: str) -> str:
    return FLAG_PREFIX + name


SWITCHES = ("help", "off")


def split_lambda_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str], set[str]]:
    """Take the ``--lambda.*`` options out of ``argv``.

    Returns ``(settings as strings, the other arguments in order, the switches given)``; the
    switches are ``--lambda.help`` and ``--lambda.off`` (OpenRLHF unpatched: the matched GRPO
    baseline). Accepts ``--lambda.x VALUE`` and ``--lambda.x=VALUE``.
    """
    names = [f.name for f in setting_fields()]
    raw: dict[str, str] = {}
    rest: list[str] = []
    switches: set[str] = set()
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith(FLAG_PREFIX):
            rest.append(token)
            i += 1
            continue
        name, eq, value = token[len(FLAG_PREFIX) :].partition("=")
        if name in SWITCHES:
            if eq:
                raise LaunchError(
                    f"{_flag(name)} takes no value, got {token}: give {_flag(name)} alone or leave it out"
                )
            switches.add(name)
            i += 1
            continue
        if name not in names:
            allowed = ", ".join(_flag(n) for n in (*names, *SWITCHES))
            raise LaunchError(f"unknown option {FLAG_PREFIX}{name}; GRPO-λ options are {allowed}")
        if not eq:
            if i + 1 >= len(argv):
                raise LaunchError(f"{_flag(name)} needs a value")
            value = argv[i + 1]
            i += 1
        raw[name] = value
        i += 1
    return raw, rest, switches


def read_settings(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[GRPOLambdaSettings, list[str], set[str]]:
    """Settings from ``GRPO_LAMBDA_*`` variables overridden by ``--lambda.*`` flags; raises LaunchError."""
    environ = os.environ if environ is None else environ
    flags, rest, switches = split_lambda_args(argv)
    try:
        check_environment_names(environ, also=(patch.ENV_ALLOW_UNTESTED,))
        from_environment = GRPOLambdaSettings.from_environment(environ)
        settings = GRPOLambdaSettings.from_strings(
            {**from_environment.to_strings(), **flags}, {name: _flag(name) for name in flags}
        )
    except ValueError as err:
        raise LaunchError(str(err)) from None
    return settings, rest, switches


def _option(args: Sequence[str], name: str) -> tuple[bool, str | None]:
    """(present, last value) of an OpenRLHF option given as ``--name V`` or ``--name=V``."""
    present, value = False, None
    for i, token in enumerate(args):
        if token == name:
            present = True
            value = args[i + 1] if i + 1 < len(args) else None
        elif token.startswith(name + "="):
            present, value = True, token[len(name) + 1 :]
    return present, value


def check_trainer_args(args: Sequence[str]) -> None:
    """Refuse OpenRLHF options GRPO-λ cannot run with (:func:`~verl_lambda.patches.openrlhf.patch.check_trainer_options`
    on the command line; OpenRLHF checks the rest itself)."""
    defaults = patch.OPENRLHF_DEFAULTS
    _, estimator = _option(args, "--algo.advantage.estimator")
    _, loss_type = _option(args, "--actor.policy_loss_type")
    kl_loss, _ = _option(args, "--algo.kl.use_loss")
    _, init_coef = _option(args, "--algo.kl.init_coef")
    try:
        kl_coef = defaults["kl_coef"] if init_coef is None else float(init_coef)
    except ValueError:
        kl_coef = None  # OpenRLHF's own parser reports it
    try:
        patch.check_trainer_options(
            estimator=estimator or defaults["estimator"],
            policy_loss_type=loss_type or defaults["policy_loss_type"],
            kl_use_loss=kl_loss,
            kl_coef=kl_coef,
        )
    except ValueError as err:
        raise LaunchError(str(err)) from None


def runtime_env_additions(settings: GRPOLambdaSettings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the launcher adds to OpenRLHF's Ray ``runtime_env``."""
    environ = os.environ if environ is None else environ
    env_vars = patch.settings_to_env(settings)
    if patch.ENV_ALLOW_UNTESTED in environ:
        env_vars[patch.ENV_ALLOW_UNTESTED] = environ[patch.ENV_ALLOW_UNTESTED]
    return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env_vars}


def merge_runtime_env(base: Mapping[str, Any] | None, additions: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (OpenRLHF's runtime_env) with ``additions``: env vars merged, a different setup hook refused."""
    merged = dict(base or {})
    hook = merged.get("worker_process_setup_hook")
    if hook is not None and hook != additions["worker_process_setup_hook"]:
        raise RuntimeError(
            f"OpenRLHF's runtime_env already has worker_process_setup_hook={hook!r}; "
            f"GRPO-λ needs {additions['worker_process_setup_hook']!r}"
        )
    merged["worker_process_setup_hook"] = additions["worker_process_setup_hook"]
    merged["env_vars"] = {**dict(merged.get("env_vars") or {}), **additions["env_vars"]}
    return merged


def _usage() -> str:
    lines = [f"usage: python -m {PROG} [{FLAG_PREFIX}SETTING VALUE ...] <{OPENRLHF_CLI} arguments>", ""]
    defaults = GRPOLambdaSettings().to_strings()
    for f in setting_fields():
        lines.append(f"  {_flag(f.name):<26} {f.metadata['help']}")
        lines.append(
            f"  {'':<26} default {defaults[f.name]}, {f.metadata['allowed'].describe('none')} (env {env_var(f.name)})"
        )
    lines.append(f"  {_flag('off'):<26} run OpenRLHF unpatched (the matched GRPO baseline)")
    lines.append(f"\nOpenRLHF's own options: python -m {OPENRLHF_CLI} --help")
    return "\n".join(lines)


class _DryRunDone(Exception):
    pass


def _run_openrlhf(args: Sequence[str]) -> None:
    """Run OpenRLHF's CLI module as ``__main__`` with ``args`` as its command line."""
    saved_argv = sys.argv
    sys.argv = [OPENRLHF_CLI, *args]
    try:
        runpy.run_module(OPENRLHF_CLI, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved_argv


def _launch(argv: Sequence[str] | None) -> int:
    is_dry_run, argv = dry_run(list(sys.argv[1:] if argv is None else argv))
    settings, rest, switches = read_settings(argv)
    if "help" in switches:
        print(_usage())
        return 0
    if "-h" in rest or "--help" in rest:  # OpenRLHF's own help, after ours
        print(_usage() + "\n", flush=True)
        _run_openrlhf(rest)
        return 0
    try:
        if "off" in switches:
            patch.import_openrlhf()
        else:
            check_trainer_args(rest)
            version = patch.check_openrlhf()
    except patch.UnsupportedOpenRLHF as err:
        raise LaunchError(str(err)) from None
    except ImportError as err:
        raise LaunchError(f"cannot import OpenRLHF's trainer modules: {err}") from None
    if "off" in switches:
        print(f"{PROG}: GRPO-λ off (--lambda.off): OpenRLHF runs unpatched", flush=True)
        additions = None
    else:
        described = " ".join(f"{k}={v}" for k, v in settings.to_strings().items())
        print(f"{PROG}: GRPO-λ {described} (openrlhf {version})", flush=True)
        additions = runtime_env_additions(settings)

    import ray

    if ray.is_initialized():
        raise LaunchError("Ray is already running in this process; the launcher must start it")
    real_init = ray.init

    def init(*args: Any, **kwargs: Any):
        if additions is not None:
            kwargs["runtime_env"] = merge_runtime_env(kwargs.get("runtime_env"), additions)
        if is_dry_run:
            print(f"{PROG}: dry run: OpenRLHF accepted its arguments; Ray would start with runtime_env="
                  f"{json.dumps(kwargs.get('runtime_env'), sort_keys=True)}", flush=True)  # fmt: skip
            raise _DryRunDone
        return real_init(*args, **kwargs)

    ray.init = init
    try:
        _run_openrlhf(rest)
    except _DryRunDone:
        return 0
    finally:
        ray.init = real_init
    if is_dry_run:
        print(f"{PROG}: error: dry run: OpenRLHF ended without starting Ray", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Check everything, then run OpenRLHF's trainer with the GRPO-λ patches in its Ray workers.

    Dry run (``--dry-run`` or ``VERL_LAMBDA_DRY_RUN=1``): OpenRLHF's CLI still parses and checks
    its arguments, but the launch stops where it would start Ray; exit status 0 when all passed.
    """
    return command_main(PROG, lambda: _launch(argv))


if __name__ == "__main__":
    raise SystemExit(main())
