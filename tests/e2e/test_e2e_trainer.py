"""GRPO-λ inside verl 0.9.1's real trainer: every estimator and loss call checked against float64 loops.

Four runs of 2 training steps each (tiny model, CPU harness, e2e_capture in every process):

* ``lambda_launcher`` — ``python -m verl_lambda.launch.main_ppo``; remove-padding on, fixed micro-batches,
  2 epochs × 2 mini-batches (off-policy updates), KL loss on (``low_var_kl``), ``trace=recent``;
  registration route 1: user modules (the harness and capture modules) in the driver's
  ``VERL_USE_EXTERNAL_MODULES`` *and* the old recipe-style
  ``+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register``.
* ``lambda_plain_verl`` — plain ``python -m verl.trainer.main_ppo`` started by bash with the
  documented registration argument (shell-expanded); remove-padding off, dynamic batch size
  (40-token budget: one sequence per micro-batch), ``trace=both``, ``trace_epsilon=0.01``,
  ``trace_norm=sum``, 2 epochs × 2 mini-batches.
* ``lambda_dp2_sp2`` — the launcher on 4 fake GPUs: 2 data-parallel ranks × Ulysses SP 2.
* ``grpo_baseline`` — plain ``python -m verl.trainer.main_ppo`` with GRPO and verl's ``vanilla``
  loss, otherwise ``lambda_launcher``'s settings.
"""

from __future__ import annotations

import sys

import e2e_support as e2e
import pytest

from verl_lambda.smoke.harness import HARNESS_MODULES, HarnessSizes
from verl_lambda.verl.keys import REGISTER_MODULE

REGISTRATION = e2e.REGISTRATION_KEY
OFF_POLICY = ["actor_rollout_ref.actor.ppo_epochs=2"]  # × the harness's 2 mini-batches per step
KL_LOSS = [
    "actor_rollout_ref.actor.use_kl_loss=True",
    "actor_rollout_ref.actor.kl_loss_coef=0.001",
    "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
]
DYNAMIC_BSZ = [
    "actor_rollout_ref.actor.use_dynamic_bsz=True",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=40",
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=40",
    "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=40",
]
# verl's FSDP engine computes in bf16 by default (and on a CPU its log-probs come out in bf16): the
# matched pair runs the engine in float32 (no autocast), the other runs keep verl's bf16 autocast.
FLOAT32_ENGINE = [
    f"++actor_rollout_ref.{role}.fsdp_config.mixed_precision.{kind}_dtype=fp32"
    for role in ("actor", "ref")
    for kind in ("param", "reduce", "buffer")
]
# What a plain-verl user writes (README): the shell puts their own modules in front of the plugin's.
PLAIN_VERL_REGISTRATION = (
    f"\"+{REGISTRATION}='${{VERL_USE_EXTERNAL_MODULES:+$VERL_USE_EXTERNAL_MODULES,}}verl_lambda.verl.register'\""
)

RUNS = {
    "lambda_launcher": e2e.TrainerRun(
        name="lambda_launcher",
        command=e2e.python_module(
            "verl_lambda.launch.main_ppo",
            *e2e.GRPO_LAMBDA_SWITCHES,
            "+actor_rollout_ref.actor.policy_loss.trace=recent",
            f"+{REGISTRATION}=verl_lambda.verl.register",
        ),
        extra_overrides=["actor_rollout_ref.model.use_remove_padding=True", *OFF_POLICY, *KL_LOSS, *FLOAT32_ENGINE],
    ),
    "lambda_plain_verl": e2e.TrainerRun(
        name="lambda_plain_verl",
        command=[
            "bash",
            "-c",
            f'exec "{sys.executable}" -m verl.trainer.main_ppo "$@" {PLAIN_VERL_REGISTRATION}',
            "bash",
            *e2e.GRPO_LAMBDA_SWITCHES,
            "+actor_rollout_ref.actor.policy_loss.trace=both",
            "+actor_rollout_ref.actor.policy_loss.trace_epsilon=0.01",
            "+actor_rollout_ref.actor.policy_loss.trace_norm=sum",
        ],
        extra_overrides=["actor_rollout_ref.model.use_remove_padding=False", *DYNAMIC_BSZ, *OFF_POLICY],
    ),
    "lambda_dp2_sp2": e2e.TrainerRun(
        name="lambda_dp2_sp2",
        command=e2e.python_module(
            "verl_lambda.launch.main_ppo",
            *e2e.GRPO_LAMBDA_SWITCHES,
            "+actor_rollout_ref.actor.policy_loss.trace=recent",
        ),
        extra_overrides=[
            "actor_rollout_ref.model.use_remove_padding=True",
            "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2",
        ],
        sizes=HarnessSizes(ranks=4),
    ),
    "grpo_baseline": e2e.TrainerRun(
        name="grpo_baseline",
        command=e2e.python_module("verl.trainer.main_ppo", *e2e.GRPO_SWITCHES),
        extra_overrides=["actor_rollout_ref.model.use_remove_padding=True", *OFF_POLICY, *KL_LOSS, *FLOAT32_ENGINE],
    ),
}
LAMBDA_RUNS = ["lambda_launcher", "lambda_plain_verl", "lambda_dp2_sp2"]
ALL_RUNS = list(RUNS)


@pytest.fixture(params=ALL_RUNS)
def outcome(request, trainer_outcome):
    result = trainer_outcome(RUNS[request.param])
    result.require_success()
    return result


@pytest.fixture(params=LAMBDA_RUNS)
def lambda_outcome(request, trainer_outcome):
    result = trainer_outcome(RUNS[request.param])
    result.require_success()
    return result


def test_run_completes_with_captures_from_every_role(outcome):
    assert "Unknown platform" not in outcome.result.log_text()
    assert outcome.advantage_calls, f"run '{outcome.name}': no estimator call was captured in the TaskRunner"
    assert outcome.loss_calls, f"run '{outcome.name}': no loss call was captured in the actor workers"
    estimator = "grpo" if outcome.name == "grpo_baseline" else "grpo_lambda"
    loss = "vanilla" if outcome.name == "grpo_baseline" else "grpo_lambda"
    assert {c["estimator"] for c in outcome.advantage_calls} == {estimator}
    assert {c["loss_name"] for c in outcome.loss_calls} == {loss}
    assert len(outcome.advantage_calls) == outcome.expected_steps  # one estimator call per step


def test_advantages_equal_the_float64_reference(outcome):
    for call in outcome.advantage_calls:
        e2e.check_advantages(call)
    if outcome.name != "grpo_baseline":
        assert {c["adv_clamp"] for c in outcome.advantage_calls} == {-0.1}
        assert any((c["advantages"] == -0.1).any() for c in outcome.advantage_calls), "the clamp never acted"


def test_losses_equal_the_float64_reference(outcome):
    for call in outcome.loss_calls:
        e2e.check_loss(call)


def test_loss_receives_the_estimators_advantages(outcome):
    e2e.check_loss_advantages_come_from_estimator(outcome)


def test_loss_metrics_in_console_every_step(outcome):
    names = (
        e2e.PLUGIN_METRICS
        if outcome.name != "grpo_baseline"
        else ["actor/pg_loss", "actor/ppo_kl", "actor/pg_clipfrac"]
    )
    e2e.check_console_metrics(outcome, [*names, "critic/advantages/mean"])


def test_off_policy_updates_reach_the_loss(outcome):
    off = [c for c in outcome.loss_calls if e2e.is_off_policy(c)]
    assert off, f"run '{outcome.name}': every loss call had log_prob == old_log_prob"


def test_trace_changes_the_loss_off_policy(lambda_outcome):
    """Off-policy, the traced ratio gives another loss than the plain per-token ratio (λ = 0)."""
    gaps = [
        abs(e2e.reference_loss(c) - e2e.reference_loss(c, vanilla=True))
        for c in lambda_outcome.loss_calls
        if e2e.is_off_policy(c)
    ]
    assert gaps and max(gaps) > 1e-6, f"run '{lambda_outcome.name}': trace made no difference ({gaps[:4]})"
    traced = [s["actor/grpo_lambda/trace_abs_max"] for s in lambda_outcome.steps.values()]
    assert max(traced) > 0, "actor/grpo_lambda/trace_abs_max stayed 0 although updates were off-policy"


@pytest.mark.parametrize(
    "name, expected",
    [
        ("lambda_launcher", {"trace": "recent", "trace_epsilon": 0.0, "trace_norm": "none", "lam": 0.99}),
        ("lambda_plain_verl", {"trace": "both", "trace_epsilon": 0.01, "trace_norm": "sum", "lam": 0.99}),
        ("lambda_dp2_sp2", {"trace": "recent", "trace_norm": "none"}),
    ],
)
def test_grpo_lambda_settings_reach_every_loss_call(trainer_outcome, name, expected):
    outcome = trainer_outcome(RUNS[name])
    outcome.require_success()
    for call in outcome.loss_calls:
        got = {key: call["settings"][key] for key in expected}
        assert got == expected, f"run '{name}' pid {call['pid']}: {got}"
        assert call["settings"]["policy_loss_class"] == "GRPOLambdaLossConfig"


def test_remove_padding_off_and_dynamic_batch(trainer_outcome):
    outcome = trainer_outcome(RUNS["lambda_plain_verl"])
    outcome.require_success()
    rows = {c["response_mask"].shape[0] for c in outcome.loss_calls}
    # a 40-token budget holds one 25 + ≤8-token sequence: dynamic micro-batches of one row,
    # where the fixed micro-batch size would give 2
    assert rows == {1}, f"micro-batch rows {rows}"


def test_data_and_sequence_parallel_ranks(trainer_outcome):
    outcome = trainer_outcome(RUNS["lambda_dp2_sp2"])
    outcome.require_success()
    ranks = {c["rank"] for c in outcome.loss_calls}
    assert ranks == {"0", "1", "2", "3"}, f"loss calls came from ranks {ranks}"
    assert {int(c["settings"]["global_batch_info"]["dp_size"]) for c in outcome.loss_calls} == {2}
    # the two SP ranks of a DP group evaluate the loss on the same gathered micro-batch
    by_rank = {r: [c for c in outcome.loss_calls if c["rank"] == r] for r in ranks}
    for a, b in (("0", "1"), ("2", "3")):
        assert len(by_rank[a]) == len(by_rank[b])
        for ca, cb in zip(by_rank[a], by_rank[b]):
            assert float(ca["loss"]) == float(cb["loss"])


def test_kl_loss_is_on(trainer_outcome):
    for name in ("lambda_launcher", "grpo_baseline"):
        outcome = trainer_outcome(RUNS[name])
        outcome.require_success()
        e2e.check_console_metrics(outcome, ["actor/kl_loss"])


def test_registration_route_launcher_keeps_driver_modules(trainer_outcome):
    """Route 1: driver modules + the old recipe key, through the launcher, reach every worker.

    This combination died with 'Unknown platform cpu' before the launcher merged the two lists.
    """
    outcome = trainer_outcome(RUNS["lambda_launcher"])
    outcome.require_success()
    log = outcome.result.log_text()
    expected = ",".join([*HARNESS_MODULES, "e2e_capture", REGISTER_MODULE])
    assert expected in log, expected


@pytest.mark.parametrize(
    "name, dtype, autocast",
    [
        ("lambda_launcher", "torch.float32", False),
        ("grpo_baseline", "torch.float32", False),
        ("lambda_plain_verl", "torch.bfloat16", True),
        ("lambda_dp2_sp2", "torch.bfloat16", True),
    ],
)
def test_loss_precision_modes(trainer_outcome, name, dtype, autocast):
    """The float32-engine pair runs without autocast; the others hand the loss bf16 log-probs inside autocast."""
    outcome = trainer_outcome(RUNS[name])
    outcome.require_success()
    assert {str(c["log_prob"].dtype) for c in outcome.loss_calls} == {dtype}
    assert {c["autocast"] for c in outcome.loss_calls} == {autocast}
