r"""GRPO-λ inside OpenRLHF 0.11.x, without forking it (``verl_lambda.patches.openrlhf.patch``).

OpenRLHF has no registry for advantage estimators or policy losses, so this module replaces two
methods on OpenRLHF's classes while GRPO-λ is switched on:

* ``RemoteExperienceMaker.compute_advantages_and_returns`` (runs in the ``PPOTrainer`` Ray actor).
  OpenRLHF's own method runs first (length penalties, ``group_norm`` / ``dr_grpo`` bookkeeping,
  logging); then ``advantages`` and ``returns`` of every experience are replaced by the GRPO-λ
  critic-free TD error of :func:`verl_lambda.core.advantage.group_advantages` (the function the
  verl estimator calls) on the same (penalised) rewards and prompt groups::

      δ_i = max((R_i − mean_g) / (std_g + 1e-6), adv_clamp)      (group_norm)
      δ_i = max(R_i − mean_g, adv_clamp)                         (dr_grpo)

  on every response token. It is OpenRLHF's ``group_norm`` followed by the clamp, with verl's
  ε = 1e-6 in place of OpenRLHF's 1e-9, so both frameworks give the same numbers.
* ``PolicyLoss.forward`` (runs in the ``PolicyModelActor`` Ray actors). The per-token loss matrix
  comes from :func:`verl_lambda.core.objective.token_losses` (the same function the verl loss
  calls) with OpenRLHF's clip settings (``--actor.eps_clip_low_high``, ``--actor.dual_clip``)
  and OpenRLHF's own train/rollout importance-sampling weights (``--algo.advantage.is_correction_*``),
  and is reduced by OpenRLHF's own ``aggregate_loss`` (``--actor.loss_agg_mode``, global token and
  sample counts, ``dp_size``).

Both patches must run inside OpenRLHF's Ray actor processes. :func:`apply` is written to be Ray's
``worker_process_setup_hook`` (``"verl_lambda.patches.openrlhf.apply"``, re-exported by the package): it
reads the settings from
environment variables and patches OpenRLHF's classes when their modules are imported (at once if
they already are), so a worker that never loads OpenRLHF's loss or experience maker pays nothing.
The launcher ``python -m verl_lambda.patches.openrlhf`` sets all of this up.

Environment variables (strings): ``GRPO_LAMBDA=1`` switches GRPO-λ on; each setting of
:class:`~verl_lambda.core.settings.GRPOLambdaSettings` comes from ``GRPO_LAMBDA_<NAME>`` (e.g.
``GRPO_LAMBDA_LAM``, ``GRPO_LAMBDA_TRACE_EPSILON``; unset means the default);
``GRPO_LAMBDA_ALLOW_UNTESTED_OPENRLHF=1`` accepts an OpenRLHF outside the tested range whose patched
methods keep their signatures.

Version policy: the patched methods are checked against the signatures of OpenRLHF 0.11.0–0.11.2
(:data:`SUPPORTED_OPENRLHF`). A different signature is always refused with
:class:`UnsupportedOpenRLHF`; a version outside the range with the same signatures is refused
unless ``GRPO_LAMBDA_ALLOW_UNTESTED_OPENRLHF=1``.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata
import inspect
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch

from verl_lambda.cli import TRUE_WORDS, LaunchError, env_flag
from verl_lambda.core.advantage import group_advantages
from verl_lambda.core.objective import token_losses
from verl_lambda.core.settings import GRPOLambdaSettings, env_var

__all__ = [
    "ENV_SWITCH",
    "ENV_ALLOW_UNTESTED",
    "SUPPORTED_OPENRLHF",
    "TESTED_OPENRLHF",
    "GROUP_ESTIMATORS",
    "UnsupportedOpenRLHF",
    "apply",
    "remove",
    "active_settings",
    "patch_status",
    "settings_from_env",
    "settings_to_env",
    "check_version",
    "check_policy_loss",
    "check_experience_maker",
    "check_trainer_options",
    "check_openrlhf",
    "import_openrlhf",
    "grpo_lambda_advantages",
]

logger = logging.getLogger(__name__)

SUPPORTED_OPENRLHF = ">=0.11.0,<0.12"
TESTED_OPENRLHF = "0.11.2"

ENV_SWITCH = "GRPO_LAMBDA"
ENV_ALLOW_UNTESTED = "GRPO_LAMBDA_ALLOW_UNTESTED_OPENRLHF"

#: OpenRLHF advantage estimators GRPO-λ builds on, and whether each divides by the group std.
GROUP_ESTIMATORS = {"group_norm": True, "dr_grpo": False}

_LOSS_MODULE = "openrlhf.models.loss"
_MAKER_MODULE = "openrlhf.trainer.ppo_utils.experience_maker"
_PATCH_MARK = "__grpo_lambda_patch__"

# Signatures of the patched / called OpenRLHF functions (0.11.0–0.11.2).
_FORWARD_PARAMS = (
    "self",
    "log_probs",
    "old_log_probs",
    "advantages",
    "action_mask",
    "rollout_log_probs",
    "dp_size",
    "batch_num_tokens",
    "global_batch_size",
)
_AGGREGATE_PARAMS = ("loss", "loss_mask", "token_level_loss", "dp_size", "batch_num_tokens", "global_batch_size")
_INIT_PARAMS = ("clip_eps_low", "clip_eps_high", "dual_clip", "token_level_loss", "policy_loss_type")
_ADVANTAGE_PARAMS = ("self", "experiences")


# ──────────────────────────────────────────────────────────────────────────── settings


def settings_to_env(settings: GRPOLambdaSettings) -> dict[str, str]:
    """The environment variables that switch GRPO-λ on with ``settings``."""
    return {ENV_SWITCH: "1", **{env_var(name): text for name, text in settings.to_strings().items()}}


def settings_from_env(environ: Mapping[str, str] | None = None) -> GRPOLambdaSettings | None:
    """Settings from ``GRPO_LAMBDA_*`` variables, or None when ``GRPO_LAMBDA`` is off."""
    environ = os.environ if environ is None else environ
    try:
        on = env_flag(ENV_SWITCH, environ)
    except LaunchError as err:
        raise ValueError(str(err)) from None
    return GRPOLambdaSettings.from_environment(environ) if on else None


# ─────────────────────────────────────────────────────────────────── version checks


class UnsupportedOpenRLHF(RuntimeError):
    """The installed OpenRLHF is not one the patches are written for."""


def _supported_text() -> str:
    return f"openrlhf{SUPPORTED_OPENRLHF} (tested with {TESTED_OPENRLHF})"


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        return None


def _in_supported_range(version: str | None) -> bool:
    if version is None:
        return False
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version) in SpecifierSet(SUPPORTED_OPENRLHF)
    except InvalidVersion:
        return False


def check_version(version: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """Refuse an OpenRLHF outside :data:`SUPPORTED_OPENRLHF` (unless explicitly allowed).

    ``version`` defaults to the installed distribution's. Returns the version checked.
    """
    environ = os.environ if environ is None else environ
    version = _installed_version() if version is None else version
    if _in_supported_range(version):
        return version
    if environ.get(ENV_ALLOW_UNTESTED, "").strip().lower() in TRUE_WORDS:
        logger.warning(
            "GRPO-λ: openrlhf %s is outside %s; going on (%s=1)", version, _supported_text(), ENV_ALLOW_UNTESTED
        )
        return version
    found = "no openrlhf distribution metadata" if version is None else f"openrlhf {version}"
    raise UnsupportedOpenRLHF(
        f"GRPO-λ's OpenRLHF adapter supports {_supported_text()}; found {found}. "
        f"Install openrlhf{SUPPORTED_OPENRLHF}, or set {ENV_ALLOW_UNTESTED}=1 to try a version whose "
        "patched methods keep the same signatures"
    )


def _param_names(fn: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(inspect.unwrap(fn)).parameters)


def _signature_error(
    what: str, got: tuple[str, ...], expected: tuple[str, ...], version: str | None
) -> UnsupportedOpenRLHF:
    found = "this openrlhf" if version is None else f"openrlhf {version}"
    return UnsupportedOpenRLHF(
        f"GRPO-λ's OpenRLHF adapter supports {_supported_text()}: {found} has {what}({', '.join(got)}), "
        f"the adapter needs {what}({', '.join(expected)})"
    )


def check_policy_loss(policy_loss_cls: type, aggregate_fn: Callable | None, version: str | None = None) -> None:
    """Refuse a ``PolicyLoss`` / ``aggregate_loss`` whose signatures differ from OpenRLHF 0.11.x."""
    found = "this openrlhf" if version is None else f"openrlhf {version}"
    if aggregate_fn is None:
        raise UnsupportedOpenRLHF(
            f"GRPO-λ's OpenRLHF adapter supports {_supported_text()}: {found} has no "
            "openrlhf.models.loss.aggregate_loss"
        )
    got = _param_names(policy_loss_cls.forward)
    if got != _FORWARD_PARAMS:
        raise _signature_error("PolicyLoss.forward", got, _FORWARD_PARAMS, version)
    init = _param_names(policy_loss_cls.__init__)
    if not set(_INIT_PARAMS) <= set(init):
        raise _signature_error("PolicyLoss.__init__", init, ("self", *_INIT_PARAMS, "..."), version)
    got = _param_names(aggregate_fn)
    if got != _AGGREGATE_PARAMS:
        raise _signature_error("aggregate_loss", got, _AGGREGATE_PARAMS, version)
    if "aggregate_loss" not in inspect.unwrap(policy_loss_cls.forward).__code__.co_names:
        raise UnsupportedOpenRLHF(
            f"GRPO-λ's OpenRLHF adapter supports {_supported_text()}: the PolicyLoss.forward of {found} does "
            "not reduce its loss through aggregate_loss"
        )


def check_experience_maker(maker_cls: type, version: str | None = None) -> None:
    """Refuse a ``RemoteExperienceMaker.compute_advantages_and_returns`` with another signature."""
    got = _param_names(maker_cls.compute_advantages_and_returns)
    if got != _ADVANTAGE_PARAMS:
        raise _signature_error("RemoteExperienceMaker.compute_advantages_and_returns", got, _ADVANTAGE_PARAMS, version)


def import_openrlhf() -> tuple[Any, Any]:
    """OpenRLHF's loss and experience-maker modules (what a run imports first; ImportError if it cannot)."""
    return importlib.import_module(_LOSS_MODULE), importlib.import_module(_MAKER_MODULE)


def check_openrlhf() -> str | None:
    """Import OpenRLHF's patched modules and run every check; returns the installed version."""
    version = check_version()
    loss_module, maker_module = import_openrlhf()
    check_policy_loss(loss_module.PolicyLoss, getattr(loss_module, "aggregate_loss", None), version)
    check_experience_maker(maker_module.RemoteExperienceMaker, version)
    return version


# ───────────────────────────────────────────────────────────────────────── advantage


#: OpenRLHF's defaults of the options :func:`check_trainer_options` reads (``openrlhf.cli.train_ppo_ray``)
OPENRLHF_DEFAULTS = {"estimator": "gae", "policy_loss_type": "ppo", "kl_use_loss": False, "kl_coef": 0.01}


def check_trainer_options(
    estimator: str | None = None,
    policy_loss_type: str | None = None,
    kl_use_loss: bool | None = None,
    kl_coef: float | None = None,
) -> None:
    """Refuse the OpenRLHF options GRPO-λ cannot run with (ValueError, one line); None: not known here.

    The one place these rules are written: the launcher calls it on the command line before Ray
    starts, the patched methods in the workers on OpenRLHF's parsed arguments."""
    if estimator is not None and estimator not in GROUP_ESTIMATORS:
        raise ValueError(
            "GRPO-λ builds on OpenRLHF's group baseline: pass --algo.advantage.estimator group_norm "
            f"(GRPO) or dr_grpo (no std division), got {estimator}"
        )
    if policy_loss_type is not None and policy_loss_type != "ppo":
        raise ValueError(
            "GRPO-λ replaces the PPO ratio by the traced ratio: --actor.policy_loss_type must be ppo, "
            f"got {policy_loss_type}"
        )
    if kl_use_loss is False and kl_coef is not None and kl_coef > 0.0:
        raise ValueError(
            "GRPO-λ needs the KL penalty as a loss term, not in the reward: add --algo.kl.use_loss "
            "(e.g. with --algo.kl.estimator k3) or set --algo.kl.init_coef 0"
        )


def grpo_lambda_advantages(
    experiences: list, n_samples_per_prompt: int, estimator: str, settings: GRPOLambdaSettings
) -> list:
    """Set ``advantages``/``returns`` of OpenRLHF experiences to the GRPO-λ TD error (in place).

    Groups are OpenRLHF's: sample ``k`` (``experience.index``, its place in the rollout batch)
    belongs to prompt ``k // n_samples_per_prompt``. Rewards are ``experience.rewards`` after
    OpenRLHF's length penalties. The numbers come from :func:`~verl_lambda.core.advantage.group_advantages`.
    """
    check_trainer_options(estimator=estimator)
    if not experiences:
        return experiences
    sizes = [len(e.index) for e in experiences]
    scores = torch.cat([e.rewards.reshape(-1) for e in experiences])
    groups = [int(k) // int(n_samples_per_prompt) for k in itertools.chain.from_iterable(e.index for e in experiences)]
    per_sample = group_advantages(scores, groups, settings.advantage, norm_by_std=GROUP_ESTIMATORS[estimator])
    for experience, value in zip(experiences, per_sample.split(sizes)):
        mask = experience.action_mask
        advantages = value.to(mask.device).unsqueeze(-1) * mask.to(value.dtype)
        experience.advantages = advantages
        experience.returns = advantages.clone()
    return experiences


def _check_trainer_args(maker: Any) -> tuple[str, int]:
    args = maker.strategy.args
    estimator = args.algo.advantage.estimator
    # OpenRLHF puts the KL penalty into the reward when it has a reference model and no KL loss
    kl_coef = float(getattr(maker.kl_ctl, "value", 0.0)) if getattr(maker, "initial_model_group", None) else 0.0
    check_trainer_options(estimator=estimator, kl_use_loss=bool(args.algo.kl.use_loss), kl_coef=kl_coef)
    return estimator, int(args.rollout.n_samples_per_prompt)


def _make_advantage_patch(original: Callable) -> Callable:
    @functools.wraps(original)
    def compute_advantages_and_returns(self, experiences):
        settings = _ACTIVE
        if settings is None:
            return original(self, experiences)
        estimator, n_samples = _check_trainer_args(self)
        experiences = original(self, experiences)
        return grpo_lambda_advantages(experiences, n_samples, estimator, settings)

    setattr(compute_advantages_and_returns, _PATCH_MARK, True)
    return compute_advantages_and_returns


# ────────────────────────────────────────────────────────────────────────────── loss


_CAPTURE = threading.local()  # .matrices: a list while this thread probes OpenRLHF's IS weights, else absent


def _capturing_aggregate(real: Callable) -> Callable:
    """OpenRLHF's ``aggregate_loss``, unchanged, except inside :func:`_openrlhf_is_weights` on this
    thread: there it records the matrix it is given and returns 0. Installed once, when the loss
    module is patched (:func:`_patch_loss_module`), and removed by :func:`remove`."""

    @functools.wraps(real)
    def aggregate_loss(loss, *args, **kwargs):
        matrices = getattr(_CAPTURE, "matrices", None)
        if matrices is None:
            return real(loss, *args, **kwargs)
        matrices.append(loss)
        return loss.new_zeros(())

    setattr(aggregate_loss, _PATCH_MARK, True)
    return aggregate_loss


def _openrlhf_is_weights(original: Callable, policy_loss: Any, old_log_probs, action_mask, rollout_log_probs):
    """OpenRLHF's own train/rollout IS weights per token, and the tail of its return tuple.

    Runs OpenRLHF's ``forward`` at ratio 1 and advantage −1, where its per-token PPO loss is exactly
    1, and reads the matrix it hands to ``aggregate_loss`` (:func:`_capturing_aggregate`): that
    matrix is the IS weight (1 where the correction is off). The tail (``vllm_kl``,
    ``is_filter_ratio`` in 0.11.2) depends only on the old and rollout log-probs, so it is
    OpenRLHF's value as is. Any other shape of OpenRLHF's forward is :class:`UnsupportedOpenRLHF`.
    """
    _CAPTURE.matrices = captured = []
    try:
        with torch.no_grad():
            old = old_log_probs.detach()
            out = original(policy_loss, old, old, torch.full_like(old, -1.0), action_mask, rollout_log_probs)
    finally:
        del _CAPTURE.matrices
    if len(captured) != 1 or not isinstance(out, tuple) or captured[0].shape != old.shape:
        raise UnsupportedOpenRLHF(
            f"GRPO-λ's OpenRLHF adapter supports {_supported_text()}: PolicyLoss.forward handed aggregate_loss "
            f"{len(captured)} loss matrices of shapes {[tuple(m.shape) for m in captured]} for log-probs of shape "
            f"{tuple(old.shape)}; the adapter reads exactly one per-token matrix"
        )
    weights = torch.where(action_mask.bool(), captured[0], torch.zeros_like(captured[0]))
    return weights, tuple(out[3:])


def _make_loss_patch(original: Callable, aggregate: Callable) -> Callable:
    @functools.wraps(original)
    def forward(
        self,
        log_probs,
        old_log_probs,
        advantages,
        action_mask=None,
        rollout_log_probs=None,
        dp_size=1,
        batch_num_tokens=None,
        global_batch_size=None,
    ):
        settings = _ACTIVE
        if settings is None:
            return original(
                self, log_probs, old_log_probs, advantages, action_mask, rollout_log_probs,
                dp_size, batch_num_tokens, global_batch_size,
            )  # fmt: skip
        check_trainer_options(policy_loss_type=self.policy_loss_type)
        mask = torch.ones_like(log_probs, dtype=torch.bool) if action_mask is None else action_mask
        weights, tail = _openrlhf_is_weights(original, self, old_log_probs, mask, rollout_log_probs)
        losses, stats = token_losses(
            old_log_probs,
            log_probs,
            advantages,
            mask,
            settings.loss,
            clip_ratio_low=self.clip_eps_low,
            clip_ratio_high=self.clip_eps_high,
            clip_ratio_c=self.dual_clip,
            rollout_is_weights=weights,
        )
        loss = aggregate(
            losses,
            mask,
            token_level_loss=self.token_level_loss,
            dp_size=dp_size,
            batch_num_tokens=batch_num_tokens,
            global_batch_size=global_batch_size,
        )
        # Not part of OpenRLHF's fixed return tuple: kept on the module for whoever wants them.
        self.grpo_lambda_stats = stats
        return (loss, stats["pg_clipfrac"], stats["ppo_kl"], *tail)

    setattr(forward, _PATCH_MARK, True)
    return forward


# ─────────────────────────────────────────────────────────────────────────── patching


_ACTIVE: GRPOLambdaSettings | None = None
_ORIGINALS: dict[tuple[Any, str], Callable] = {}  # (class or module, attribute) -> what was there


def _is_patched(fn: Any) -> bool:
    return bool(getattr(fn, _PATCH_MARK, False))


def _patch_loss_module(module: Any) -> None:
    cls = module.PolicyLoss
    if _is_patched(cls.forward):
        return
    check_policy_loss(cls, getattr(module, "aggregate_loss", None), check_version())
    _ORIGINALS[(cls, "forward")] = cls.forward
    _ORIGINALS[(module, "aggregate_loss")] = real_aggregate = module.aggregate_loss
    module.aggregate_loss = _capturing_aggregate(real_aggregate)
    cls.forward = _make_loss_patch(cls.forward, real_aggregate)
    logger.info("GRPO-λ: patched %s.PolicyLoss.forward (%s)", module.__name__, _ACTIVE)


def _patch_maker_module(module: Any) -> None:
    cls = module.RemoteExperienceMaker
    if _is_patched(cls.compute_advantages_and_returns):
        return
    check_experience_maker(cls, check_version())
    _ORIGINALS[(cls, "compute_advantages_and_returns")] = cls.compute_advantages_and_returns
    cls.compute_advantages_and_returns = _make_advantage_patch(cls.compute_advantages_and_returns)
    logger.info(
        "GRPO-λ: patched %s.RemoteExperienceMaker.compute_advantages_and_returns (%s)", module.__name__, _ACTIVE
    )


_PATCHERS = {_LOSS_MODULE: _patch_loss_module, _MAKER_MODULE: _patch_maker_module}


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the freshly executed module."""

    def __init__(self, inner: Any, patcher: Callable[[Any], None]):
        self._inner = inner
        self._patcher = patcher

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        self._patcher(module)

    def __getattr__(self, name):  # get_source, get_resource_reader, … of the real loader
        return getattr(self._inner, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Meta-path finder that wraps the loaders of OpenRLHF's patched modules."""

    def find_spec(self, fullname, path=None, target=None):
        patcher = _PATCHERS.get(fullname)
        if patcher is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, patcher)
        return spec


_FINDER = _PatchOnImport()


def apply(settings: GRPOLambdaSettings | None = None) -> bool:
    """Switch GRPO-λ on in this process (Ray ``worker_process_setup_hook``; idempotent).

    Without ``settings`` they come from the ``GRPO_LAMBDA*`` environment variables, and nothing is
    patched unless ``GRPO_LAMBDA=1``. OpenRLHF modules already imported are patched at once (after
    the version and signature checks, which raise :class:`UnsupportedOpenRLHF`); the others when
    they are first imported. Returns whether GRPO-λ is on.
    """
    global _ACTIVE
    if settings is None:
        settings = settings_from_env()
        if settings is None:
            return False
    if not isinstance(settings, GRPOLambdaSettings):
        raise TypeError(
            f"settings must be a verl_lambda.core.settings.GRPOLambdaSettings, got {type(settings).__name__}"
        )
    _ACTIVE = settings
    for name, patcher in _PATCHERS.items():
        module = sys.modules.get(name)
        if module is not None:
            patcher(module)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True


def remove() -> None:
    """Restore OpenRLHF's methods and switch GRPO-λ off in this process."""
    global _ACTIVE
    _ACTIVE = None
    while _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
    for (owner, name), original in list(_ORIGINALS.items()):
        setattr(owner, name, original)
        del _ORIGINALS[(owner, name)]


def active_settings() -> GRPOLambdaSettings | None:
    """The settings GRPO-λ runs with in this process, or None when it is off."""
    return _ACTIVE


def patch_status() -> dict[str, bool]:
    """Whether each OpenRLHF method is patched in this process (False when its module is not loaded)."""
    loss = sys.modules.get(_LOSS_MODULE)
    maker = sys.modules.get(_MAKER_MODULE)
    return {
        "PolicyLoss.forward": loss is not None and _is_patched(loss.PolicyLoss.forward),
        "RemoteExperienceMaker.compute_advantages_and_returns": maker is not None
        and _is_patched(maker.RemoteExperienceMaker.compute_advantages_and_returns),
    }
