"""Shared test helpers: running the recipe scripts with bash, fast.

``run_script`` runs ``bash recipes/<script> ...`` for real. Each script starts
``python3 -m verl_lambda.launch.main_ppo``; to avoid paying verl's import time in every one of them, a
``python3`` shim first on PATH forwards exactly that call to a warm server process
(``tests/fixtures/launcher_server.py``) that runs the module as ``__main__`` in a forked child
with the script's arguments, environment, working directory and file descriptors. Every other
``python3`` call runs the real interpreter. Set ``VERL_LAMBDA_TEST_REAL_PYTHON=1`` to skip the
server and start a fresh interpreter for every call.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SOCKET_ENV = "VERL_LAMBDA_TEST_LAUNCHER_SOCKET"

_SHIM = """#!{python} -S
import json, os, socket, sys

args = sys.argv[1:]
path = os.environ.get("{socket_env}")
if path and args[:2] == ["-m", "verl_lambda.launch.main_ppo"]:
    body = json.dumps({{"module": args[1], "args": args[2:], "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [len(body).to_bytes(8, "big") + body[:60000]], [0, 1, 2])
        conn.sendall(body[60000:])
        reply = b""
        while not reply.endswith(b"\\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            reply += chunk
    code = int(reply.strip() or b"1")
    sys.exit(code if code >= 0 else 1)
os.execv({python!r}, [{python!r}, *args])
"""


class ScriptRunner:
    def __init__(self, shim_dir: Path | None, socket_path: str | None):
        self.shim_dir = shim_dir
        self.socket_path = socket_path

    def env(self, extra: dict | None = None, path_prefix: Path | None = None) -> dict:
        env = dict(os.environ)
        env.pop("VERL_LAMBDA_DRY_RUN", None)
        dirs = [str(p) for p in (path_prefix, self.shim_dir) if p is not None]
        env["PATH"] = os.pathsep.join([*dirs, str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.socket_path:
            env[SOCKET_ENV] = self.socket_path
        env.update(extra or {})
        return env

    def __call__(
        self,
        script: str,
        *args: str,
        env: dict | None = None,
        path_prefix: Path | None = None,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(RECIPES / script), *args],
            cwd=REPO,
            env=self.env(env, path_prefix),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def run_script() -> Callable[..., subprocess.CompletedProcess]:
    """``run_script(name, *args, env={...})`` → CompletedProcess of ``bash recipes/<name> args``."""
    if os.environ.get("VERL_LAMBDA_TEST_REAL_PYTHON"):
        yield ScriptRunner(None, None)
        return
    workdir = Path(tempfile.mkdtemp(prefix="verl_lambda_test_"))
    socket_path = str(workdir / "launcher.sock")
    shim_dir = workdir / "bin"
    shim_dir.mkdir()
    for name in ("python3", "python"):
        shim = shim_dir / name
        shim.write_text(_SHIM.format(python=sys.executable, socket_env=SOCKET_ENV))
        shim.chmod(0o755)
    server = subprocess.Popen(
        [sys.executable, str(FIXTURES / "launcher_server.py"), socket_path],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = server.stdout.readline().strip()
        if ready != "ready":
            pytest.fail(f"launcher test server did not start (said {ready!r}, exit {server.poll()})")
        yield ScriptRunner(shim_dir, socket_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
        for p in sorted(workdir.rglob("*"), reverse=True):
            p.unlink() if not p.is_dir() else p.rmdir()
        workdir.rmdir()
