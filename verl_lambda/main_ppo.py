"""``python -m verl_lambda.main_ppo``: verl's ``main_ppo`` with GRPO-λ checked before Ray starts.

Takes exactly the arguments of ``python -m verl.trainer.main_ppo`` (same config tree, Hydra
overrides, ``--config-name ppo_megatron_trainer`` or ``model_engine=megatron``) and then:

1. composes the config with Hydra and sets
   ``ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES`` to the modules of the
   driver's ``VERL_USE_EXTERNAL_MODULES``, those already listed under that key, and
   ``verl_lambda.register`` (each once), so every Ray process registers the plugin and keeps the
   user's own extensions (a runtime-env variable replaces the one a worker would inherit);
2. checks it as a whole (:func:`verl_lambda.launch.check_launch`) and runs verl's own
   ``validate_config``; any problem ends the launch with one line on stderr and exit status 2;
3. prints the resolved GRPO-λ settings and the effective batch / length numbers;
4. hands the same arguments to ``verl.trainer.main_ppo.main`` — or, in a dry run, exits 0
   without starting Ray.

Dry run: ``--dry-run`` or ``VERL_LAMBDA_DRY_RUN=1``; works on a CPU-only machine.
``--save-config PATH`` writes the composed config, interpolations resolved, as YAML before launching.

A ``+key=value`` for a key that an earlier argument already set overrides it (plain Hydra would
refuse), so ``bash recipes/<recipe>.sh +actor_rollout_ref.actor.policy_loss.lam=0.9`` works.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from verl_lambda.cli import DRY_RUN_ENV, DRY_RUN_FLAG, LaunchError, env_flag, fail, one_line

__all__ = ["main", "compose_config", "parse_args", "LaunchArgs"]

PROG = "verl_lambda.main_ppo"
_VLLM_SHIM = os.path.join("verl", "third_party", "vllm")
_VALUE_FLAGS = {
    "--config-name": "config_name",
    "-cn": "config_name",
    "--config-path": "config_path",
    "-cp": "config_path",
    "--config-dir": "config_dir",
    "-cd": "config_dir",
}


@dataclass
class LaunchArgs:
    """The command line split into what the launcher reads and what goes to verl."""

    overrides: list[str] = field(default_factory=list)
    config_name: str = "ppo_trainer"
    config_path: str | None = None
    config_dir: str | None = None
    dry_run: bool = False
    save_config: str | None = None
    hydra_flags: list[str] = field(default_factory=list)  # --help, --cfg, --multirun, ...: straight to verl
    passthrough: list[str] = field(default_factory=list)  # argv without the launcher's own flags, as given

    def verl_argv(self) -> list[str]:
        """Arguments for verl's Hydra main (without the launcher's own flags)."""
        if self.hydra_flags:  # not composed here: hand everything over in its original order
            return list(self.passthrough)
        argv = []
        for name, flag in (
            ("config_name", "--config-name"),
            ("config_path", "--config-path"),
            ("config_dir", "--config-dir"),
        ):
            value = getattr(self, name)
            if value is not None and not (name == "config_name" and value == "ppo_trainer"):
                argv.append(f"{flag}={value}")
        return argv + self.hydra_flags + self.overrides


def _override_key(arg: str) -> str:
    return arg.lstrip("~+").split("=", 1)[0]


def parse_args(argv: Sequence[str]) -> LaunchArgs:
    """Split ``argv``; a later ``+key=...`` of an already set key becomes ``++key=...``."""
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
                args.passthrough += [flag, value]
        elif arg == DRY_RUN_FLAG:
            args.dry_run = True
        elif arg.startswith("-"):  # other Hydra flags (--help, --cfg, --multirun, ...); overrides never start with "-"
            args.hydra_flags.append(arg)
            args.passthrough.append(arg)
        else:
            key = _override_key(arg)
            if arg.startswith("+") and not arg.startswith("++") and key in seen:
                arg = "+" + arg
            seen.add(key)
            args.overrides.append(arg)
            args.passthrough.append(arg)
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
        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=use_critic)
    except Exception as err:
        # verl's LoRA checks import vLLM (verl.third_party.vllm raises when it is absent): on a machine
        # without the rollout engine, such as a CPU laptop or a head node, that part cannot run here.
        frames = [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
        if isinstance(err, ImportError) or any(_VLLM_SHIM in name for name in frames):
            return f"partly skipped on this machine ({one_line(err)})"
        raise LaunchError(f"verl validate_config: {one_line(err)}") from None
    return "passed"


def _add_override(args: LaunchArgs, cfg, override: str) -> None:
    """Append ``++key=value`` to what verl gets, and set the value Hydra parses from it in ``cfg``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parsed = OverridesParser.create().parse_override(override)
    args.overrides.append(override)
    OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), force_add=True)


def _save_config(cfg, path_text: str) -> str:
    from omegaconf import OmegaConf

    path = os.path.abspath(os.path.expanduser(path_text))
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        OmegaConf.save(cfg, path, resolve=True)
    except OSError as err:
        raise LaunchError(f"--save-config {path_text}: cannot write it ({err.strerror or err})") from None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except LaunchError as err:
        return fail(PROG, str(err))


def _main(argv: Sequence[str]) -> int:
    from verl_lambda.verl_version import UnsupportedVerl, check_verl_version

    try:
        check_verl_version()
    except UnsupportedVerl as err:
        raise LaunchError(str(err)) from None
    args = parse_args(argv)
    dry_run = args.dry_run or env_flag(DRY_RUN_ENV)
    if args.hydra_flags:
        if dry_run:
            raise LaunchError(f"a dry run composes one config; drop the Hydra flag {args.hydra_flags[0]}")
        return _delegate(args)

    # This process only composes and checks (the GPUs are used by Ray workers): without this filter,
    # verl's accelerator probe warns about a missing GPU on CPU-only machines and head nodes.
    logging.getLogger("verl.plugin.platform.platform_manager").addFilter(lambda record: record.levelno >= logging.ERROR)

    from verl_lambda.launch.summary import summary_lines

    try:
        cfg, report, verl_check = _compose_and_check(args, dry_run)
        lines = summary_lines(cfg, report.shape, report.grpo_lambda, report.warnings)
    except LaunchError:
        raise
    except Exception as err:  # a check that met a config it did not expect: still one line, never a traceback
        raise LaunchError(f"could not check the config ({type(err).__name__}: {one_line(err)})") from None

    config_name = args.config_name + ("" if args.config_dir is None else f" (+ {args.config_dir})")
    print(f"[{PROG}] config {config_name}, {len(args.overrides)} overrides")
    for line in lines:
        print(f"[{PROG}] {line}")
    print(f"[{PROG}] verl validate_config: {verl_check}")
    if args.save_config:
        print(f"[{PROG}] resolved config written to {_save_config(cfg, args.save_config)}")
    if dry_run:
        print(f"[{PROG}] dry run: config composed and checked, Ray not started")
        return 0
    return _delegate(args)


def _compose_and_check(args: LaunchArgs, dry_run: bool):
    """Compose the config, add the worker modules and every GRPO-λ setting, run all checks."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from verl.utils.device import auto_set_device

    from verl_lambda import launch
    from verl_lambda.launch.grpo_lambda import registration_override, setting_overrides

    try:
        cfg = compose_config(args)
        _add_override(args, cfg, registration_override(cfg))  # the merged worker modules
        auto_set_device(cfg)
        report = launch.check_launch(cfg, dry_run=dry_run)
        for override in setting_overrides(report.grpo_lambda) if report.grpo_lambda else []:
            _add_override(args, cfg, override)  # every GRPO-λ setting stated in the config verl gets
        verl_check = _run_verl_validate(cfg)
    except (HydraException, OmegaConfBaseException) as err:  # unknown keys, bad override syntax, ...
        raise LaunchError(one_line(err)) from None
    return cfg, report, verl_check


def _delegate(args: LaunchArgs) -> int:
    """Hand the arguments to ``verl.trainer.main_ppo.main`` (Hydra reads them from sys.argv)."""
    import verl.trainer.main_ppo as verl_main_ppo

    from verl_lambda.register import check_registered

    try:
        check_registered()
    except RuntimeError as err:
        raise LaunchError(str(err)) from None
    sys.argv = [verl_main_ppo.__file__, *args.verl_argv()]
    verl_main_ppo.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
