"""The layers of docs/architecture.md, held: imports point one way, and no module imports another
that (directly or not) imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
LOWER = ("store", "dockerfile", "builder", "bundle", "sandbox", "engine", "models", "errors", "config")
# What each layer may not import.
FORBIDDEN = {
    "services": ("orch.workers", "orch.server", "orch.cli"),
    "workers": ("orch.server", "orch.cli"),
    **{name: ("orch.services", "orch.workers", "orch.server", "orch.cli") for name in LOWER},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "orch").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The orch modules `path` imports (at any depth of its code, function bodies included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in known}


MODULES = _modules()
GRAPH = {name: _imports(path, set(MODULES)) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_point_one_way(layer: str) -> None:
    wrong = {
        (name, target)
        for name, targets in GRAPH.items()
        if name == f"orch.{layer}" or name.startswith(f"orch.{layer}.")
        for target in targets
        if target.startswith(FORBIDDEN[layer])
    }
    assert not wrong, f"{layer} imports what it may not: {sorted(wrong)}"


def test_no_module_imports_itself_back() -> None:
    # A package's __init__ is left out: importing a submodule always runs its package first.
    graph = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in GRAPH.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph.get(name, ())):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_walk_sees_the_code() -> None:
    """The checks above would pass on nothing: make sure they see what they check."""
    assert "orch.workers.runs" in GRAPH and "orch.services.platform" in GRAPH["orch.workers.runs"]
