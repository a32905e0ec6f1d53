"""The package layout: packages import each other in one direction only, only ``backends/`` asks
what kind of model it has, and ``import steerlens`` loads nothing heavy.

The import graph is built statically: every module under ``steerlens/`` is parsed with
``ast`` and every import in it (also inside functions, classes and ``if`` blocks, so
``TYPE_CHECKING`` imports count too) that names a steerlens module becomes an edge.
``from steerlens.pkg import name`` is an edge to ``steerlens.pkg`` (its ``__init__``) unless
``name`` is a submodule, then to that submodule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, subprocess_env

import steerlens

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
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                targets.append(resolve(submodule if submodule in known else origin, known))
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
    """The parser itself: relative, absolute, in-function and submodule imports all resolve."""
    graph = import_graph()
    assert "steerlens" in graph and "steerlens.vector" in graph
    assert {"steerlens._version", "steerlens.training"} <= {edge.target for edge in graph["steerlens"]}
    source = (
        "import steerlens.evaluation.sweep\n"
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


# -- the package order ---------------------------------------------------------------------

ORDER = [
    "_version",
    "errors",
    "layers",
    "_tl",
    "tl_speedup",  # a patch to TransformerLens, opt-in
    "checks",  # shared by all
    "samples",
    "tokens",
    "hooks",
    "backends",
    "settings",  # how a call runs: one value from each public door down
    "formats",
    "vector",
    "training",  # the data's way in
    "analysis",
    "evaluation",
    "conditional",
    "interop",
    "sae",  # what is done with a vector
    "toy",
    "adapter",
    "cli",  # models to run on, and the command line
]
"""ARCHITECTURE.md's import order: a package imports only packages listed before it (or itself).
The top-level ``steerlens/__init__.py`` is the facade over all of them and is not ranked."""


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "steerlens"


def against_order(graph: dict[str, list[Edge]], order: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    wrong = []
    for source, edges in sorted(graph.items()):
        here = package_of(source)
        if here == "steerlens":
            continue
        for edge in edges:
            there = package_of(edge.target)
            if here not in rank or there not in rank:
                wrong.append(f"{edge.where}: package {here if here not in rank else there!r} is not in ORDER")
            elif rank[there] > rank[here]:
                wrong.append(f"{edge.where}: {here} imports {there}, which comes after it")
    return wrong


def test_packages_import_only_earlier_packages():
    wrong = against_order(import_graph(), ORDER)
    assert not wrong, "imports against the package order (ARCHITECTURE.md):\n" + "\n".join(wrong)


def test_order_check_names_a_backward_import():
    edge = Edge("steerlens.hooks.x", "steerlens.backends.y", "steerlens/hooks/x.py:3")
    assert against_order({"steerlens.hooks.x": [edge]}, ORDER) == [
        "steerlens/hooks/x.py:3: hooks imports backends, which comes after it"
    ]
    assert against_order({"steerlens.backends.y": [Edge("steerlens.backends.y", "steerlens.hooks.x", "")]}, ORDER) == []


def test_architecture_md_states_the_same_order():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("Import order:"))
    assert line.removeprefix("Import order:").replace("`", "").replace(",", " ").split() == ORDER


KIND_NAMES = {
    "HookedBackend",
    "HFBackend",
    "BridgeBackend",
    "HookedTransformer",
    "PreTrainedModel",
    "TransformerBridge",
}


def test_only_backends_ask_what_kind_of_model_they_have():
    """``isinstance(x, <model kind>)`` appears in ``backends/`` (and the adapter, which converts kinds) only."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("backends/", "adapter/")) or relative == "_tl.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"isinstance", "issubclass"}:
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} | {
                    n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)
                }
                if names & KIND_NAMES:
                    found.append(f"steerlens/{relative}:{node.lineno}")
    assert not found, "model-kind checks outside backends/: " + ", ".join(found)


def kind_strings() -> set[str]:
    """The ``kind`` every backend class declares (``"hooked"``, ``"hf"``): the strings a leak compares with."""
    from steerlens.backends.bridge import BridgeBackend
    from steerlens.backends.hf import HFBackend
    from steerlens.backends.hooked import HookedBackend
    from steerlens.backends.wrapped import WrappedBackend

    return {cls.kind for cls in (HookedBackend, HFBackend, BridgeBackend, WrappedBackend)}


def _is_kind_read(node: ast.AST) -> bool:
    """``x.kind`` or ``getattr(x, "kind", ...)``."""
    if isinstance(node, ast.Attribute):
        return node.attr == "kind"
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) >= 2:
        return isinstance(node.args[1], ast.Constant) and node.args[1].value == "kind"
    return False


def _strings(node: ast.AST) -> set[str]:
    """The string literals ``node`` is, or holds (a tuple, list or set of them)."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)}


def _probed_name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def kind_leaks(source: str, kinds: set[str]) -> list[tuple[int, str]]:
    """Where ``source`` asks what kind of model it has without an ``isinstance``: a comparison of a
    backend's ``kind`` with a string (or of anything with a kind string: ``kind != "hf"``), and
    ``hasattr(<model>, ...)`` on a name holding a model (``model``, ``hf_model``, ``self.model``, ...).
    What a caller needs to know of a model kind is a :class:`~steerlens.backends.Backend` member."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            literals = set().union(*(_strings(operand) for operand in operands))
            if literals & kinds or (literals and any(_is_kind_read(operand) for operand in operands)):
                found.append((node.lineno, "compares a model kind with a string"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr" and node.args:
            name = _probed_name(node.args[0])
            if "model" in name.lower():
                found.append((node.lineno, f"probes {name} with hasattr"))
    return found


def test_kind_leak_check_catches_comparisons_and_probes():
    """The check itself, on a snippet with each leak (and the look-alikes it must let pass)."""
    kinds = kind_strings()
    assert {"hf", "hooked"} <= kinds
    source = (
        "if backend.kind == 'hf':\n"  # 1
        "    pass\n"
        "if getattr(backend, 'kind', None) != 'hf':\n"  # 3
        "    pass\n"
        "ok = kind not in ('hooked',)\n"  # 5
        "use = hasattr(model, 'cfg')\n"  # 6
        "use = hasattr(self.hf_model, 'config')\n"  # 7
        "fine = part == 'attn'\n"  # 8: another string, not a kind
        "fine = hasattr(layers, '__iter__')\n"  # 9: not a model
        "fine = backend.n_layers == 3\n"  # 10
    )
    assert [line for line, _ in kind_leaks(source, kinds)] == [1, 3, 5, 6, 7]


def test_only_backends_compare_kinds_or_probe_models():
    """Outside ``backends/`` and ``adapter/``, no ``kind`` comparison and no ``hasattr`` probe of a model."""
    kinds = kind_strings()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(("backends/", "adapter/")):
            continue
        found += [f"steerlens/{relative}:{line}: {what}" for line, what in kind_leaks(path.read_text(), kinds)]
    assert not found, "model-kind questions outside backends/ (make them Backend members):\n" + "\n".join(found)


# -- start-up ---------------------------------------------------------------------------------


def _loaded_after(code: str) -> set[str]:
    """Top-level packages loaded by ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split("\n")[-2].split())


HEAVY = {"torch", "transformers", "transformer_lens", "matplotlib", "pandas", "sae_lens", "lm_eval"}


def test_import_steerlens_loads_nothing_heavy():
    assert not _loaded_after("import steerlens") & HEAVY
    assert "torch" in _loaded_after("import steerlens\nsteerlens.SteeringVector")  # names load on first use


def test_steerlens_info_reads_a_vector_without_torch(tmp_path):
    import torch

    steerlens.SteeringVector({1: torch.ones(4)}).save(tmp_path / "v.safetensors")
    code = f"from steerlens.cli.main import main\nmain(['info', {str(tmp_path / 'v.safetensors')!r}])"
    assert not _loaded_after(code) & HEAVY


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


def facade_lists(source: str) -> tuple[dict[str, str], dict[str, str]]:
    """The facade's two lists, parsed: ``_HOMES`` (name -> module) and its ``TYPE_CHECKING`` imports (the same)."""
    homes: dict[str, str] = {}
    typed: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(target, "id", None) == "_HOMES" for target in targets):
                homes = {key.value: value.value for key, value in zip(node.value.keys, node.value.values)}
        elif isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in ast.walk(node):
                if isinstance(statement, ast.ImportFrom):
                    typed.update({alias.asname or alias.name: statement.module for alias in statement.names})
    return homes, typed


def test_facade_homes_and_type_checking_imports_agree():
    """``_HOMES`` serves the names at run time, the ``TYPE_CHECKING`` block to type checkers: one list, twice."""
    homes, typed = facade_lists((PACKAGE / "__init__.py").read_text())
    assert len(homes) > 20 and "SteeringVector" in homes
    only_homes = sorted(set(homes) - set(typed))
    only_typed = sorted(set(typed) - set(homes))
    elsewhere = sorted(
        f"{name}: {homes[name]} vs {typed[name]}" for name in homes.keys() & typed if homes[name] != typed[name]
    )
    assert not (only_homes or only_typed or elsewhere), (
        f"steerlens/__init__.py: only in _HOMES {only_homes}; only under TYPE_CHECKING {only_typed}; "
        f"from different modules {elsewhere}"
    )


def test_facade_check_sees_a_difference():
    source = (
        "from typing import TYPE_CHECKING\n"
        "_HOMES: dict[str, str] = {'a': 'steerlens.x', 'b': 'steerlens.y'}\n"
        "if TYPE_CHECKING:\n"
        "    from steerlens.x import a\n"
        "    from steerlens.z import b, c\n"
    )
    homes, typed = facade_lists(source)
    assert homes == {"a": "steerlens.x", "b": "steerlens.y"}
    assert typed == {"a": "steerlens.x", "b": "steerlens.z", "c": "steerlens.z"}


# -- the verbs' shape: one settings value, short signatures, no positional plumbing ----------------

MAX_PUBLIC_PARAMETERS = 13
"""steering-vectors' ``train_steering_vector`` has 12; one more for the settings (``**settings``)."""
MAX_POSITIONAL_ARGUMENTS = 6


def long_positional_calls(source: str, limit: int = MAX_POSITIONAL_ARGUMENTS) -> list[tuple[int, str]]:
    """Calls in ``source`` passing more than ``limit`` positional arguments (line, callee)."""
    return [
        (node.lineno, ast.unparse(node.func))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and len(node.args) > limit
    ]


def test_long_call_check_counts_positional_arguments_only():
    assert long_positional_calls("f(1, 2, 3, 4, 5, 6, 7)\ng(1, 2, 3, 4, 5, 6, a=7)") == [(1, "f")]


def test_no_call_passes_more_than_six_positional_arguments():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {callee}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, callee in long_positional_calls(path.read_text())
    ]
    assert not found, "pass a value (a dataclass, the Run) or keywords instead:\n" + "\n".join(found)


def test_no_public_function_takes_more_than_thirteen_parameters():
    import importlib
    import inspect

    found = []
    for name in sorted(modules()):
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for attr, fn in vars(module).items():
            if attr.startswith("_") or not inspect.isfunction(fn) or fn.__module__ != name:
                continue
            n = len(inspect.signature(fn).parameters)
            if n > MAX_PUBLIC_PARAMETERS:
                found.append(f"{name}.{attr}: {n} parameters")
    assert not found, "group settings into steerlens.settings.Settings (**settings) or a value:\n" + "\n".join(found)
