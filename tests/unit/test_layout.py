"""The package's imports run one way: pure core <- stores <- tween, views, reports, scripts;
the demo application (its own distribution, ``demo/``) above them all. Read from the source
with ``ast``: every import counts, the ones inside functions and under ``TYPE_CHECKING`` too
(a typing import is still a loop)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCE = ROOT / "src"
PACKAGE = "session_expiry"
#: The pure core: no I/O, importing nothing of the package above it.
CORE = {f"{PACKAGE}.{name}" for name in (
    "clock", "decision", "events", "record", "redirects", "settings", "throttle", "ticket")}
STORES = f"{PACKAGE}.stores"
DEMO = "session_expiry_demo"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_of(path): path for path in (SOURCE / PACKAGE).rglob("*.py")}


def resolve(name: str) -> str:
    """The package's module ``name`` is, or is inside (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imported_names(path: Path) -> set[str]:
    """The absolute module names a file imports (relative imports left out)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports, wherever in the file."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from . import x``: x may be a module of its own
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        else:
            continue
        found |= {resolve(name) for name in names if name.split(".")[0] == PACKAGE}
    return found - {module}


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
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
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_imports_inside_functions_and_under_type_checking_are_read():
    assert f"{PACKAGE}.record" in GRAPH[f"{PACKAGE}.decision"]  # under TYPE_CHECKING
    assert f"{PACKAGE}.stores.memory" in GRAPH[PACKAGE]  # inside build_store


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_nothing_above_it(module):
    assert GRAPH[module] <= CORE, f"{module} imports {sorted(GRAPH[module] - CORE)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(STORES)))
def test_the_stores_import_only_the_core_and_each_other(module):
    above = {name for name in GRAPH[module] if name not in CORE and not name.startswith(STORES)}
    assert not above, f"{module} imports {sorted(above)}"


def test_the_add_on_imports_nothing_of_the_demo():
    importers = {module for module, path in MODULES.items()
                 if any(name.split(".")[0] == DEMO for name in imported_names(path))}
    assert importers == set()
