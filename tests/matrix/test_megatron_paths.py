"""verl's Megatron paths with the registered GRPO-λ loss, on the CPU: the loss must see whole responses.

The GRPO-λ loss runs an eligibility trace along each response, so a Megatron path that handed it part of a
response (a CP chunk, a split sample) would train on a wrong objective without an error. Each test launches
one probe script with ``torchrun`` (2 processes, gloo, a free port, a bounded timeout) that runs verl's own
code with a position-wise stand-in model, checks every case against a float64 reference built by hand, and
runs a negative control that the checks must catch:

* ``megatron_cp_probe.py`` (verl >= 0.8.0, the ``megatron_engine_cp`` feature): the Megatron engine's
  ``forward_backward_batch`` through Megatron's schedule and ``partial(ppo_loss, config=actor_config)``,
  THD and BSHD at CP 2 and CP 1, dynamic batch size, the per-token loss (>= 0.9.0); control: the CP
  all-gather disabled;
* ``megatron_legacy_actor_probe.py`` (verl 0.7.x, ``megatron_legacy_actor``, the default Megatron worker
  there): ``MegatronPPOActor.update_policy`` and its ``loss_func``, THD at CP 2 and 1, BSHD, dynamic batch
  size, 2 mini-batches x 2 epochs; control: the CP all-gather disabled.

A path the installed verl lacks is asserted absent (its test id says so), as everywhere in tests/matrix.
Without megatron-core in the venv the tests skip and say so (``.ci/verl_matrix.sh`` installs it in every
matrix venv and counts a skip as a failure).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import megatron_cp_probe as cp_probe  # tests/matrix is on sys.path (conftest.py)
import megatron_legacy_actor_probe as legacy_probe
import pytest
from matrix_support import REPO, VERL_ROOT, VERL_VERSION, environment_for_subprocess, has, megatron_core_version

HERE = Path(__file__).resolve().parent
V = f"verl_{VERL_VERSION}"
LAUNCH_LIMIT_S = 300  # one launch takes 30-45 s on 2 shared cores
LOSS_ATOL, LOSS_RTOL, GRAD_RTOL, ROW_ATOL = 1e-6, 1e-5, 1e-5, 1e-6


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, tmp_path: Path, *args: str) -> dict:
    """``torchrun --nproc-per-node=2`` of a probe in this interpreter; its JSON results (and its output)."""
    if megatron_core_version() is None:
        pytest.skip(f"megatron-core is not installed in this venv ({sys.prefix}): the Megatron paths need it")
    out = tmp_path / f"{Path(script).stem}.json"
    for attempt in range(2):  # the free port can be taken between choosing it and binding it
        argv = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
            f"--master-port={_free_port()}", str(HERE / script), "--out", str(out), *args,
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(  # its own process group: a timeout ends torchrun and both workers
            argv, cwd=REPO, env=environment_for_subprocess({"OMP_NUM_THREADS": "1"}), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=LAUNCH_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, _ = proc.communicate()
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            pytest.fail(f"{script} ran past {LAUNCH_LIMIT_S} s (load {load}):\n{stdout[-3000:]}")
        output = stdout + stderr
        if proc.returncode == 0 and out.exists():
            break
        if attempt == 0 and "address already in use" in output.lower():
            continue
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{output[-6000:]}")
    report = [line for line in stdout.splitlines() if line.startswith(("[", "    ", "verl "))]
    print(f"$ torchrun {script} {' '.join(args)}  ({time.monotonic() - started:.1f} s)", *report, sep="\n")
    results = json.loads(out.read_text())["results"]
    return {(r["case"], r["no_cp_gather"]): r for r in results}


def assert_case_passed(r: dict) -> None:
    assert r["verdict"] == "PASS", f"{r['case']}: {r['problems']}\n{r.get('error', '')}"
    assert r["row_err"] <= ROW_ATOL, r
    assert r["loss_abs_err"] <= LOSS_ATOL or r["loss_rel_err"] <= LOSS_RTOL, r
    assert r["grad_err"] <= GRAD_RTOL * r["grad_scale"] and r["grad_scale"] > 1e-2, r
    assert not r["problems"], r["problems"]


def assert_control_caught(r: dict) -> None:
    """With the CP all-gather disabled the checks themselves must fail: rows, loss and gradient off by far
    more than the tolerances, the gather hook used (not a crash, not a silently unused control)."""
    assert r["verdict"] == "FAIL", f"{r['case']} passed with the CP all-gather disabled: the check is blind"
    assert "error" not in r, f"the control crashed instead of failing the checks:\n{r['error']}"
    assert r["gathers_disabled"], r
    assert r["row_err"] > 1e3 * ROW_ATOL, r
    assert r["loss_abs_err"] > 1e3 * LOSS_ATOL and r["loss_rel_err"] > 1e3 * LOSS_RTOL, r
    assert r["grad_err"] > 1e3 * GRAD_RTOL * r["grad_scale"], r
    assert any(p.startswith("rows seen by the loss differ") for p in r["problems"]), r["problems"]


# ---------------------------------------------------------------------------------------------------------
# the Megatron engine at CP 2 / CP 1 (verl >= 0.8.0)


CP_CASES = [c[0] for c in cp_probe.cases_of_this_verl()] if has("megatron_engine_cp") else [f"ABSENT_in_{V}"]
CP_CONTROLS = (
    [c[0] for c in cp_probe.cases_of_this_verl() if c[2] == 2] if has("megatron_engine_cp") else [f"ABSENT_in_{V}"]
)
if has("megatron_engine_cp") and not has("megatron_per_token_loss"):  # 0.8.x: no 3-tuple per-token loss path
    CP_CASES.append(f"per-token-loss-ABSENT_in_{V}")


@pytest.fixture(scope="module")
def cp_results(tmp_path_factory):
    return launch("megatron_cp_probe.py", tmp_path_factory.mktemp("cp"), "--with-control")


def _assert_no_engine_cp_path():
    source = (VERL_ROOT / "models/mcore/model_forward.py").read_text()
    assert "def gptmodel_forward_model_engine(" not in source
    assert has("megatron_legacy_actor"), "no Megatron engine CP path: the legacy actor is verl's Megatron path"


@pytest.mark.parametrize("case", CP_CASES)
def test_megatron_engine_hands_the_loss_whole_rows(case, request):
    """verl's real Megatron-engine path (CP split / gather, micro-batches, Megatron's schedule, ppo_loss):
    every loss call got whole right-padded response rows, equal on every CP rank to the reference rows; the
    loss equals the spec's; the gradient DDP applies (sum over CP of the local-chunk gradients) equals the
    reference gradient."""
    if not has("megatron_engine_cp"):  # 0.7.x: its opt-in engine predates this path (legacy actor: below)
        _assert_no_engine_cp_path()
        return
    if case.startswith("per-token-loss-ABSENT"):  # 0.8.x: the engine returns Megatron a 2-tuple only
        assert "calculate_per_token_loss" not in (VERL_ROOT / "workers/engine/megatron/transformer_impl.py").read_text()
        return
    r = request.getfixturevalue("cp_results")[(case, False)]
    assert_case_passed(r)
    assert r["calls"] == 2 and len(r["loss_shapes"]) == 2, r  # 4 samples, 2 micro-batches
    if not r["dynamic_bsz"]:
        assert r["micro_batches"] == [[0, 1], [2, 3]], r
    assert r["grad_syncs"] == 1, r


@pytest.mark.parametrize("case", CP_CONTROLS)
def test_megatron_engine_check_fails_without_the_cp_gather(case, request):
    """Negative control: the same run with the CP all-gather keeping only the local chunk (the loss then
    sees its CP chunk only, as if verl computed it per chunk) must fail the checks above."""
    if not has("megatron_engine_cp"):
        _assert_no_engine_cp_path()
        return
    assert_control_caught(request.getfixturevalue("cp_results")[(case, True)])


# ---------------------------------------------------------------------------------------------------------
# the legacy MegatronPPOActor (verl 0.7.x's default Megatron worker)


LEGACY_CASES = [c[0] for c in legacy_probe.CASES] if has("megatron_legacy_actor") else [f"ABSENT_in_{V}"]
LEGACY_CONTROLS = (
    [c[0] for c in legacy_probe.CASES if c[2] == 2] if has("megatron_legacy_actor") else [f"ABSENT_in_{V}"]
)


@pytest.fixture(scope="module")
def legacy_results(tmp_path_factory):
    return launch("megatron_legacy_actor_probe.py", tmp_path_factory.mktemp("legacy"), "--with-control")


def _assert_no_legacy_actor():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("verl.workers.actor.megatron_actor")
    assert not has("legacy_worker_switch"), "no legacy Megatron actor, so no trainer.use_legacy_worker_impl"


@pytest.mark.parametrize("case", LEGACY_CASES)
def test_legacy_megatron_actor_hands_the_loss_whole_rows(case, request):
    """verl 0.7.x's MegatronPPOActor.update_policy (its loss_func, Megatron's schedule, the optimizer steps):
    every loss call got whole right-padded [micro_batch, response_length] rows of its mini-batch, in order,
    through the 7 keywords of 0.7.1's call; loss, per-step gradient and the parameters after update_policy
    equal the float64 reference."""
    if not has("megatron_legacy_actor"):  # gone from verl 0.8.0: the engine path above replaces it
        _assert_no_legacy_actor()
        return
    r = request.getfixturevalue("legacy_results")[(case, False)]
    assert_case_passed(r)
    assert r["param_err"] <= GRAD_RTOL * r["grad_scale"] * r["steps"], r
    assert r["loss_shapes"] and all(shape[1] == max(legacy_probe.RESPONSE_LENS) for shape in r["loss_shapes"]), r
    assert r["grad_syncs"] == r["steps"] == (4 if "2epochs" in case else 1), r


@pytest.mark.parametrize("case", LEGACY_CONTROLS)
def test_legacy_megatron_actor_check_fails_without_the_cp_gather(case, request):
    """Negative control: the legacy actor at CP 2 with the CP all-gather keeping only the local chunk must
    fail the checks above."""
    if not has("megatron_legacy_actor"):
        _assert_no_legacy_actor()
        return
    r = request.getfixturevalue("legacy_results")[(case, True)]
    assert_control_caught(r)
    assert r["param_err"] > 1e3 * GRAD_RTOL * r["grad_scale"], r
