"""Every ```python block of the README runs, in order, in one namespace (the README stays honest)."""

from __future__ import annotations

import re

import matplotlib
import pytest
from helpers import ROOT

README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    blocks = python_blocks(README.read_text())
    assert blocks, "the README should show code"
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i + 1} failed: {type(exc).__name__}: {exc}\n{block}")
