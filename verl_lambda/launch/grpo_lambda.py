"""The launcher's GRPO-λ checks, and the worker modules that carry the plugin into Ray.

:func:`check_grpo_lambda` takes the composed config of ``verl.trainer.main_ppo`` and raises
:class:`~verl_lambda.cli.LaunchError` with one line that says what to change when the
``grpo_lambda`` estimator and loss are not switched on together (or the loss lacks its config
class), when ``algorithm.rollout_correction.bypass_mode`` would replace the loss, when a GRPO-λ
setting is out of range, when a group has fewer than 2 responses, or when the project's math reward
would run without math-verify. :func:`worker_modules` is the ``VERL_USE_EXTERNAL_MODULES`` value
every Ray worker gets.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verl_lambda.cli import LaunchError, one_line
from verl_lambda.core.settings import (
    ENV_PREFIX,
    AdvantageSettings,
    GRPOLambdaSettings,
    check_environment_names,
    env_var,
    nearest,
    setting_fields,
)
from verl_lambda.verl.estimator import advantage_settings, norm_adv_by_std
from verl_lambda.verl.keys import (
    ESTIMATOR_CONFIG_PATH,
    ESTIMATOR_NAME,
    LOSS_CONFIG_PATH,
    LOSS_NAME,
    MATH_REWARD,
    MODULES_ENV,
    REGISTER_MODULE,
    REGISTRATION_KEY,
    TARGET,
    config_key,
)
from verl_lambda.verl.version import FIRST_WITH_ENTRY_POINTS, installed_verl, loads_entry_points

__all__ = [
    "GRPOLambdaRun",
    "check_grpo_lambda",
    "worker_modules",
    "set_worker_modules",
    "check_job_environment",
    "write_settings",
    "environment_warnings",
]


@dataclass(frozen=True)
class GRPOLambdaRun:
    """The GRPO-λ settings a run will use: the loss's and the estimator's, merged.

    Each setting comes from the command line (or a config file), else from its ``GRPO_LAMBDA_<NAME>``
    environment variable, else from its default.
    """

    settings: GRPOLambdaSettings
    norm_adv_by_std: bool


_ABSENT = object()


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


# ----------------------------------------------------------------------------------------------
# Worker modules


_ENV_REFERENCE = re.compile(r"^\\?\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _module_list(text: str | None, environ: Mapping[str, str]) -> list[str]:
    """Module names of a comma list; a ``${VAR}`` item (Ray's syntax) is replaced by ``environ[VAR]``'s list."""
    modules = []
    for item in (text or "").split(","):
        item = item.strip()
        reference = _ENV_REFERENCE.match(item)
        if reference:
            modules += _module_list(environ.get(reference.group(1), ""), {})
        elif item:
            modules.append(item)
    return modules


def worker_modules(cfg: DictConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """Modules every Ray worker must import, each once, in this order: those of the driver's
    ``VERL_USE_EXTERNAL_MODULES``, those the command line puts into the Ray runtime env, and
    ``verl_lambda.verl.register``.

    A runtime-env ``env_vars`` entry *replaces* the variable a worker would inherit, so the value
    handed to verl must carry the driver's modules too.
    """
    environ = os.environ if environ is None else environ
    parent, name = REGISTRATION_KEY.rsplit(".", 1)
    node = OmegaConf.select(cfg, parent, default=None)
    raw = None if node is None else OmegaConf.to_container(node, resolve=False).get(name)
    listed = _module_list(environ.get(MODULES_ENV), {})
    listed += _module_list(None if raw is None else str(raw), environ)
    return list(dict.fromkeys([*listed, REGISTER_MODULE]))


def in_ray_job(environ: Mapping[str, str]) -> bool:
    """Whether this process is the driver of a ``ray job submit`` job."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in environ


def set_worker_modules(cfg: DictConfig, environ: Mapping[str, str] | None = None) -> None:
    """Set the Ray workers' ``VERL_USE_EXTERNAL_MODULES`` in ``cfg`` to :func:`worker_modules`.

    Inside a Ray job whose runtime env sets the variable, that value reaches every process of the
    job already, and Ray refuses a ``ray.init`` runtime env that sets it a second time ("Failed to
    merge the Job's runtime env"): the key is left out (one given on the command line is refused).
    """
    environ = os.environ if environ is None else environ
    if in_ray_job(environ) and MODULES_ENV in environ:
        if OmegaConf.select(cfg, REGISTRATION_KEY, default=None) is not None:
            raise LaunchError(
                f"{REGISTRATION_KEY} is set, but this Ray job's runtime env sets {MODULES_ENV} already and Ray "
                f"refuses it twice: drop the override and list the modules in the job's runtime env "
                "(--runtime-env=recipes/runtime_env.yaml)"
            )
        return
    OmegaConf.update(cfg, REGISTRATION_KEY, ",".join(worker_modules(cfg, environ)), force_add=True)


def check_job_environment(environ: Mapping[str, str], verl_version: str | None = None) -> list[str]:
    """Inside a ``ray job submit`` job whose env does not load the plugin: a warning where verl loads
    the package's entry point, a :class:`LaunchError` where it does not (verl < 0.9.0)."""
    if not in_ray_job(environ):
        return []
    if REGISTER_MODULE in _module_list(environ.get(MODULES_ENV), {}):
        return []
    missing = f"running as a Ray job without VERL_USE_EXTERNAL_MODULES={REGISTER_MODULE} in its runtime env"
    fix = "submit with --runtime-env=recipes/runtime_env.yaml"
    version = installed_verl() if verl_version is None else verl_version
    if not loads_entry_points(version):
        raise LaunchError(
            f"{missing}, and verl {version} loads no plugin entry points (from {FIRST_WITH_ENTRY_POINTS} on): "
            f"its workers would not know {ESTIMATOR_NAME}; {fix}"
        )
    return [f"{missing}: workers rely on the installed verl.plugins entry point ({fix})"]


# ----------------------------------------------------------------------------------------------
# GRPO-λ


def _uses_grpo_lambda(cfg: DictConfig) -> bool:
    estimator = _get(cfg, "algorithm.adv_estimator")
    loss_mode = _get(cfg, f"{LOSS_CONFIG_PATH}.loss_mode", "vanilla")
    target = _get(cfg, f"{LOSS_CONFIG_PATH}._target_")
    uses_estimator = estimator == ESTIMATOR_NAME
    uses_loss = loss_mode == LOSS_NAME or target == TARGET
    if not uses_estimator and not uses_loss:
        if _get(cfg, ESTIMATOR_CONFIG_PATH) is not None:
            raise LaunchError(
                f"{ESTIMATOR_CONFIG_PATH} is set but algorithm.adv_estimator is '{estimator}', which ignores it: "
                f"set algorithm.adv_estimator={ESTIMATOR_NAME} (with the GRPO-λ loss) or drop +{ESTIMATOR_CONFIG_PATH}"
            )
        return False
    if uses_estimator and not uses_loss:
        raise LaunchError(
            f"algorithm.adv_estimator={ESTIMATOR_NAME} needs the GRPO-λ loss, got {LOSS_CONFIG_PATH}.loss_mode="
            f"'{loss_mode}': set {LOSS_CONFIG_PATH}._target_={TARGET} {LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} "
            f"(for the clamp alone keep the pair and set +{LOSS_CONFIG_PATH}.lam=0)"
        )
    if uses_loss and not uses_estimator:
        raise LaunchError(
            f"{LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} needs algorithm.adv_estimator={ESTIMATOR_NAME}, got "
            f"'{estimator}': set algorithm.adv_estimator={ESTIMATOR_NAME} (for GRPO's unclamped advantages "
            f"add +{ESTIMATOR_CONFIG_PATH}.adv_clamp=null)"
        )
    if target != TARGET:
        raise LaunchError(
            f"{LOSS_CONFIG_PATH}.loss_mode={LOSS_NAME} needs its config class: set {LOSS_CONFIG_PATH}._target_={TARGET}"
        )
    return True


def _check_math_reward(cfg: DictConfig) -> None:
    if str(_get(cfg, "reward.custom_reward_function.path", "")) != MATH_REWARD:
        return
    if importlib.util.find_spec("math_verify") is None:
        raise LaunchError(
            f"reward.custom_reward_function.path={MATH_REWARD} scores answers with math-verify, which is not "
            "installed here: pip install 'verl-lambda[math]' (on every node)"
        )
    from verl_lambda.math.reward import check_settings, max_workers

    key = "reward.custom_reward_function.reward_kwargs"
    node = _get(cfg, key) or {}
    kwargs = OmegaConf.to_container(node) if OmegaConf.is_config(node) else dict(node)
    try:
        max_workers()
        check_settings(**{name: kwargs[name] for name in ("backend", "timeout") if name in kwargs})
    except ValueError as err:
        raise LaunchError(f"{key}.{err}" if str(err).startswith(("timeout", "backend")) else str(err)) from None


def _environment_settings(environ: Mapping[str, str]) -> list[str]:
    return sorted(k for k in environ if k.startswith(ENV_PREFIX) and k in {env_var(f.name) for f in setting_fields()})


def _check_loss_keys(cfg: DictConfig) -> None:
    """Every key under the loss's config node is a field of its config class (a typo would be a raw
    dataclass error in every actor worker); an estimator setting put there is told where it goes."""
    from verl_lambda.verl.config import GRPOLambdaLossConfig

    node = _get(cfg, LOSS_CONFIG_PATH)
    known = {f.name for f in dataclasses.fields(GRPOLambdaLossConfig)} | {"_target_"}
    for key in node.keys() if node is not None else ():
        if key in known:
            continue
        if key in {f.name for f in setting_fields(AdvantageSettings)}:
            raise LaunchError(
                f"{LOSS_CONFIG_PATH}.{key} is an estimator setting: set +{config_key(key)}=... instead "
                "(the estimator runs in the trainer's TaskRunner and reads only algorithm)"
            )
        keys = ", ".join(sorted(known))
        raise LaunchError(f"{LOSS_CONFIG_PATH}.{key} is not a key of {TARGET}{nearest(key, known)} (its keys: {keys})")


def check_grpo_lambda(cfg: DictConfig, environ: Mapping[str, str] | None = None) -> GRPOLambdaRun | None:
    """The run's GRPO-λ settings, or None when GRPO-λ is off; raises LaunchError (one line)."""
    environ = os.environ if environ is None else environ
    try:
        check_environment_names(environ)
    except ValueError as err:
        raise LaunchError(str(err)) from None
    _check_math_reward(cfg)
    if not _uses_grpo_lambda(cfg):
        return None
    if _get(cfg, "algorithm.rollout_correction.bypass_mode", False):
        raise LaunchError(
            "algorithm.rollout_correction.bypass_mode=true cannot run GRPO-λ: it swaps the policy loss for "
            "'bypass_mode' (legacy trainer) and takes old log-probs from the rollout engine; set "
            "algorithm.rollout_correction.bypass_mode=false"
        )
    _check_loss_keys(cfg)
    from verl.utils.config import omega_conf_to_dataclass

    try:  # the same conversion verl's validate_config and the actor workers do
        loss = omega_conf_to_dataclass(_get(cfg, LOSS_CONFIG_PATH))
    except Exception as err:  # Hydra wraps the dataclass's ValueError; show that line
        message = one_line(err)
        raise LaunchError(
            message if message.startswith(LOSS_CONFIG_PATH) else f"{LOSS_CONFIG_PATH}: {message}"
        ) from None
    try:
        advantage = advantage_settings(cfg.algorithm)
        norm = norm_adv_by_std(cfg.algorithm)
    except ValueError as err:
        raise LaunchError(one_line(err)) from None
    n = _get(cfg, "actor_rollout_ref.rollout.n", 1)
    if n < 2:
        raise LaunchError(
            f"actor_rollout_ref.rollout.n={n}: GRPO-λ normalises rewards within each prompt's group of responses, "
            "set actor_rollout_ref.rollout.n to 2 or more (the recipes use 8)"
        )
    from_config = GRPOLambdaSettings(loss=loss.loss_settings(), advantage=advantage).values()
    given = {f.name for f in setting_fields() if _get(cfg, config_key(f.name), _ABSENT) is not _ABSENT}
    variables = {
        var: environ[var] for var in _environment_settings(environ) if var[len(ENV_PREFIX) :].lower() not in given
    }
    try:
        settings = GRPOLambdaSettings.from_environment(
            variables, base=from_config, label=lambda name: f"{config_key(name)} (from {env_var(name)})"
        )
    except ValueError as err:
        raise LaunchError(str(err)) from None
    return GRPOLambdaRun(settings=settings, norm_adv_by_std=norm)


def environment_warnings(run: GRPOLambdaRun | None, environ: Mapping[str, str]) -> list[str]:
    """A warning when ``GRPO_LAMBDA_*`` settings are in the environment of a run without GRPO-λ."""
    ignored = _environment_settings(environ)
    if run is not None or not ignored:
        return []
    return [f"{', '.join(ignored)} set in the environment, but GRPO-λ is off in this run: ignored"]


def write_settings(cfg: DictConfig, run: GRPOLambdaRun) -> None:
    """State every GRPO-λ setting of ``run`` in ``cfg`` (at its config key), so the config verl gets
    (and logs) has them all, environment variables included."""
    for name, value in run.settings.values().items():
        OmegaConf.update(cfg, config_key(name), value, force_add=True)
