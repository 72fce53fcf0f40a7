"""The layout rules the Layout section of docs/development.md states, checked on the source: no import cycles, Redis in one place.

Every import counts, including those inside functions (a lazy import hides a cycle, it doesn't remove
it); only ``if TYPE_CHECKING:`` blocks are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "worker"
REDIS_ALLOWED = ("worker.store", "worker.dev")
"""The store owns every Redis call; the dev harness starts and probes Redis servers for the demo and tests."""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> set[str]:
    """Every module ``name`` imports (project modules resolved to the deepest module that exists)."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for child in ast.walk(node) if child is not node)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


GRAPH = {name: {target for target in imports_of(name) if target in MODULES and target != name} for name in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: every group of modules that import each other, directly or around a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles() -> None:
    assert strongly_connected(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_only_the_store_talks_to_redis(name: str) -> None:
    if name.startswith(REDIS_ALLOWED):
        return
    redis_imports = sorted(target for target in imports_of(name) if target == "redis" or target.startswith("redis."))
    assert redis_imports == [], f"{name} imports {redis_imports}: go through worker.store instead"
    reaches_in = [
        node.lineno
        for node in ast.walk(ast.parse(MODULES[name].read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "redis"
    ]
    assert reaches_in == [], f"{name} reaches into a store's Redis client at line(s) {reaches_in}: add a store method"


def test_production_code_never_imports_the_dev_harness() -> None:
    offenders = {
        name: sorted(t for t in targets if t.startswith("worker.dev"))
        for name, targets in GRAPH.items()
        if not name.startswith("worker.dev") and name != "worker.cli"
    }
    assert {name: found for name, found in offenders.items() if found} == {}
