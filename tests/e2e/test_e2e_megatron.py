"""GRPO-λ through verl 0.9.1's Megatron engine on the CPU harness: every loss call exact, on one node and two.

Two runs of 2 training steps each, both through ``python -m verl_lambda.smoke -- bash <recipe>``, as a
user rehearses them, with e2e_capture in every process:

* ``megatron_recipe`` — ``recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh`` as written (its
  TP 2 x PP 2 on 4 fake GPUs, remove-padding, dynamic batch size, the KL loss), with the recipe-way
  settings ``LAM=0.9 TRACE=both``: verl's ``MegatronEngineWithLMHead``, Megatron's 1F1B schedule, its
  DDP and distributed optimizer, mbridge's export to the rollout.
* ``megatron_multinode`` — ``recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh``:
  the recipe's own ``ray job submit`` with its runtime env against a 2-node Ray cluster the harness
  starts on this machine (2 fake GPUs each; the recipe's CP 2 becomes 1), a user module in the
  caller's ``VERL_USE_EXTERNAL_MODULES``.

Per run: every advantage equals the float64 reference from rewards and uids; every ``grpo_lambda``
loss call equals the float64 reference on its own inputs (≤ 1e-5 relative, returned in float32);
some call is off-policy; only the last pipeline stage computes the loss, and both of its tensor-
parallel ranks see the same inputs and return the same loss.
"""

from __future__ import annotations

from collections import defaultdict

import e2e_support as e2e
import pytest
import torch
from test_e2e_recipes import SMOKE_TIMEOUT_S, trainer_steps_of_smoke_run

from verl_lambda.smoke.harness import HarnessSizes

USER_MODULE = "e2e_user_module"


def smoke_recipe_run(name: str, recipe: str, env: dict | None = None, **options) -> e2e.TrainerRun:
    command = e2e.python_module(
        "verl_lambda.smoke", "--steps", "2", "--keep", "--timeout", str(SMOKE_TIMEOUT_S), "--", "bash", recipe
    )
    return e2e.TrainerRun(
        name=name,
        command=command,
        sizes=HarnessSizes(steps=2),
        env=dict(env or {}),
        append_overrides=False,
        engine="megatron",
        **options,
    )


RUNS = {
    "megatron_recipe": smoke_recipe_run(
        "megatron_recipe",
        "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh",
        env={"LAM": "0.9", "TRACE": "both"},
    ),
    "megatron_multinode": smoke_recipe_run(
        "megatron_multinode",
        "recipes/run_qwen2.5-7b-instruct_grpo_lambda_megatron_multinode.sh",
        extra_modules=[USER_MODULE],
        job_runtime_env=True,
    ),
}


@pytest.fixture(params=list(RUNS))
def outcome(request, trainer_outcome):
    result = trainer_outcome(RUNS[request.param])
    trainer_steps_of_smoke_run(result)
    result.require_success()
    return result


def test_the_run_went_through_verls_megatron_engine_and_said_what_it_replaced(outcome):
    log = outcome.result.log_text()
    assert "[smoke] OK: 2 training step(s)" in log and "Megatron engine" in log
    assert "replaced: context_parallel_size -> 1" in log and "replaced: Megatron-Bridge -> mbridge" in log
    assert "replaced: use_megatron_fsdp -> False" in log
    assert all(call["settings"]["policy_loss_class"] == "GRPOLambdaLossConfig" for call in outcome.loss_calls)
    e2e.check_console_metrics(outcome, [*e2e.PLUGIN_METRICS, "actor/kl_loss"])


def test_every_advantage_equals_the_float64_reference(outcome):
    assert outcome.advantage_calls and {c["estimator"] for c in outcome.advantage_calls} == {"grpo_lambda"}
    for call in outcome.advantage_calls:
        e2e.check_advantages(call)


def test_every_loss_call_equals_the_float64_reference(outcome):
    assert outcome.loss_calls and {c["loss_name"] for c in outcome.loss_calls} == {"grpo_lambda"}
    for call in outcome.loss_calls:
        assert call["loss"].dtype == torch.float32
        e2e.check_loss(call)
    e2e.check_loss_advantages_come_from_estimator(outcome)
    assert any(e2e.is_off_policy(call) for call in outcome.loss_calls), "no off-policy loss call: the trace's ratio"


def test_only_the_last_pipeline_stage_computes_the_loss_identically_on_its_tp_ranks(outcome):
    """Megatron calls the loss on the last pipeline stage only; its tensor-parallel ranks see whole rows."""
    by_rank = defaultdict(list)
    for call in outcome.loss_calls:
        by_rank[call["rank"]].append(call)
    if outcome.name == "megatron_recipe":  # TP 2 x PP 2: ranks 0, 1 first stage, 2, 3 last stage
        assert set(by_rank) == {"2", "3"}, sorted(by_rank)
        pairs = zip(*(sorted(by_rank[r], key=lambda c: c["seq"]) for r in ("2", "3")))
        for a, b in pairs:
            assert torch.equal(a["log_prob"], b["log_prob"]) and torch.equal(a["response_mask"], b["response_mask"])
            assert float(a["loss"]) == float(b["loss"])
    for call in outcome.loss_calls:  # whole, right-padded rows: each row's valid tokens first, in one run
        mask = call["response_mask"].bool()
        lengths = mask.sum(-1, keepdim=True)
        assert torch.equal(mask, torch.arange(mask.shape[1])[None, :] < lengths), "rows are not right-padded"


def test_recipe_settings_reach_the_loss_on_every_rank(trainer_outcome):
    """LAM=0.9 TRACE=both (the recipes' way) reach every rank's loss config."""
    outcome = trainer_outcome(RUNS["megatron_recipe"])
    outcome.require_success()
    for call in outcome.loss_calls:
        assert (call["settings"]["lam"], call["settings"]["trace"]) == (0.9, "both"), call["rank"]


def test_a_multinode_job_puts_actor_ranks_on_both_nodes_and_every_module_in_every_process(trainer_outcome):
    outcome = trainer_outcome(RUNS["megatron_multinode"])
    trainer_steps_of_smoke_run(outcome)
    outcome.require_success()
    assert "job raysubmit_" in outcome.result.log_text() and "SUCCEEDED" in outcome.result.log_text()
    nodes = {call["node"] for call in outcome.loss_calls}
    assert len(nodes) == 2, f"loss calls came from {len(nodes)} Ray node(s): {nodes}"
    for call in [*outcome.loss_calls, *outcome.advantage_calls]:
        imported = call["modules"]["imported"]
        for module in ("verl_lambda.smoke.worker", USER_MODULE, "verl_lambda.verl.register", e2e.CAPTURE_MODULE):
            assert module in imported, f"pid {call['pid']} on {call['node']}: {module} missing from {imported}"
    assert {call["settings"]["global_batch_info"]["dp_size"] for call in outcome.loss_calls} == {2}
