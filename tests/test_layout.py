"""The package layout: no import cycles, old import paths still work, a tidy public API.

The import graph is built statically: every module under ``steerlens/`` is parsed with
``ast`` and every import in it (also inside functions, classes and ``if`` blocks) that
names a steerlens module becomes an edge. ``from steerlens.pkg import name`` is an edge
to ``steerlens.pkg`` (its ``__init__``) unless ``name`` is a submodule, then to that
submodule; old paths (``steerlens.sweep``...) resolve through ``steerlens._moved.MOVED``.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, subprocess_env

import steerlens
from steerlens._moved import MOVED

PACKAGE = ROOT / "steerlens"


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # "steerlens/x.py:12"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The steerlens module that ``name`` (a dotted module path) loads, or None if not ours."""
    if name != "steerlens" and not name.startswith("steerlens."):
        return None
    name = MOVED.get(name, name)
    while name not in known and "." in name:  # e.g. an attribute path: fall back to its module
        name = name.rpartition(".")[0]
    return name if name in known else None


def imports_of(name: str, path: Path, known: dict[str, Path], source: str | None = None) -> list[Edge]:
    """Every steerlens import in module ``name`` (``path``'s text, or ``source``), wherever it stands."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    where = path.relative_to(ROOT).as_posix()
    edges = []
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        targets: list[str | None] = []
        if isinstance(node, ast.Import):
            targets = [resolve(alias.name, known) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            origin = MOVED.get(origin, origin)
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                targets.append(resolve(submodule if MOVED.get(submodule, submodule) in known else origin, known))
        for target in targets:
            if target is not None:
                edges.append(Edge(name, target, f"{where}:{node.lineno}"))
    return edges


def import_graph() -> dict[str, list[Edge]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One shortest cycle through each strongly connected component (Tarjan) that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)

    found = []
    for component in components:
        start = min(component)
        # Breadth-first inside the component from ``start`` back to ``start``: a shortest cycle.
        paths: dict[str, list[Edge]] = {start: []}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for node in frontier:
                for edge in graph[node]:
                    if edge.target == start:
                        cycle = paths[node] + [edge]
                        break
                    if edge.target in component and edge.target not in paths:
                        paths[edge.target] = paths[node] + [edge]
                        nxt.append(edge.target)
                if cycle is not None:
                    break
            frontier = nxt
        if cycle is not None:
            found.append(cycle)
    return found


def describe(cycle: list[Edge]) -> str:
    chain = " -> ".join([cycle[0].source] + [edge.target for edge in cycle])
    steps = "; ".join(f"{edge.source} imports {edge.target} at {edge.where}" for edge in cycle)
    return f"{chain} ({steps})"


# -- the import graph -----------------------------------------------------------------


def test_graph_sees_every_module_and_import_kind():
    """The parser itself: relative, absolute, in-function, moved and submodule imports all resolve."""
    graph = import_graph()
    assert "steerlens" in graph and "steerlens._moved" in graph and "steerlens.vector" in graph
    targets = {edge.target for edge in graph["steerlens"]}
    assert {"steerlens._moved", "steerlens.vector", "steerlens.training"} <= targets
    source = (
        "import steerlens.sweep\n"
        "from . import metrics\n"
        "from .. import errors\n"
        "from ..hooks import SteeringHook\n"
        "from steerlens.tokens import encoding\n"
        "def later():\n"
        "    from steerlens.vector import SteeringVector\n"
        "import numpy\n"
    )
    probe = PACKAGE / "evaluation" / "_probe.py"  # never written: its text is ``source``
    edges = imports_of("steerlens.evaluation._probe", probe, modules(), source)
    assert [edge.target for edge in edges] == [
        "steerlens.evaluation.sweep",
        "steerlens.evaluation.metrics",
        "steerlens.errors",
        "steerlens.hooks",
        "steerlens.tokens.encoding",
        "steerlens.vector",
    ]


def test_cycle_finder_names_the_cycle():
    edge = lambda a, b: Edge(a, b, f"{a}.py:1")  # noqa: E731
    graph = {"a": [edge("a", "b")], "b": [edge("b", "c")], "c": [edge("c", "a"), edge("c", "d")], "d": []}
    found = cycles(graph)
    assert len(found) == 1 and describe(found[0]).startswith("a -> b -> c -> a (")
    assert cycles({"a": [edge("a", "a")]}) and not cycles({"a": [edge("a", "b")], "b": []})


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles in steerlens/:\n" + "\n".join(describe(cycle) for cycle in found)


# -- old import paths -------------------------------------------------------------------


def public_names(module) -> list[str]:
    """``__all__``, else the public names the module defines itself."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_path_is_the_new_module(old, new):
    new_module = importlib.import_module(new)
    old_module = importlib.import_module(old)
    assert old_module is new_module
    assert sys.modules[old] is new_module
    names = public_names(new_module)
    assert names, f"{new} has no public name to import"
    for name in names:
        namespace: dict = {}
        exec(f"from {old} import {name}", namespace)
        assert namespace[name] is getattr(new_module, name)


def test_old_paths_work_in_a_fresh_interpreter():
    """Importing an old path first (nothing of steerlens loaded yet) gives the new module."""
    code = (
        "import importlib, sys\n"
        "pairs = {'steerlens.sweep': 'steerlens.evaluation.sweep', 'steerlens.datasets': 'steerlens.samples.datasets'}\n"
        "for old, new in pairs.items():\n"
        "    module = importlib.import_module(old)\n"
        "    assert module is sys.modules[new], (old, new)\n"
        "from steerlens._moved import MOVED\n"
        "for old, new in MOVED.items():\n"
        "    assert importlib.import_module(old) is importlib.import_module(new), (old, new)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# -- the public API ---------------------------------------------------------------------


def test_all_is_sorted_without_duplicates():
    names = steerlens.__all__
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"duplicated in steerlens.__all__: {duplicates}"
    assert names == sorted(names), f"steerlens.__all__ is not sorted; sorted it reads {sorted(names)}"


@pytest.mark.parametrize("name", steerlens.__all__)
def test_every_public_name_is_importable(name):
    namespace: dict = {}
    exec(f"from steerlens import {name}", namespace)
    assert namespace[name] is getattr(steerlens, name)
