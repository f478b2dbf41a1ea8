"""What a plain-verl user must write so that their own modules and ``verl_lambda.verl.register`` reach the workers.

Each candidate runs verl 0.9.1's own driver code (Hydra composition, ``run_ppo``'s runtime-env
merge and ``ray.init``) with a probe TaskRunner (``registration_probe.py``) that resolves the
config as verl's TaskRunner does and imports verl. The user's own module is
:mod:`e2e_user_module`, listed in the driver's ``VERL_USE_EXTERNAL_MODULES``. The full training
run with the working form is ``lambda_plain_verl`` in test_e2e_trainer.py.
"""

from __future__ import annotations

import json
import os
import sys

import e2e_support as e2e
import pytest

from verl_lambda.smoke.harness import make_ray_temp_dir, refuse_foreign_ray, run_logged

KEY = e2e.REGISTRATION_KEY
PROBE = e2e.HERE / "registration_probe.py"
RAY = [
    "++ray_kwargs.ray_init.address=local",
    "++ray_kwargs.ray_init.num_cpus=2",
    "++ray_kwargs.ray_init.include_dashboard=False",
]
DOCUMENTED = f"\"+{KEY}='${{VERL_USE_EXTERNAL_MODULES:+$VERL_USE_EXTERNAL_MODULES,}}verl_lambda.verl.register'\""

# name -> (the argument as the user types it in bash, what the worker sees)
CANDIDATES = {
    # the old recipe form: the runtime-env value replaces the driver's variable
    "recipe_key_alone": (f"+{KEY}=verl_lambda.verl.register", {"user_module": False, "registered": True}),
    # Ray would expand ${VAR}, but verl's TaskRunner runs OmegaConf.resolve(config) first
    "unescaped_ray_expansion": (
        f"'+{KEY}=\"${{VERL_USE_EXTERNAL_MODULES}},verl_lambda.verl.register\"'",
        {"resolve": "InterpolationKeyError", "user_module": True, "registered": True},
    ),
    # OmegaConf's escape survives resolution, but Ray receives the backslash
    "escaped_ray_expansion": (
        f"'+{KEY}=\"\\${{VERL_USE_EXTERNAL_MODULES}},verl_lambda.verl.register\"'",
        {"resolve": "ok", "user_module": False, "registered": False, "modules_env_starts": "\\"},
    ),
    # OmegaConf's oc.env resolver: the driver hands Ray the unresolved text
    "oc_env_resolver": (
        f"'+{KEY}=\"${{oc.env:VERL_USE_EXTERNAL_MODULES}},verl_lambda.verl.register\"'",
        {"user_module": False, "registered": False, "modules_env_starts": "${oc.env"},
    ),
    # the documented form: the shell expands the variable, the value is a plain list
    "shell_expansion": (DOCUMENTED, {"resolve": "ok", "user_module": True, "registered": True}),
    # no key: a local Ray cluster inherits the driver's variable, the verl.plugins entry point registers
    "no_key_entry_point": ("", {"resolve": "ok", "user_module": True, "registered": True}),
}


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_registration_candidate(name, e2e_guard, tmp_path):
    argument, expected = CANDIDATES[name]
    ray_temp_dir = make_ray_temp_dir()
    out = tmp_path / "seen.json"
    ray_args = " ".join([*RAY, f"++ray_kwargs.ray_init._temp_dir={ray_temp_dir}"])
    script = f'exec "{sys.executable}" "{PROBE}" "{out}" {ray_args} {argument}'
    refuse_foreign_ray(os.environ, RAY)
    env = dict(os.environ)
    env["VERL_USE_EXTERNAL_MODULES"] = "e2e_user_module"
    env["PYTHONPATH"] = os.pathsep.join([str(e2e.HERE), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("VERL_PLATFORM", None)
    result = run_logged(["bash", "-c", script], env, tmp_path / "probe.log", 300, ray_temp_dir=ray_temp_dir)
    e2e.record_time(f"registration probe: {name}", result.wall_s, result.ok)
    assert result.ok and out.exists(), f"probe '{name}' ({script}) ended without a report:\n{result.tail(40)}"
    seen = json.loads(out.read_text())
    for field, want in expected.items():
        if field == "resolve":
            assert seen["resolve"].startswith(want), seen
        elif field == "modules_env_starts":
            assert (seen["modules_env"] or "").startswith(want), seen
        else:
            assert seen[field] == want, f"{name}: {field} = {seen[field]!r}, expected {want!r} ({seen})"
