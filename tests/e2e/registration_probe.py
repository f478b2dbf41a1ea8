"""Which registration arguments reach verl's Ray workers? verl's own driver path, a probe TaskRunner.

usage: python registration_probe.py OUT.json [hydra overrides...]

Composes verl 0.9.1's ``ppo_trainer`` config with the overrides (as ``python -m
verl.trainer.main_ppo`` would), then calls verl's own ``run_ppo`` — which merges
``ray_kwargs.ray_init.runtime_env`` into its default runtime env and calls ``ray.init`` — with a
probe in place of the TaskRunner. Like verl's TaskRunner, the probe runs
``OmegaConf.resolve(config)``; it then writes to OUT.json what the Ray worker saw: its
``VERL_USE_EXTERNAL_MODULES``, whether resolving worked, whether ``import verl`` loaded the user's
module (:mod:`e2e_user_module`) and registered ``grpo_lambda``.
"""

import json
import os
import sys

import ray
import verl.trainer
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.main_ppo import run_ppo


@ray.remote(num_cpus=0)
class ProbeTaskRunner:
    """Stands in for verl's TaskRunnerV1: same Ray process kind, same first steps."""

    def run(self, config) -> None:
        seen = {"modules_env": os.environ.get("VERL_USE_EXTERNAL_MODULES")}
        try:
            OmegaConf.resolve(config)
            seen["resolve"] = "ok"
        except Exception as err:
            seen["resolve"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
        try:
            from verl.trainer.ppo import core_algos  # "import verl" runs VERL_USE_EXTERNAL_MODULES and entry points

            seen["import_verl"] = "ok"
            seen["registered"] = "grpo_lambda" in core_algos.ADV_ESTIMATOR_REGISTRY
        except Exception as err:
            seen["import_verl"] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            seen["registered"] = False
        seen["user_module"] = "e2e_user_module" in sys.modules  # imported in this worker by "import verl"
        with open(os.environ["REGISTRATION_PROBE_OUT"], "w") as out:
            json.dump(seen, out)


def main() -> None:
    out, overrides = sys.argv[1], sys.argv[2:]
    os.environ["REGISTRATION_PROBE_OUT"] = out
    config_dir = os.path.join(os.path.dirname(verl.trainer.__file__), "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose("ppo_trainer", overrides=overrides)
    run_ppo(config, ProbeTaskRunner)
    ray.shutdown()


if __name__ == "__main__":
    main()
