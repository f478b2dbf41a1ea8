"""The package's layout: folders by role, imports that run one way, no cycle even inside a function."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import verl_lambda
import verl_lambda.patches

PACKAGE = Path(verl_lambda.__file__).resolve().parent
PATCHES = Path(verl_lambda.patches.__file__).resolve().parent


def _module_files() -> dict[str, Path]:
    files = {}
    for root, prefix in ((PACKAGE, "verl_lambda"), (PATCHES, "verl_lambda.patches")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


FILES = _module_files()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (itself, or its longest project prefix), or None."""
    while name and name not in FILES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every project module ``module`` imports, at module level or inside a function."""
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    package = module if FILES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in FILES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles_inside_functions_too():
    """The check can fail: a lazy import back is a cycle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    fake = ast.parse("def f():\n    from verl_lambda.verl import register\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(fake))  # ast.walk reaches function bodies


def test_no_module_imports_one_that_imports_it_back():
    assert find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(find_cycle(GRAPH))}"


def test_the_verl_glue_imports_run_one_way():
    order = ["keys", "version", "estimator", "loss", "register", "config"]
    for i, name in enumerate(order):
        later = {f"verl_lambda.verl.{m}" for m in order[i + 1 :]}
        assert not GRAPH[f"verl_lambda.verl.{name}"] & later, f"verl_lambda.verl.{name} imports a later module"
    assert GRAPH["verl_lambda.verl.keys"] <= {"verl_lambda.core.settings"}  # no verl: cheap for every command


def test_at_most_four_modules_directly_under_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 4, top


@pytest.mark.parametrize("package", ["verl_lambda.verl", "verl_lambda.launch", "verl_lambda.math"])
def test_a_package_init_imports_nothing(package):
    """Importing a role's folder costs nothing; each module is imported for what it does."""
    assert GRAPH[package] == set()
    tree = ast.parse(FILES[package].read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_the_public_module_paths_exist():
    from verl_lambda.verl.keys import MATH_REWARD, REGISTER_MODULE, TARGET

    for module in (REGISTER_MODULE, TARGET.rpartition(".")[0], MATH_REWARD.removeprefix("pkg://")):
        assert importlib.util.find_spec(module) is not None, module
    import verl_lambda.verl.config as config

    assert hasattr(config, TARGET.rpartition(".")[2])
