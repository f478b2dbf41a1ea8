"""End-to-end suite: verl 0.9.1's real trainer on the CPU harness of :mod:`verl_lambda.smoke`.

* Marker ``e2e`` (registered here, put on every test of the ``test_e2e_*.py`` files):
  ``python -m pytest -m e2e`` runs only the end-to-end suite, ``-m "not e2e"`` everything else
  (test_smoke_units.py holds fast checks of the harness and stays unmarked).
* The tiny model and data are built once per session in a temp dir (``harness_assets``).
* ``trainer_outcome(run)`` runs a :class:`e2e_support.TrainerRun` once per session and caches the
  outcome, so several tests check one run; runs happen one after another, never two at a time.
* The suite refuses to start when ``RAY_ADDRESS`` is set: every run starts its own local Ray
  cluster in a private temp dir and ends all of its processes, also on failure or time-out.
* At the end, the terminal summary lists every run's wall time and the suite's total.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import TIMES, record_time

REPORT_ENV = "VERL_LAMBDA_E2E_REPORT"  # optional JSON file for the run times
_SPAN: dict[str, float] = {}  # first e2e fixture set-up, last e2e test's end


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end runs of verl's real trainer on the CPU harness (minutes each; select with -m e2e)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path.parent == here and path.name.startswith("test_e2e_"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_guard() -> None:
    """Fail (not skip) when the suite could touch a Ray cluster it did not start."""
    if os.environ.get("RAY_ADDRESS"):
        pytest.fail(
            f"RAY_ADDRESS={os.environ['RAY_ADDRESS']} is set: the e2e suite starts its own local Ray clusters and "
            "refuses to run next to one it did not start; unset RAY_ADDRESS"
        )
    _SPAN.setdefault("start", time.monotonic())


@pytest.fixture(scope="session")
def harness_assets(e2e_guard, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model and dataset, built once per session."""
    from verl_lambda.smoke.assets import build_assets

    started = time.monotonic()
    assets = build_assets(tmp_path_factory.mktemp("harness_assets"))
    record_time("(build the tiny model and data)", time.monotonic() - started, True)
    return assets


@pytest.fixture(scope="session")
def e2e_work_root(e2e_guard, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e_runs")


@pytest.fixture(scope="session")
def trainer_outcome(harness_assets, e2e_work_root, tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """``trainer_outcome(run)`` → the run's :class:`e2e_support.RunOutcome`, executed once per session.

    A Megatron run gets the tiny model with its vocabulary padded for tensor parallelism (built once)."""
    cache: dict = {}
    assets = {"fsdp": harness_assets}

    def get(run):
        if run.engine not in assets:
            from verl_lambda.smoke.assets import build_assets
            from verl_lambda.smoke.harness import MEGATRON_VOCAB_MULTIPLE

            assets[run.engine] = build_assets(tmp_path_factory.mktemp(f"{run.engine}_assets"), MEGATRON_VOCAB_MULTIPLE)
        if run.name not in cache:
            outcome = run.execute(assets[run.engine], e2e_work_root)
            record_time(run.name, outcome.result.wall_s, outcome.result.ok)
            cache[run.name] = outcome
        return cache[run.name]

    return get


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    if "start" in _SPAN and "e2e/" in nodeid.replace("\\", "/"):
        _SPAN["end"] = time.monotonic()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not TIMES:
        return
    total = _SPAN.get("end", time.monotonic()) - _SPAN.get("start", time.monotonic())
    terminalreporter.section("e2e run times")
    for entry in TIMES:
        terminalreporter.write_line(f"{entry['wall_s']:8.1f} s  {'ok  ' if entry['ok'] else 'FAIL'}  {entry['run']}")
    terminalreporter.write_line(f"{total:8.1f} s  the whole e2e suite (first set-up to last e2e test)")
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).write_text(json.dumps({"runs": TIMES, "suite_s": round(total, 1)}, indent=1))
