"""A Ray cluster of several nodes on this one machine, for rehearsing ``ray job submit`` recipes.

:class:`LocalCluster` starts a head (``ray start --head``) and more nodes (``ray start --address``),
each with its own temp dir, ports and fake GPUs, and a token of its own (Ray turns token
authentication on when ``~/.ray/auth_token`` exists, and every node and ``ray job`` call must then
carry the same token). :meth:`LocalCluster.stop` ends every process whose command line names one of
its temp dirs, and their descendants — never ``ray stop``, which would end every Ray process of the
machine. :func:`follow_job` waits for a submitted job, writing its log, and returns its final status.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["LocalCluster", "follow_job", "JOB_ID", "free_ports"]

#: what ``ray job submit`` prints as the job's id
JOB_ID = re.compile(r"\b(raysubmit_[A-Za-z0-9]+)\b")
#: a final status in ``ray job status``'s output: "Status for job ...: SUCCEEDED" or "Job '...' succeeded"
_STATUS = re.compile(r"\b(SUCCEEDED|FAILED|STOPPED)\b|Job '[^']+' (succeeded|failed|was stopped)")
_FINAL = {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_ports(count: int) -> list[int]:
    """``count`` TCP ports free on 127.0.0.1 right now."""
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


class LocalCluster:
    """``nodes`` Ray nodes on this machine with ``gpus_per_node`` fake GPUs each (see the module doc)."""

    def __init__(self, nodes: int, gpus_per_node: int, env: Mapping[str, str], log_path: Path, cpus_per_node: int = 32):
        self.nodes, self.gpus_per_node, self.cpus_per_node = nodes, gpus_per_node, cpus_per_node
        self.env = {k: v for k, v in env.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        self.log_path = Path(log_path)
        self.temp_dirs: list[Path] = []
        self.address: str | None = None

    def _run(self, command: list[str]) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            done = subprocess.run(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:3])} exited with status {done.returncode} (log: {self.log_path})")

    def start(self) -> str:
        """Start every node; returns the address of the head's job server (``http://127.0.0.1:PORT``)."""
        gcs, dashboard, client, *ports = free_ports(3 + 6 * self.nodes)
        for i in range(self.nodes):
            temp_dir = Path(tempfile.mkdtemp(prefix=f"vlnode{i}_", dir="/tmp" if os.path.isdir("/tmp") else None))
            self.temp_dirs.append(temp_dir)
            p = ports[6 * i : 6 * i + 6]
            common = [
                f"--num-cpus={self.cpus_per_node}",
                f"--num-gpus={self.gpus_per_node}",
                f"--temp-dir={temp_dir}",
                f"--node-manager-port={p[0]}",
                f"--object-manager-port={p[1]}",
                f"--dashboard-agent-listen-port={p[2]}",
                f"--dashboard-agent-grpc-port={p[3]}",
                f"--metrics-export-port={p[4]}",
                f"--runtime-env-agent-port={p[5]}",
                f"--min-worker-port={21000 + 500 * i}",
                f"--max-worker-port={21000 + 500 * i + 400}",
                "--node-ip-address=127.0.0.1",
                "--disable-usage-stats",
            ]
            if i == 0:
                head = [f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
                head += [f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}"]
                self._run(["ray", "start", "--head", *head, *common])
            else:
                self._run(["ray", "start", f"--address=127.0.0.1:{gcs}", *common])
        self.address = f"http://127.0.0.1:{dashboard}"
        return self.address

    def stop(self, grace_s: float = 5.0) -> list[int]:
        """End every process of this cluster and remove its temp dirs; returns the pids signalled."""
        import psutil

        markers = [str(t) for t in self.temp_dirs]
        seen: dict[int, None] = {}
        for signal_name in ("terminate", "kill"):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(proc.info["cmdline"] or [])
                if proc.pid != os.getpid() and any(m in line for m in markers):
                    seen[proc.pid] = None
                    try:
                        seen.update((c.pid, None) for c in proc.children(recursive=True))
                    except psutil.Error:
                        pass
            procs = []
            for pid in seen:
                try:
                    proc = psutil.Process(pid)
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        getattr(proc, signal_name)()
                        procs.append(proc)
                except psutil.Error:
                    pass
            if not procs:
                break
            psutil.wait_procs(procs, timeout=grace_s)
        for temp_dir in self.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)
        return list(seen)


def follow_job(address: str, job: str, env: Mapping[str, str], log_path: Path, timeout_s: float) -> str:
    """Write ``job``'s log to ``log_path`` until it ends (or ``timeout_s`` passes, then stop it); its
    final status: ``SUCCEEDED``, ``FAILED``, ``STOPPED`` or ``TIMED OUT``."""
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        try:
            subprocess.run(
                ["ray", "job", "logs", f"--address={address}", "--follow", job],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            subprocess.run(["ray", "job", "stop", f"--address={address}", job], env=dict(env), capture_output=True)
            return "TIMED OUT"
    remaining = max(30.0, timeout_s - (time.monotonic() - started))
    deadline = time.monotonic() + remaining
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["ray", "job", "status", f"--address={address}", job], env=dict(env), capture_output=True, text=True
        )
        found = _STATUS.findall(_ANSI.sub("", done.stdout + done.stderr))
        if found:
            upper, lower = found[-1]
            return upper or _FINAL[lower]
        time.sleep(2)
    return "TIMED OUT"
