"""Import paths from before the package was laid out by stage, kept working as aliases.

``import steerlens.sweep`` gives the very module object ``steerlens.evaluation.sweep``
(not a copy), loaded only when first imported. New code should use the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any, Sequence

MOVED: dict[str, str] = {
    "steerlens.aggregators": "steerlens.training.aggregators",
    "steerlens.comparison": "steerlens.evaluation.comparison",
    "steerlens.datasets": "steerlens.samples.datasets",
    "steerlens.generation": "steerlens.evaluation.generation",
    "steerlens.interop": "steerlens.formats.interop",
    "steerlens.metrics": "steerlens.evaluation.metrics",
    "steerlens.operators": "steerlens.hooks.operators",
    "steerlens.plots": "steerlens.evaluation.plots",
    "steerlens.positions": "steerlens.hooks.positions",
    "steerlens.serialization": "steerlens.formats.vector_file",
    "steerlens.steering": "steerlens.hooks.steering_hook",
    "steerlens.sweep": "steerlens.evaluation.sweep",
    "steerlens.tail": "steerlens.backends.tail",
    "steerlens.tokenization": "steerlens.tokens.encoding",
}
"""Old module path -> the module that now holds its contents."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: Any) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module ran when it was imported; nothing more to do."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[fullname]))


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
