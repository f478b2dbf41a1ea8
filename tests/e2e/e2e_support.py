"""Shared pieces of the end-to-end suite: one training run of verl's real trainer, its captures, references.

:class:`TrainerRun` is one command (``python -m verl_lambda.launch.main_ppo``, plain
``python -m verl.trainer.main_ppo``, a recipe script or ``python -m verl_lambda.smoke``) run once
on the CPU harness of :mod:`verl_lambda.smoke` with :mod:`e2e_capture` loaded in every process.
:class:`RunOutcome` holds its exit status, wall time, console metrics and the captured
estimator / loss calls; the check functions compare those with the float64 loops of
``tests/spec_reference.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import spec_reference as spec
import torch

from verl_lambda.smoke.assets import Assets
from verl_lambda.smoke.harness import (
    HarnessSizes,
    RunResult,
    harness_env,
    harness_overrides,
    make_ray_temp_dir,
    parse_step_metrics,
    refuse_foreign_ray,
    run_logged,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CAPTURE_MODULE = "e2e_capture"
CAPTURE_DIR_ENV = "VERL_LAMBDA_E2E_CAPTURE_DIR"
TIMEOUT_ENV = "VERL_LAMBDA_E2E_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0  # one run takes 2–4 minutes on 2 cores; this bounds a hang
REGISTRATION_KEY = "ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES"

#: The GRPO-λ switches of the recipes (estimator, loss class, loss mode, paper settings).
GRPO_LAMBDA_SWITCHES = [
    "algorithm.adv_estimator=grpo_lambda",
    "+algorithm.grpo_lambda.adv_clamp=-0.1",
    "actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig",
    "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
    "+actor_rollout_ref.actor.policy_loss.lam=0.99",
    "+actor_rollout_ref.actor.policy_loss.gamma=1.0",
    "algorithm.use_kl_in_reward=False",
]
GRPO_SWITCHES = [
    "algorithm.adv_estimator=grpo",
    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
    "algorithm.use_kl_in_reward=False",
]
#: Metrics the plugin's loss reports, by the names verl logs them under.
PLUGIN_METRICS = [
    "actor/grpo_lambda/trace_abs_mean",
    "actor/grpo_lambda/trace_abs_max",
    "actor/grpo_lambda/guard_frac",
    "actor/grpo_lambda/token_guard_frac",
    "actor/pg_loss",
    "actor/ppo_kl",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
]
#: Wall times of the session's runs, for the terminal summary (see conftest.py).
TIMES: list[dict] = []
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-7  # floor for losses that are ~0 (all-zero advantages)


@dataclass
class RunOutcome:
    """A finished run: the harness result, the console metrics per step, the captured calls."""

    name: str
    argv: list[str]
    result: RunResult
    steps: dict[int, dict[str, float]]
    advantage_calls: list[dict]
    loss_calls: list[dict]
    expected_steps: int

    def describe_failure(self) -> str:
        """What was waited for and how it ended, with the log's tail."""
        how = (
            f"did not finish within its time limit ({self.result.wall_s:.0f} s)"
            if self.result.timed_out
            else f"exited with status {self.result.returncode} after {self.result.wall_s:.0f} s"
        )
        return (
            f"run '{self.name}' ({' '.join(self.argv[:4])} ...) {how}; log {self.result.log_path}\n"
            f"--- last lines ---\n{self.result.tail(60)}"
        )

    def require_success(self) -> None:
        assert self.result.ok, self.describe_failure()
        missing = [s for s in range(1, self.expected_steps + 1) if s not in self.steps]
        assert not missing, f"run '{self.name}': no console metrics for steps {missing}\n{self.result.tail(40)}"


@dataclass
class TrainerRun:
    """One command to run on the harness; ``extra_overrides`` go after the harness's own overrides."""

    name: str
    command: list[str]  # e.g. [python, -m, verl_lambda.launch.main_ppo, switches...]; harness overrides are appended
    extra_overrides: list[str] = field(default_factory=list)
    sizes: HarnessSizes = HarnessSizes()
    env: dict[str, str] = field(default_factory=dict)
    append_overrides: bool = True  # False: the command builds its own (the smoke CLI does)
    engine: str = "fsdp"  # "megatron": the harness's Megatron overrides and assets
    extra_modules: list[str] = field(default_factory=list)  # the caller's own VERL_USE_EXTERNAL_MODULES
    #: a multi-node recipe (ray job submit): its job gets recipes/runtime_env.yaml plus the capture folder
    job_runtime_env: bool = False

    def execute(self, assets: Assets, work_root: Path) -> RunOutcome:
        work = work_root / self.name
        capture_dir = work / "captures"
        capture_dir.mkdir(parents=True, exist_ok=True)
        ray_temp_dir = make_ray_temp_dir()
        overrides = harness_overrides(
            assets.model, assets.train_file, assets.val_file, ray_temp_dir, work, self.sizes, engine=self.engine
        )
        argv = list(self.command) + ((overrides + list(self.extra_overrides)) if self.append_overrides else [])
        refuse_foreign_ray(os.environ, argv)
        base = dict(os.environ)
        base["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [base.get("PYTHONPATH")])])
        env = harness_env(base, extra_modules=[*self.extra_modules, CAPTURE_MODULE], engine=self.engine)
        env[CAPTURE_DIR_ENV] = str(capture_dir)
        if self.job_runtime_env:
            env["RUNTIME_ENV"] = str(_job_runtime_env_with_captures(work, capture_dir))
        env.update(self.env)
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        result = run_logged(argv, env, work / "train.log", timeout, ray_temp_dir=ray_temp_dir, cwd=REPO)
        return RunOutcome(
            name=self.name,
            argv=argv,
            result=result,
            steps=parse_step_metrics(result.log_text()),
            advantage_calls=load_captures(capture_dir, "adv"),
            loss_calls=load_captures(capture_dir, "loss"),
            expected_steps=self.sizes.steps,
        )


def _job_runtime_env_with_captures(work: Path, capture_dir: Path) -> Path:
    """recipes/runtime_env.yaml plus the capture folder: a job's processes see only its runtime env."""
    import json

    import yaml

    runtime_env = yaml.safe_load((REPO / "recipes" / "runtime_env.yaml").read_text())
    runtime_env.setdefault("env_vars", {})[CAPTURE_DIR_ENV] = str(capture_dir)
    path = work / "runtime_env_with_captures.yaml"
    path.write_text(json.dumps(runtime_env))
    return path


def record_time(name: str, wall_s: float, ok: bool) -> None:
    """Add one timed piece of work to the session's summary."""
    TIMES.append({"run": name, "wall_s": round(wall_s, 1), "ok": ok})


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def load_captures(folder: Path, kind: str) -> list[dict]:
    """Captured calls of one kind ("adv" or "loss"), in file order."""
    return [torch.load(path, weights_only=False) for path in sorted(Path(folder).glob(f"{kind}_*.pt"))]


# ----------------------------------------------------------------------------------------------
# References


def reference_advantages(call: dict) -> torch.Tensor:
    """The clamped (GRPO-λ) or plain (GRPO) group-normalised outcome advantage, float64 loop."""
    clamp = call["adv_clamp"]
    if clamp == "default":
        clamp = -0.1  # the estimator's default (the paper's)
    return spec.grpo_lambda_advantage(
        call["token_level_rewards"], call["response_mask"], call["index"], clamp, bool(call["norm_adv_by_std_in_grpo"])
    )


def check_advantages(call: dict) -> None:
    """The advantages verl got back equal the float64 reference recomputed from rewards and uids."""
    got = call["advantages"].double()
    want = reference_advantages(call)
    err = (got - want).abs().max().item()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), (
        f"{call['estimator']} advantages (pid {call['pid']} #{call['seq']}) differ from the reference by {err:.3g}"
    )


def loss_trace_settings(call: dict, vanilla: bool = False) -> dict:
    """The spec's trace settings for a captured loss call (``vanilla``, or λ = 0, is the plain PPO ratio)."""
    s = call["settings"]
    if vanilla or call["loss_name"] == "vanilla":
        return {"lam": 0.0, "gamma": 1.0, "trace": "recent", "trace_epsilon": 0.0, "trace_norm": "none"}
    settings = {name: s[name] for name in ("lam", "gamma", "trace", "trace_epsilon", "trace_norm")}
    # settings the spec knows beyond those, when the loss config has them (defaults otherwise)
    for name in ("trace_anchor", "trace_application"):
        if s.get("policy_loss", {}).get(name) is not None:
            settings[name] = s["policy_loss"][name]
    return settings


def reference_loss(call: dict, vanilla: bool = False) -> float:
    """The spec's loss (float64 loops) on a captured call's inputs, clip settings and global batch info."""
    s = call["settings"]
    clip = s["clip_ratio"] if s["clip_ratio"] is not None else 0.2
    clip_low = clip if s["clip_ratio_low"] is None else s["clip_ratio_low"]
    clip_high = clip if s["clip_ratio_high"] is None else s["clip_ratio_high"]
    clip_c = 3.0 if s["clip_ratio_c"] is None else s["clip_ratio_c"]
    mask = call["response_mask"].bool()
    weights = call["rollout_is_weights"]
    losses = spec.token_losses(
        call["old_log_prob"].double(),
        call["log_prob"].double(),
        call["advantages"].double(),
        mask,
        loss_trace_settings(call, vanilla),
        clip_low,
        clip_high,
        clip_c,
        None if weights is None else weights.double(),
    )
    info = s["global_batch_info"]

    def number(value):
        return None if value is None else float(value)

    return float(
        spec.aggregate(
            losses,
            mask,
            call["loss_agg_mode"],
            batch_num_tokens=number(info.get("batch_num_tokens")),
            global_batch_size=number(info.get("global_batch_size")),
            dp_size=int(info.get("dp_size") or 1),
        )
    )


def vanilla_bf16_bound(call: dict) -> float:
    """How far verl's ``vanilla`` loss may be from the float64 reference when its log-probs are bf16.

    verl's ``vanilla`` forms the ratio exp(log_prob − old_log_prob) in the inputs' dtype, so with bf16
    log-probs (verl's engine under CPU autocast) each ratio carries bf16 rounding (≤ one ulp, 2⁻⁷, near
    1). The bound aggregates |A|·ρ·2⁻⁷ the way the loss aggregates its tokens.
    """
    s = call["settings"]
    mask = call["response_mask"].bool()
    ratio = (call["log_prob"].double() - call["old_log_prob"].double()).clamp(-20, 20).exp()
    per_token = call["advantages"].double().abs() * ratio * 2.0**-7
    info = s["global_batch_info"]
    tokens, seqs = info.get("batch_num_tokens"), info.get("global_batch_size")
    return float(
        spec.aggregate(
            per_token,
            mask,
            call["loss_agg_mode"],
            batch_num_tokens=None if tokens is None else float(tokens),
            global_batch_size=None if seqs is None else float(seqs),
            dp_size=int(info.get("dp_size") or 1),
        )
    )


def check_loss(call: dict) -> None:
    """The loss returned inside the trainer equals the float64 reference (≤ 1e-5 relative).

    The one exception is verl's own ``vanilla`` loss on bf16 log-probs, which is checked against
    :func:`vanilla_bf16_bound` instead (the plugin's loss is held to 1e-5 on bf16 inputs too).
    """
    got = float(call["loss"])
    want = reference_loss(call)
    tolerance = LOSS_RTOL * abs(want) + LOSS_ATOL
    low_precision = call["log_prob"].dtype in (torch.bfloat16, torch.float16)
    if call["loss_name"] == "vanilla" and low_precision:
        tolerance += vanilla_bf16_bound(call)
    assert abs(got - want) <= tolerance, (
        f"{call['loss_name']} loss (pid {call['pid']} #{call['seq']}, {call['loss_agg_mode']}, "
        f"log-probs {call['log_prob'].dtype}, autocast={call['autocast']}): trainer {got!r}, "
        f"float64 reference {want!r}, relative error {abs(got - want) / max(abs(want), 1e-30):.3g}"
    )


def is_off_policy(call: dict) -> bool:
    """log_prob differs from old_log_prob on some valid token."""
    mask = call["response_mask"].bool()
    return bool(((call["log_prob"] - call["old_log_prob"]).abs() * mask).max() > 0)


def check_console_metrics(outcome: RunOutcome, names: Sequence[str]) -> None:
    """Every metric in ``names`` appears in the console output of every step."""
    for step in range(1, outcome.expected_steps + 1):
        logged = outcome.steps.get(step, {})
        missing = [name for name in names if name not in logged]
        assert not missing, f"run '{outcome.name}' step {step}: console output lacks {missing}"


def advantage_values(calls: Sequence[dict]) -> set[float]:
    """Per-row advantage scalars (first valid token) of estimator calls, rounded to 1e-6."""
    values = set()
    for call in calls:
        adv, mask = call["advantages"], call["response_mask"].bool()
        for row in range(adv.shape[0]):
            if mask[row].any():
                values.add(round(float(adv[row][mask[row]][0]), 6))
    return values


def check_loss_advantages_come_from_estimator(outcome: RunOutcome) -> None:
    """What the loss receives as advantages are the estimator's rows (no other transformation on the way)."""
    produced = advantage_values(outcome.advantage_calls)
    received = advantage_values(outcome.loss_calls)
    stray = sorted(received - produced)
    assert not stray, f"run '{outcome.name}': loss saw advantages {stray[:5]} the estimator never returned"


def first(values: Sequence, default: object | None = None):
    return values[0] if values else default
