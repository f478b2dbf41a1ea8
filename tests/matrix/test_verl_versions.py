"""verl-lambda against the installed verl, whichever supported version it is (0.7.1, 0.8.0, 0.9.0, 0.9.1).

Each test goes through that version's own code: registration inside Ray actors by every route the
version has, the estimator through ``ray_trainer.compute_advantage``, the loss through the new-engine
``losses.ppo_loss`` and (where it exists) the legacy ``DataParallelPPOActor.update_policy``, Hydra
composition with ``validate_config``, and the launcher's dry run of two recipes. Numbers are compared with
the independent float64 loops of ``tests/spec_reference.py``.

A feature the installed verl lacks is not skipped: its test asserts the absence (and its id says so),
and ``test_feature_matches_the_version`` checks that what was detected is what that version is known to
have (``matrix_support.detect_features``).
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
import pytest
import spec_reference as spec
import torch
import yaml
from matrix_support import (
    ADV_CLAMP,
    CLIP_C,
    CLIP_HIGH,
    CLIP_LOW,
    FEATURES,
    PLUGIN_OVERRIDES,
    REPO,
    SETTINGS,
    VERL_VERSION,
    LossRecorder,
    actor_config,
    agg_modes,
    compose,
    environment_for_subprocess,
    error_chain,
    has,
    nested,
    padded_batch,
    spec_loss,
)
from ray_wait import ray_result

import verl_lambda.verl.register  # noqa: F401  (registers in this process)
from verl_lambda.verl.config import GRPOLambdaLossConfig
from verl_lambda.verl.version import UnsupportedVerl, check_verl_version, supported_verl

V = f"verl_{VERL_VERSION}"
RTOL = 1e-5  # relative agreement with the float64 spec asked of every path


def close(got, want, what, rtol=RTOL, atol=1e-8):
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------------------
# the version itself


MATRIX_VERSIONS = ("0.7.1", "0.8.0", "0.9.0", "0.9.1")


def test_installed_verl_is_supported_and_an_older_one_is_refused_in_one_line():
    supported = supported_verl()
    assert supported is not None, "verl-lambda's metadata names no verl range: reinstall it (pip install -e .)"
    assert check_verl_version() == importlib.metadata.version("verl") == VERL_VERSION
    for version in MATRIX_VERSIONS:
        assert check_verl_version(version) == version, f"verl {version} is in the tested matrix"
    for version in ("0.6.1", "0.10.0"):
        with pytest.raises(UnsupportedVerl) as info:
            check_verl_version(version)
        message = str(info.value)
        assert "\n" not in message, message
        assert f"verl{supported}" in message and f"found verl {version}" in message, message


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_matches_the_version(name):
    f = FEATURES[name]
    assert f.present == f.expected, (
        f"verl {VERL_VERSION}: {f.what}: {'present' if f.present else 'ABSENT'}, but expected "
        f"{'present' if f.expected else 'absent'} ({f.rule}); update matrix_support.detect_features and the "
        "tests that depend on it"
    )


def test_the_megatron_config_of_this_version():
    """Recipes use --config-name=ppo_megatron_trainer, which every supported verl has; model_engine=megatron
    exists from 0.8.0 only (asserted absent before)."""
    cfg = compose(PLUGIN_OVERRIDES, "ppo_megatron_trainer")
    assert cfg.actor_rollout_ref.actor.strategy == "megatron"
    if has("model_engine_megatron"):
        cfg = compose([*PLUGIN_OVERRIDES, "model_engine=megatron"])
        assert cfg.actor_rollout_ref.actor.strategy == "megatron"
    else:
        with pytest.raises(Exception, match="model_engine"):
            compose([*PLUGIN_OVERRIDES, "model_engine=megatron"])


# ---------------------------------------------------------------------------------------------------------
# registration inside Ray actors: every route this version has, and a control


ROUTES = {  # route -> (worker environment, build the actor config in the worker?)
    "control": ({"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": ""}, False),
    "entry_point": ({"VERL_USE_EXTERNAL_PLUGINS": "auto", "VERL_USE_EXTERNAL_MODULES": ""}, False),
    "VERL_USE_EXTERNAL_MODULES": (
        {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "verl_lambda.verl.register"},
        False,
    ),
    "policy_loss._target_": ({"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": ""}, True),
}


def _route_id(route):
    if route == "entry_point" and not has("entry_point_loader"):
        return f"entry_point-ABSENT_in_{V}-must_not_register"
    return route


@pytest.fixture(scope="module")
def route_reports():
    """One Ray actor per route, all started at once in a private local cluster; what each one saw."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="vlmx_", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:

        class RegistryProbe:  # defined here so Ray ships it by value; imports stay inside
            def report(self, actor_node):
                import os
                import sys

                import verl
                from verl.trainer.ppo import core_algos

                def names():
                    return (
                        "grpo_lambda" in core_algos.ADV_ESTIMATOR_REGISTRY,
                        "grpo_lambda" in core_algos.POLICY_LOSS_REGISTRY,
                    )

                before, built = names(), None
                if actor_node is not None:  # what an actor worker does: omega_conf_to_dataclass(config.actor)
                    from verl.utils.config import omega_conf_to_dataclass

                    built = type(omega_conf_to_dataclass(actor_node).policy_loss).__name__
                return {
                    "verl": verl.__version__,
                    "plugins_env": os.environ.get("VERL_USE_EXTERNAL_PLUGINS"),
                    "modules_env": os.environ.get("VERL_USE_EXTERNAL_MODULES"),
                    "before": before,
                    "after": names(),
                    "built": built,
                    "register_imported": "verl_lambda.verl.register" in sys.modules,
                }

        probe = ray.remote(num_cpus=0)(RegistryProbe)
        node = compose(PLUGIN_OVERRIDES).actor_rollout_ref.actor
        actors, refs = {}, {}
        for route, (env, build) in ROUTES.items():
            actors[route] = probe.options(runtime_env={"env_vars": env}).remote()
            refs[route] = actors[route].report.remote(node if build else None)
        reports = {}
        for route, ref in refs.items():
            reports[route] = ray_result(ray, ref, f"a Ray actor with the {route} route ({V})")
        for actor in actors.values():
            ray.kill(actor)
        return reports
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize("route", list(ROUTES), ids=_route_id)
def test_registration_route_inside_a_ray_actor(route_reports, route):
    got = route_reports[route]
    env, _ = ROUTES[route]
    assert got["verl"] == VERL_VERSION, got
    assert (got["plugins_env"], got["modules_env"] or "") == (
        env["VERL_USE_EXTERNAL_PLUGINS"],
        env["VERL_USE_EXTERNAL_MODULES"],
    )
    both, neither = (True, True), (False, False)
    if route == "control":
        assert got["before"] == got["after"] == neither, f"the control must see no registration: {got}"
        assert not got["register_imported"]
    elif route == "entry_point":
        if has("entry_point_loader"):
            assert got["after"] == both, f"import verl loads the verl.plugins entry point: {got}"
        else:
            assert got["after"] == neither and not got["register_imported"], (
                f"verl {VERL_VERSION} loads no verl.plugins entry points, so installing the package must not "
                f"register anything by itself: {got}"
            )
    elif route == "VERL_USE_EXTERNAL_MODULES":
        assert got["before"] == both, f"import verl imports VERL_USE_EXTERNAL_MODULES: {got}"
    else:
        assert got["before"] == neither, f"nothing before the actor config is built: {got}"
        assert got["built"] == GRPOLambdaLossConfig.__name__ and got["after"] == both, got


# ---------------------------------------------------------------------------------------------------------
# the estimator through ray_trainer.compute_advantage


def _estimator_batch():
    g = torch.Generator().manual_seed(7)
    group_sizes = [4, 4, 4, 1, 3, 5, 4]  # uneven groups and a singleton
    n, length = sum(group_sizes), 12
    uids = np.array([f"p{k}" for k, size in enumerate(group_sizes) for _ in range(size)], dtype=object)
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    lengths[5] = 9
    mask = (torch.arange(length)[None] < lengths[:, None]).float()
    mask[5, 3] = 0.0  # a hole inside a response
    rewards = torch.zeros(n, length)
    last = (mask * torch.arange(length)).argmax(-1)
    rewards[torch.arange(n), last] = torch.randint(0, 3, (n,), generator=g).float() / 2
    rewards[8:12] = 0.0  # group 2: all rewards equal
    rewards[8:12, 0] = 0.5
    return rewards, mask, uids


ESTIMATOR_CASES = {  # algorithm keys set after composition -> (clamp, normalise by std)
    "composed": ({}, ADV_CLAMP, True),
    "clamp-0.5": ({"grpo_lambda": {"adv_clamp": -0.5}}, -0.5, True),
    "no_clamp": ({"grpo_lambda": {"adv_clamp": None}}, None, True),
    "no_std_norm": ({"norm_adv_by_std_in_grpo": False}, ADV_CLAMP, False),
}


@pytest.fixture(scope="module")
def composed_config():
    return compose(PLUGIN_OVERRIDES)


@pytest.mark.parametrize("case", list(ESTIMATOR_CASES))
def test_estimator_through_compute_advantage(composed_config, case):
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    changes, clamp, norm = ESTIMATOR_CASES[case]
    algorithm = copy.deepcopy(composed_config.algorithm)
    OmegaConf.set_struct(algorithm, False)
    algorithm.merge_with(changes)
    rewards, mask, uids = _estimator_batch()
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards.clone(), "response_mask": mask.clone()}, non_tensors={"uid": uids}
    )
    out = compute_advantage(  # the trainer's call (ray_trainer.fit)
        data,
        adv_estimator=algorithm.adv_estimator,
        gamma=algorithm.gamma,
        lam=algorithm.lam,
        num_repeat=composed_config.actor_rollout_ref.rollout.n,
        norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
        config=algorithm,
    )
    want = spec.grpo_lambda_advantage(rewards, mask, list(uids), clamp, norm)
    close(out.batch["advantages"], want, f"advantages ({case})", atol=1e-6)
    torch.testing.assert_close(out.batch["returns"], out.batch["advantages"])


# ---------------------------------------------------------------------------------------------------------
# the loss: registered function, new-engine ppo_loss, legacy dp_actor


def test_registered_loss_every_aggregation_mode_of_this_version():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    g = torch.Generator().manual_seed(11)
    n, length = 6, 20
    old = -torch.rand(n, length, generator=g, dtype=torch.float64) * 3
    new = old + torch.randn(n, length, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(n, 1, generator=g, dtype=torch.float64).expand(n, length).clone()
    mask = spec.random_mask(g, n, length)
    mask[0] = True
    is_w = torch.rand(n, length, generator=g, dtype=torch.float64) + 0.5
    for mode in agg_modes():
        cfg = actor_config(loss_agg_mode=mode)
        a, b = new.clone().requires_grad_(True), new.clone().requires_grad_(True)
        loss, metrics = get_policy_loss_fn("grpo_lambda")(
            old_log_prob=old, log_prob=a, advantages=adv, response_mask=mask, loss_agg_mode=mode, config=cfg,
            rollout_is_weights=is_w,
        )  # fmt: skip
        loss.backward()
        want = spec_loss(spec, old, b, adv, mask, mode, is_w)
        want.backward()
        close(loss, want, mode)
        close(a.grad, b.grad, f"{mode} gradient")
        assert all(isinstance(v, float) for v in metrics.values()), metrics
    if not has("token_sum"):  # the plugin aggregates through verl: a mode verl lacks is verl's error
        cfg = actor_config(loss_agg_mode="token-mean")
        with pytest.raises(ValueError, match="loss_agg_mode"):
            get_policy_loss_fn("grpo_lambda")(
                old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask, loss_agg_mode="token-sum",
                config=cfg,
            )  # fmt: skip


PROMPTS, RESPONSES = [3, 2, 5, 1, 4], [4, 2, 7, 5, 6]


def _ppo_loss_inputs(style):
    """(model output leaves, data TensorDict, padded batch) as the trainer hands them to ppo_loss."""
    from verl.utils import tensordict_utils as tu

    b = padded_batch(3, PROMPTS, RESPONSES)
    g = torch.Generator().manual_seed(5)
    leaves = [-torch.rand(p + r, generator=g, dtype=torch.float64) for p, r in zip(PROMPTS, RESPONSES)]
    info = {"dp_size": 1, "batch_num_tokens": int(b["response_mask"].sum()), "global_batch_size": len(PROMPTS)}
    if style == "padded":  # the v0 trainer: left-right padded batch -> left_right_2_no_padding
        from verl.workers.utils.padding import left_right_2_no_padding

        td = tu.get_tensordict({k: v.clone() for k, v in b.items()}, non_tensor_dict=dict(info))
        try:
            td = left_right_2_no_padding(td)
        except ModuleNotFoundError as err:  # <= 0.9.0: unpad_input comes from flash_attn only
            assert err.name and err.name.startswith("flash_attn"), err
            td = tu.get_tensordict({k: v.clone() for k, v in b.items()}, non_tensor_dict=dict(info))
            tu.assign_non_tensor_data(td, "max_response_len", max(RESPONSES))  # the padded fields the loss reads
    else:  # the v1 trainer: every per-sample field nested
        r = RESPONSES
        td = tu.get_tensordict(
            {
                "prompts": nested(torch.zeros(p, dtype=torch.long) for p in PROMPTS),
                "responses": nested(torch.zeros(n, dtype=torch.long) for n in r),
                "response_mask": nested(b["response_mask"][i, :n] for i, n in enumerate(r)),
                "old_log_probs": nested(b["old_log_probs"][i, :n] for i, n in enumerate(r)),
                "advantages": nested(b["advantages"][i, :n] for i, n in enumerate(r)),
            },
            non_tensor_dict=dict(info),
        )
    return leaves, td, b, info


def _ppo_loss_expected(leaves, b, info, mode):
    """The spec's loss on the same batch by hand: response log-probs are the last r positions shifted by one."""
    width = max(RESPONSES)
    rows = [leaf[p - 1 : p - 1 + r] for leaf, p, r in zip(leaves, PROMPTS, RESPONSES)]
    new = torch.stack([torch.nn.functional.pad(row, (0, width - row.numel())) for row in rows])
    aggregate = {"batch_num_tokens": info["batch_num_tokens"], "global_batch_size": info["global_batch_size"]}
    return spec_loss(spec, b["old_log_probs"], new, b["advantages"], b["response_mask"], mode, **aggregate)


PPO_LOSS_STYLES = ["padded", "nested" if has("ppo_loss_nested") else f"nested-ABSENT_in_{V}-not_padded"]


@pytest.mark.parametrize("style", PPO_LOSS_STYLES)
def test_through_the_new_engine_ppo_loss(style):
    from verl.workers.utils.losses import ppo_loss

    if style.startswith("nested-ABSENT"):  # 0.7.1: ppo_loss reads old_log_probs/advantages/response_mask as given
        leaves, td, b, _ = _ppo_loss_inputs("nested")
        td["attention_mask"] = b["attention_mask"]  # 0.7.1's no_padding_2_padding reads it even for nested prompts
        cfg = actor_config()
        with LossRecorder() as rec:
            try:
                ppo_loss(cfg, {"log_probs": nested(leaf.clone() for leaf in leaves)}, td)
            except Exception:  # noqa: BLE001  (what matters is what reached the loss)
                pass
        assert len(rec.calls) == 1 and rec.calls[0]["nested"]["old_log_prob"], (
            f"verl {VERL_VERSION}'s ppo_loss was expected to hand nested old_log_probs to the loss unpadded; "
            f"the loss saw {[c['nested'] for c in rec.calls]}"
        )
        return
    for mode in agg_modes():
        leaves, td, b, info = _ppo_loss_inputs(style)
        cfg = actor_config(loss_agg_mode=mode)
        got_leaves = [leaf.clone().requires_grad_(True) for leaf in leaves]
        with LossRecorder() as rec:
            loss, metrics = ppo_loss(cfg, {"log_probs": nested(got_leaves)}, td)
        loss.backward()
        want_leaves = [leaf.clone().requires_grad_(True) for leaf in leaves]
        want = _ppo_loss_expected(want_leaves, b, info, mode)
        want.backward()
        close(loss, want, f"{style} {mode}")
        for i, (got, ref) in enumerate(zip(got_leaves, want_leaves)):
            close(got.grad, ref.grad, f"{style} {mode} gradient of sequence {i}")
        (call,) = rec.calls
        assert not any(call["nested"].values()), call["nested"]
        assert call["policy_loss_type"] == GRPOLambdaLossConfig.__name__
        assert call["global_batch_info"]["batch_num_tokens"] == info["batch_num_tokens"], call["global_batch_info"]
        assert "actor/pg_loss" in metrics


# legacy DataParallelPPOActor (verl 0.7.x's default FSDP worker path)

LEGACY_SCENARIOS = {  # name -> mini-batch, micro-batch, epochs, dynamic batches, aggregation
    "on-policy": (8, 4, 1, False, "token-mean"),  # 1 mini-batch x 1 epoch: old_log_prob = log_prob.detach()
    "2-mini-batches": (4, 2, 1, False, "seq-mean-token-mean"),
    "2-epochs": (8, 4, 2, False, "token-mean"),
    "dynamic-bsz": (4, 1, 1, True, "seq-mean-token-sum"),  # token-budget micro-batches; scale micro / mini
}
LEGACY_IDS = list(LEGACY_SCENARIOS) if has("legacy_dp_actor") else [f"ABSENT_in_{V}"]
LEGACY_PROMPTS, LEGACY_RESPONSES = [3, 2, 5, 1, 4, 2, 3, 5], [4, 2, 7, 5, 6, 3, 7, 1]


@pytest.fixture(scope="module")
def gloo_group(tmp_path_factory):
    """The one-rank process group the legacy actor's constructor asks for."""
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        init = tmp_path_factory.mktemp("gloo") / "rendezvous"
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=0, world_size=1)
    yield
    if started:
        dist.destroy_process_group()


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=96, bos_token_id=97, eos_token_id=98,
        tie_word_embeddings=False, attn_implementation="eager",
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _response_log_probs(model, b, rows):
    big_p, big_r = b["prompts"].shape[1], b["responses"].shape[1]
    out = model(
        input_ids=b["input_ids"][rows],
        attention_mask=b["attention_mask"][rows],
        position_ids=b["position_ids"][rows],
        use_cache=False,
    )
    logits = out.logits.float()[:, big_p - 1 : big_p + big_r - 1]
    return torch.log_softmax(logits, -1).gather(-1, b["responses"][rows][..., None])[..., 0]


@pytest.mark.parametrize("scenario", LEGACY_IDS)
def test_through_the_legacy_dp_actor_update_policy(scenario, request):
    """verl 0.7.x's DataParallelPPOActor.update_policy on CPU (tiny random Llama, no FSDP, float32): every
    loss call equals the spec on verl's micro-batch (per-micro-batch normalisation: empty
    global_batch_info), old_log_prob is log_prob.detach() exactly when on-policy, and the SGD parameter
    update equals the one from the spec's gradient with verl's loss_scale_factor, step by step."""
    if not has("legacy_dp_actor"):
        import importlib

        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("verl.workers.actor.dp_actor")
        assert not has("legacy_worker_switch"), "no legacy actor, so no trainer.use_legacy_worker_impl"
        return
    request.getfixturevalue("gloo_group")
    from verl import DataProto
    from verl.workers.actor.dp_actor import DataParallelPPOActor

    mini, micro, epochs, dynamic, mode = LEGACY_SCENARIOS[scenario]
    cfg = actor_config(
        [
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
            f"actor_rollout_ref.actor.ppo_epochs={epochs}",
            f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic}",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=24",
            f"actor_rollout_ref.rollout.log_prob_use_dynamic_bsz={dynamic}",
            "actor_rollout_ref.actor.use_kl_loss=False",
            "actor_rollout_ref.actor.entropy_coeff=0",
            "actor_rollout_ref.actor.use_torch_compile=False",
            "actor_rollout_ref.actor.grad_clip=1000000.0",
            "actor_rollout_ref.rollout.n=1",
            "actor_rollout_ref.model.use_remove_padding=False",  # the rmpad path imports flash_attn
        ],
        loss_agg_mode=mode,
        mini_batch=mini,
    )
    assert cfg.ppo_mini_batch_size == mini and cfg.global_batch_info == {}

    model = _tiny_llama()
    reference = copy.deepcopy(model)
    theta0 = [p.detach().clone() for p in model.parameters()]
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    actor = DataParallelPPOActor(config=cfg, actor_module=model, actor_optimizer=optimizer)
    actor.param_dtype = torch.float32  # the FSDP config allows bf16/fp16 only; CPU autocast stays off in float32

    n = len(LEGACY_PROMPTS)
    b = padded_batch(9, LEGACY_PROMPTS, LEGACY_RESPONSES, dtype=torch.float32)
    with torch.no_grad():  # old log-probs: the model's own plus noise, so off-policy ratios are not 1
        lp = _response_log_probs(reference, b, list(range(n)))
    noise = 0.2 * torch.randn(lp.shape, generator=torch.Generator().manual_seed(1))
    b["old_log_probs"] = (lp + noise) * b["response_mask"]
    keys = ("input_ids", "attention_mask", "position_ids", "responses", "response_mask", "old_log_probs", "advantages")
    data = DataProto.from_dict(tensors={k: b[k] for k in keys}, meta_info={"temperature": 1.0, "pad_token_id": 96})
    with LossRecorder() as rec:
        metrics = actor.update_policy(data)
    assert "actor/pg_loss" in metrics

    # The same training by hand: for each of verl's optimizer steps, the spec's loss on each micro-batch
    # (rows found by their advantages), scaled as verl scales it, backward, then one SGD step.
    on_policy = n // mini == 1 and epochs == 1
    ref_optim = torch.optim.SGD(reference.parameters(), lr=lr)
    calls = iter(rec.calls)
    for _ in range(epochs):
        for start in range(0, n, mini):
            want_rows, seen = set(range(start, start + mini)), set()
            ref_optim.zero_grad()
            while seen != want_rows:
                call = next(calls, None)
                assert call is not None, f"verl made fewer loss calls than its mini-batch {sorted(want_rows)} needs"
                t = call["tensors"]
                rows = [next(i for i in range(n) if torch.equal(row, b["advantages"][i])) for row in t["advantages"]]
                assert set(rows) <= want_rows - seen, (rows, sorted(want_rows), sorted(seen))
                seen |= set(rows)
                assert call["global_batch_info"] == {}, call["global_batch_info"]
                assert call["loss_agg_mode"] == mode
                new = _response_log_probs(reference, b, rows)
                close(t["log_prob"], new, "log_prob verl computed vs an independent forward", rtol=1e-4, atol=1e-5)
                if on_policy:
                    assert torch.equal(t["old_log_prob"], t["log_prob"]), "on-policy: old_log_prob = log_prob.detach()"
                else:
                    assert torch.equal(t["old_log_prob"], b["old_log_probs"][rows]), "off-policy: the batch column"
                old = new.detach() if on_policy else b["old_log_probs"][rows]
                adv, mask = b["advantages"][rows].double(), b["response_mask"][rows]
                want = spec_loss(spec, old.double(), new.double(), adv, mask, mode)
                close(call["loss"], want, f"loss of micro-batch {rows}")
                scale = len(rows) / mini if dynamic else 1 / (mini // micro)
                (want * scale).backward()
            ref_optim.step()
    assert next(calls, None) is None, "verl made more loss calls than its mini-batches"
    with torch.no_grad():
        update = max(float((p - p0).abs().max()) for p, p0 in zip(reference.parameters(), theta0))
        worst = max(float((p - q).abs().max()) for p, q in zip(model.parameters(), reference.parameters()))
    assert update > 1e-4, "the update must be visible"
    assert worst <= RTOL * update, f"parameters after update_policy differ by {worst:.2e} (update scale {update:.2e})"


# ---------------------------------------------------------------------------------------------------------
# Hydra: the version's configs with the GRPO-λ overrides, validate_config


@pytest.mark.parametrize("config_name", ["ppo_trainer", "ppo_megatron_trainer"])
def test_hydra_composition_passes_validate_config(config_name):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = compose(PLUGIN_OVERRIDES, config_name)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, GRPOLambdaLossConfig), type(actor.policy_loss)
    assert {key: getattr(actor.policy_loss, key) for key in SETTINGS} == SETTINGS
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (CLIP_LOW, CLIP_HIGH, CLIP_C)
    assert cfg.algorithm.grpo_lambda.adv_clamp == ADV_CLAMP
    assert actor.strategy in (("megatron",) if config_name == "ppo_megatron_trainer" else ("fsdp", "fsdp2"))
    assert not need_critic(cfg)
    assert ("use_legacy_worker_impl" in cfg.trainer) == has("legacy_worker_switch")


def test_hydra_bad_value_is_refused_in_one_line_naming_the_field():
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    cfg = compose([*PLUGIN_OVERRIDES, "actor_rollout_ref.actor.policy_loss.trace_norm=bogus"])
    expected = "actor_rollout_ref.actor.policy_loss.trace_norm must be one of ['none', 'sum'], got 'bogus'"
    for check in (
        lambda: validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)),
        lambda: omega_conf_to_dataclass(cfg.actor_rollout_ref.actor),
    ):
        with pytest.raises(Exception) as info:
            check()
        chain = error_chain(info.value)
        assert "actor_rollout_ref.actor.policy_loss.trace_norm" in str(info.value), repr(info.value)
        assert expected in [str(e) for e in chain if isinstance(e, ValueError)], [repr(e) for e in chain]


def test_plugin_keys_without_the_target_are_refused():
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose([o for o in PLUGIN_OVERRIDES if "policy_loss._target_" not in o])
    with pytest.raises(Exception):  # noqa: B017  (verl's PolicyLossConfig has no field lam)
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


# ---------------------------------------------------------------------------------------------------------
# the launcher: dry runs of one FSDP and one Megatron recipe, and a bad value


DRY_RUNS = {
    "fsdp": ("run_qwen2.5-7b-instruct_grpo_lambda.sh", ()),
    "megatron": ("run_qwen2.5-7b-instruct_grpo_lambda_megatron.sh", ()),
    "bad_value": ("run_qwen2.5-7b-instruct_grpo_lambda.sh", ("+actor_rollout_ref.actor.policy_loss.lam=2",)),
}
DRY_RUN_LIMIT_S = 1800.0


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """``VERL_LAMBDA_DRY_RUN=1 bash recipes/<script>`` with DATA_DIR an empty folder, all at once."""
    data_dir = tmp_path_factory.mktemp("empty_data")
    out_dir = tmp_path_factory.mktemp("configs")
    env = environment_for_subprocess({"VERL_LAMBDA_DRY_RUN": "1", "DATA_DIR": str(data_dir)})
    started, procs = time.monotonic(), {}
    for name, (script, args) in DRY_RUNS.items():
        saved = out_dir / f"{name}.yaml"
        argv = ["bash", str(REPO / "recipes" / script), *args, "--save-config", str(saved)]
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs[name] = (proc, saved, " ".join(argv[1:]))
    results = {}
    for name, (proc, saved, command) in procs.items():
        try:
            out, err = proc.communicate(timeout=max(1.0, DRY_RUN_LIMIT_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            pytest.fail(
                f"waited {time.monotonic() - started:.0f} s for the dry run bash {command} (load average {load})"
            )
        config = yaml.safe_load(saved.read_text()) if saved.exists() else None
        results[name] = (proc.returncode, out, err, config, command)
    return results


@pytest.mark.parametrize("engine", ["fsdp", "megatron"])
def test_recipe_dry_run(dry_runs, engine):
    code, out, err, config, command = dry_runs[engine]
    assert code == 0, f"bash {command} exited {code}\n{out[-3000:]}\n{err[-3000:]}"
    assert "dry run: config composed and checked" in out, out[-3000:]
    actor = config["actor_rollout_ref"]["actor"]
    assert config["algorithm"]["adv_estimator"] == "grpo_lambda"
    assert actor["policy_loss"]["_target_"] == "verl_lambda.verl.config.GRPOLambdaLossConfig"
    assert actor["policy_loss"]["loss_mode"] == "grpo_lambda"
    assert (actor["strategy"] == "megatron") == (engine == "megatron"), actor["strategy"]


def test_recipe_bad_value_is_one_line_before_ray(dry_runs):
    code, out, err, config, command = dry_runs["bad_value"]
    assert code == 2, f"bash {command} exited {code}\n{out[-2000:]}\n{err[-2000:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("verl_lambda.launch.main_ppo: error: actor_rollout_ref.actor.policy_loss.lam must be"), (
        lines
    )
    assert config is None and "ray init kwargs" not in out
