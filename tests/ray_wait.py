"""Waiting for Ray in the tests: bounded, generous, and saying what was waited for."""

from __future__ import annotations

import os
import time

import pytest


def ray_result(ray, ref, what: str, limit_s: float = 1800.0, poll_s: float = 30.0):
    """``ray.get(ref)`` for a test: waits as long as a loaded machine needs (polling, up to ``limit_s``),
    and on a timeout fails saying what it waited for, for how long, and how loaded the machine was."""
    start = time.monotonic()
    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        if ready:
            return ray.get(ready[0])
        waited = time.monotonic() - start
        if waited >= limit_s:
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            pytest.fail(f"waited {waited:.0f} s for {what} (load average {load}); Ray never answered")
