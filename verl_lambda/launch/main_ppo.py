"""``python -m verl_lambda.launch.main_ppo``: verl's ``main_ppo`` with GRPO-λ checked before Ray starts.

Takes the arguments of ``python -m verl.trainer.main_ppo`` (the same config tree, Hydra overrides,
``--config-name ppo_megatron_trainer`` or ``model_engine=megatron``, ``--config-path``,
``--config-dir``) and then, composing the config once:

1. sets ``ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES`` to the modules of
   the driver's ``VERL_USE_EXTERNAL_MODULES``, those already listed under that key, and
   ``verl_lambda.verl.register`` (each once), so every Ray process registers the plugin and keeps the
   user's own extensions (a runtime-env variable replaces the one a worker would inherit);
2. checks the config as a whole (:func:`verl_lambda.launch.checks.check_launch`), states every
   GRPO-λ setting in it (environment variables included) and runs verl's own ``validate_config``;
   any problem ends the launch with one line on stderr and exit status 2;
3. prints the resolved GRPO-λ settings and the effective batch / length numbers;
4. hands that very config object to verl's ``main_ppo.main`` (Hydra's config pass-through: nothing
   is composed again) — or, in a dry run, exits 0 without starting Ray.

Dry run: ``--dry-run`` or ``VERL_LAMBDA_DRY_RUN=1``; works on a CPU-only machine.
``--save-config PATH`` writes the composed config, interpolations resolved, as YAML before launching.
Hydra's own run modes (``--multirun``, ``--cfg``, ``--info``, ...) are refused in one line: a launch
is one checked job. The config is not written to a Hydra output folder; ``--save-config`` writes it.

A ``+key=value`` for a key that an earlier argument already set overrides it (plain Hydra would
refuse), so ``bash recipes/<recipe>.sh +actor_rollout_ref.actor.policy_loss.lam=0.9`` works.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from verl_lambda.cli import DRY_RUN_ENV, DRY_RUN_FLAG, LaunchError, command_main, env_flag, one_line
from verl_lambda.core.settings import nearest

__all__ = ["PROG", "main", "compose_config", "parse_args", "check_command_line", "LaunchArgs", "CheckedLaunch"]

PROG = "verl_lambda.launch.main_ppo"
_VLLM_SHIM = os.path.join("verl", "third_party", "vllm")
_VALUE_FLAGS = {
    "--config-name": "config_name",
    "-cn": "config_name",
    "--config-path": "config_path",
    "-cp": "config_path",
    "--config-dir": "config_dir",
    "-cd": "config_dir",
}
_HELP_FLAGS = ("--help", "-h")
USAGE = (
    f"usage: python -m {PROG} [--dry-run] [--save-config PATH] [--config-name NAME] [--config-path DIR] "
    "[--config-dir DIR] [key=value ...]\n"
    "The arguments of python -m verl.trainer.main_ppo (one job), checked before Ray starts; "
    f"{DRY_RUN_FLAG} (or {DRY_RUN_ENV}=1) composes and checks only. See docs/grpo_lambda.md."
)


@dataclass
class LaunchArgs:
    """The command line split into what the launcher reads and the Hydra overrides."""

    overrides: list[str] = field(default_factory=list)
    config_name: str = "ppo_trainer"
    config_path: str | None = None
    config_dir: str | None = None
    dry_run: bool = False
    save_config: str | None = None
    help: bool = False


def _override_key(arg: str) -> str:
    return arg.lstrip("~+").split("=", 1)[0]


def parse_args(argv: Sequence[str]) -> LaunchArgs:
    """Split ``argv``; a later ``+key=...`` of an already set key becomes ``++key=...``. Any other
    flag (Hydra's ``--multirun``, ``--cfg``, ...) is a :class:`LaunchError`."""
    args = LaunchArgs()
    seen: set[str] = set()
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        flag, eq, value = arg.partition("=")
        if flag in _VALUE_FLAGS or flag == "--save-config":
            if not eq:  # "--flag value"
                if i + 1 == len(items):
                    raise LaunchError(f"{flag} needs a value")
                i += 1
                value = items[i]
            if flag == "--save-config":
                args.save_config = value
            else:
                setattr(args, _VALUE_FLAGS[flag], value)
        elif arg == DRY_RUN_FLAG:
            args.dry_run = True
        elif arg in _HELP_FLAGS:
            args.help = True
        elif arg.startswith("-"):  # overrides never start with "-"
            own = [*_VALUE_FLAGS, "--save-config", DRY_RUN_FLAG, *_HELP_FLAGS]
            guess = nearest(flag, [f for f in own if f.startswith("--")]) if flag.startswith("--") else ""
            raise LaunchError(
                f"{arg}: {PROG} launches one checked job and takes no other flag{guess} (Hydra's --multirun, --cfg, "
                f"--info, ... are refused: run one command per job; {DRY_RUN_FLAG} --save-config PATH writes the "
                "composed config)"
            )
        else:
            key = _override_key(arg)
            if arg.startswith("+") and not arg.startswith("++") and key in seen:
                arg = "+" + arg
            seen.add(key)
            args.overrides.append(arg)
        i += 1
    return args


def _verl_trainer_dir() -> str:
    import verl.trainer

    return os.path.dirname(os.path.abspath(verl.trainer.__file__))


def compose_config(args: LaunchArgs):
    """Compose the config verl's ``main_ppo`` would receive for ``args`` (no Ray, no GPU)."""
    from hydra import compose, initialize_config_dir

    trainer_dir = _verl_trainer_dir()
    if args.config_path is None:
        config_dir = os.path.join(trainer_dir, "config")
    else:  # Hydra reads a relative --config-path from the directory of verl's main_ppo.py
        config_dir = os.path.join(trainer_dir, os.path.expanduser(args.config_path))
    overrides = list(args.overrides)
    if args.config_dir:
        overrides.append(f"hydra.searchpath=[file://{os.path.abspath(os.path.expanduser(args.config_dir))}]")
    with initialize_config_dir(config_dir=os.path.abspath(config_dir), version_base=None, job_name="main_ppo"):
        return compose(config_name=args.config_name, overrides=overrides)


def _run_verl_validate(cfg) -> str:
    """verl's own ``validate_config``; returns what happened (raises LaunchError on a bad config)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        with warnings.catch_warnings():  # need_critic's "Disabled critic" notice; verl's main repeats it
            warnings.simplefilter("ignore", UserWarning)
            use_critic = need_critic(cfg)
        with contextlib.redirect_stdout(io.StringIO()):  # its "[validate_config] ... passed" print: our line says it
            validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=use_critic)
    except Exception as err:
        # verl's LoRA checks import vLLM (verl.third_party.vllm raises when it is absent): on a machine
        # without the rollout engine, such as a CPU laptop or a head node, that part cannot run here.
        frames = [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
        if isinstance(err, ImportError) or any(_VLLM_SHIM in name for name in frames):
            return f"partly skipped on this machine ({one_line(err)})"
        raise LaunchError(f"verl validate_config: {one_line(err)}") from None
    return "passed"


def _save_config(cfg, path_text: str) -> str:
    from omegaconf import OmegaConf

    path = os.path.abspath(os.path.expanduser(path_text))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        OmegaConf.save(cfg, path, resolve=True)
    except OSError as err:
        raise LaunchError(f"--save-config {path_text}: cannot write it ({err.strerror or err})") from None
    return path


@dataclass
class CheckedLaunch:
    """A composed and checked config with what the launcher prints about it."""

    args: LaunchArgs
    cfg: object
    lines: list[str]
    verl_check: str


def check_command_line(argv: Sequence[str], dry_run: bool = False) -> CheckedLaunch:
    """Parse, compose (once) and check the ``main_ppo`` command line ``argv``; raises :class:`LaunchError`.

    The returned config states the workers' modules and every GRPO-λ setting."""
    from verl_lambda.verl.version import UnsupportedVerl, check_verl_version

    try:
        check_verl_version()
    except UnsupportedVerl as err:
        raise LaunchError(str(err)) from None
    args = parse_args(argv)
    # This process only composes and checks (the GPUs are used by Ray workers): without this filter,
    # verl's accelerator probe warns about a missing GPU on CPU-only machines and head nodes.
    logging.getLogger("verl.plugin.platform.platform_manager").addFilter(lambda record: record.levelno >= logging.ERROR)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from verl_lambda.launch.checks import check_launch
    from verl_lambda.launch.grpo_lambda import set_worker_modules, write_settings
    from verl_lambda.launch.summary import summary_lines

    try:
        try:
            from verl.utils.device import auto_set_device

            cfg = compose_config(args)
            set_worker_modules(cfg)
            auto_set_device(cfg)
            report = check_launch(cfg, dry_run=dry_run or args.dry_run)
            if report.grpo_lambda is not None:
                write_settings(cfg, report.grpo_lambda)
            verl_check = _run_verl_validate(cfg)
        except (HydraException, OmegaConfBaseException) as err:  # unknown keys, bad override syntax, ...
            raise LaunchError(one_line(err)) from None
        lines = summary_lines(cfg, report.shape, report.grpo_lambda, report.warnings)
    except LaunchError:
        raise
    except Exception as err:  # a check that met a config it did not expect: still one line, never a traceback
        raise LaunchError(f"could not check the config ({type(err).__name__}: {one_line(err)})") from None
    return CheckedLaunch(args=args, cfg=cfg, lines=lines, verl_check=verl_check)


def _launch(argv: Sequence[str]) -> int:
    if any(arg in _HELP_FLAGS for arg in argv):
        print(USAGE)
        return 0
    checked = check_command_line(argv, dry_run=env_flag(DRY_RUN_ENV))
    args = checked.args
    dry_run = args.dry_run or env_flag(DRY_RUN_ENV)
    config_name = args.config_name + ("" if args.config_dir is None else f" (+ {args.config_dir})")
    print(f"[{PROG}] config {config_name}, {len(args.overrides)} overrides")
    for line in checked.lines:
        print(f"[{PROG}] {line}")
    print(f"[{PROG}] verl validate_config: {checked.verl_check}")
    if args.save_config:
        print(f"[{PROG}] resolved config written to {_save_config(checked.cfg, args.save_config)}")
    if dry_run:
        print(f"[{PROG}] dry run: config composed and checked, Ray not started")
        return 0
    return _run_verl(checked.cfg)


def _run_verl(cfg) -> int:
    """verl's ``main_ppo.main`` on ``cfg`` itself (Hydra's pass-through: no second composition)."""
    import verl.trainer.main_ppo as verl_main_ppo

    from verl_lambda.verl.register import check_registered

    try:
        check_registered()
    except RuntimeError as err:
        raise LaunchError(str(err)) from None
    verl_main_ppo.main(cfg)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    return command_main(PROG, lambda: _launch(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
