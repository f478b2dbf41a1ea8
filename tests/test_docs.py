"""The documentation's settings tables are the settings, and the layout has no import cycles."""

import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import verl_lambda
import verl_lambda.patches

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("settings_tables", ROOT / "docs" / "settings_tables.py")
settings_tables = importlib.util.module_from_spec(spec)
spec.loader.exec_module(settings_tables)


@pytest.mark.parametrize("name", settings_tables.FILES)
def test_the_committed_settings_tables_are_generated_from_the_settings(name):
    text = (ROOT / name).read_text(encoding="utf-8")
    assert "<!-- settings-table:" in text, f"{name} has no settings table"
    assert settings_tables.render(text) == text, "run python docs/settings_tables.py"


def test_a_table_lists_every_setting_with_its_default():
    from verl_lambda.core.settings import setting_fields

    table = settings_tables.table("verl")
    for f in setting_fields():
        assert f"policy_loss.{f.name}`" in table or f"grpo_lambda.{f.name}`" in table
    assert "| `actor_rollout_ref.actor.policy_loss.lam` | `0.99` |" in table
    assert "| `algorithm.grpo_lambda.adv_clamp` | `-0.1` |" in table
    assert "| `--lambda.adv_clamp` | `GRPO_LAMBDA_ADV_CLAMP` | `-0.1` |" in settings_tables.table("openrlhf")


MODULES = sorted(
    name
    for package in (verl_lambda, verl_lambda.patches)
    for _, name, _ in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not name.endswith("__main__")
)


# the verl glue, which ``import verl`` itself may import the plugin into (VERL_USE_EXTERNAL_MODULES)
GLUE = ["verl_lambda.verl.config", "verl_lambda.verl.register", "verl_lambda.launch", "verl_lambda.launch.main_ppo"]
CASES = [(m, "") for m in MODULES] + [(m, "verl_lambda.verl.register") for m in GLUE]


@pytest.mark.parametrize("module, external", CASES, ids=[f"{m}{'+external' if e else ''}" for m, e in CASES])
def test_each_module_imports_alone_in_a_fresh_interpreter(module, external):
    """No import cycle, also when ``import verl`` itself imports the plugin (VERL_USE_EXTERNAL_MODULES)."""
    env = {**os.environ, "VERL_USE_EXTERNAL_MODULES": external}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_pure_core_imports_no_framework():
    code = (
        "import sys; import verl_lambda.core.settings, verl_lambda.core.trace, verl_lambda.core.objective, "
        "verl_lambda.core.advantage; "
        "frameworks = ('verl', 'omegaconf', 'hydra', 'ray', 'openrlhf', 'transformers'); "
        "print(sorted(m for m in frameworks if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_package_is_installed():
    """pyproject.toml lists packages by hand (patches/ maps to verl_lambda.patches): none may be missing."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"verl_lambda", "verl_lambda.patches"} | {
        name
        for package in (verl_lambda, verl_lambda.patches)
        for _, name, is_package in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
        if is_package
    }
    assert found == listed


SWITCHES = [
    "algorithm.adv_estimator=grpo_lambda",
    "actor_rollout_ref.actor.policy_loss._target_=verl_lambda.verl.config.GRPOLambdaLossConfig",
    "actor_rollout_ref.actor.policy_loss.loss_mode=grpo_lambda",
]


@pytest.mark.parametrize("name", ["README.md", "docs/grpo_lambda.md", "recipes/README.md", "recipes/lib.sh"])
def test_one_canonical_override_set_everywhere(name):
    """README, reference, recipes and the recipes' body switch GRPO-λ on with the same three lines
    (and nothing tells users to pass the registration key, which the launcher merges)."""
    text = (ROOT / name).read_text(encoding="utf-8")
    for switch in SWITCHES:
        assert switch in text, f"{name} lacks {switch}"
    assert "VERL_USE_EXTERNAL_MODULES=verl_lambda.verl.register \\" not in text
