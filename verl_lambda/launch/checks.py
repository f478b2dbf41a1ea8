"""Every check ``python -m verl_lambda.launch.main_ppo`` makes of a composed config before Ray starts.

General verl checks come from :mod:`verl_lambda.launch.preflight`, the GRPO-λ ones from
:mod:`verl_lambda.launch.grpo_lambda`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig

from verl_lambda.launch.grpo_lambda import (
    GRPOLambdaRun,
    check_grpo_lambda,
    check_job_environment,
    environment_warnings,
)
from verl_lambda.launch.preflight import RunShape, check_local_files, preflight

__all__ = ["LaunchReport", "check_launch"]


@dataclass
class LaunchReport:
    """What :func:`check_launch` found: the run's numbers, its GRPO-λ settings (None: off), warnings."""

    shape: RunShape
    grpo_lambda: GRPOLambdaRun | None
    warnings: list[str]


def check_launch(cfg: DictConfig, dry_run: bool = False, environ: Mapping[str, str] | None = None) -> LaunchReport:
    """Check a composed ``main_ppo`` config; raise :class:`~verl_lambda.cli.LaunchError` (one line) if
    it must not start. In a dry run, missing local data and model directories are warnings."""
    environ = os.environ if environ is None else environ
    shape = preflight(cfg)
    run = check_grpo_lambda(cfg, environ)
    check_local_files(cfg, shape, dry_run)
    warnings = shape.warnings + environment_warnings(run, environ) + check_job_environment(environ)
    return LaunchReport(shape=shape, grpo_lambda=run, warnings=warnings)
