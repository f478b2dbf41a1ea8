"""The verl version matrix (``tests/matrix``): runs against whatever verl is installed.

``python -m pytest -q tests/matrix`` in a venv with verl 0.7.1, 0.8.0, 0.9.0 or 0.9.1 (``.ci/verl_matrix.sh``
builds them); the main suite collects it too. At the end the terminal summary says which verl was tested
and which of its features (``matrix_support.FEATURES``) the tests found present or absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE):  # tests/ (spec_reference, ray_wait) and this folder (matrix_support)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

_RAN = {"matrix": False}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _RAN["matrix"] and Path(str(report.fspath)).resolve().parent == _HERE:
        _RAN["matrix"] = True


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _RAN["matrix"]:
        return
    from matrix_support import FEATURES, VERL_ROOT, VERL_VERSION, versions_line

    tr = terminalreporter
    tr.write_line(f"verl matrix: verl {VERL_VERSION} at {VERL_ROOT} ({versions_line()})")
    present = [name for name, f in FEATURES.items() if f.present]
    absent = [name for name, f in FEATURES.items() if not f.present]
    tr.write_line(
        f"verl matrix: present: {', '.join(present) or '-'}; absent (asserted absent): {', '.join(absent) or '-'}"
    )
