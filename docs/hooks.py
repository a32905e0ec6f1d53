"""MkDocs hooks: the pages generated at build time from the code, so they cannot drift from it.

* ``cli.md``: the ``--help`` of ``steerlens`` and of every subcommand, from the argparse parser
  the command line itself builds (:func:`steerlens.cli.main.build_parser`);
* the nav's Notebooks section: every notebook in ``notebooks/``;
* ``api/index.md``: the top-level names (``steerlens.__all__``), each linked to the package page
  that documents it, with the first line of its docstring.

A page asks for a generated part with a marker comment (``<!-- generated: cli -->``); mkdocs.yml
loads this file (``hooks: - docs/hooks.py``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")


def cli_reference() -> str:
    """``steerlens --help`` and every subcommand's ``--help``, as Markdown sections."""
    # The checkout being documented, not whichever steerlens the environment installed (an editable
    # install of another checkout); set here, since plugins may reorder sys.path after this file loads.
    sys.path.insert(0, str(ROOT))
    from steerlens.cli.main import _extra_commands, build_parser

    if not Path(sys.modules["steerlens"].__file__).resolve().is_relative_to(ROOT):
        raise RuntimeError(f"the CLI reference would describe {sys.modules['steerlens'].__file__}, not {ROOT}")

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "82"  # argparse wraps help at the terminal's width: a fixed one here
    try:
        parser = build_parser(_extra_commands())
        parts = ["## steerlens", "", "```text", parser.format_help().rstrip(), "```", ""]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    parts += [f"## steerlens {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(parts)


def top_level_names() -> str:
    """The top-level names (``steerlens._HOMES``) by home package: each name linked to its entry, with its docstring's summary."""
    import griffe

    package = griffe.load("steerlens", search_paths=[str(ROOT)], resolve_aliases=False)
    by_home: dict[str, list[str]] = {}
    for name, home in sorted(_homes().items()):
        by_home.setdefault(home, []).append(name)
    parts = []
    for home in sorted(by_home, key=_import_rank):
        page = home.removeprefix("steerlens.").replace(".", "/") + ".md"
        parts += [f"### [{home}]({page})", "", "| name | what it is |", "|---|---|"]
        for name in by_home[home]:
            try:
                docstring = package[f"{home.removeprefix('steerlens.')}.{name}"].docstring
            except (KeyError, griffe.AliasResolutionError):  # the link below then fails the strict build, naming it
                docstring = None
            summary = docstring.value.split("\n\n")[0].replace("\n", " ") if docstring else "(see its entry)"
            summary = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", summary).replace("``", "`")
            # a pipe outside a code span would end the table's cell (inside one the table extension keeps it)
            summary = "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(summary.split("`")))
            parts.append(f"| [`{name}`][{home}.{name}] | {summary} |")
        parts.append("")
    return "\n".join(parts)


def _homes() -> dict[str, str]:
    """``steerlens._HOMES`` (public name -> its package), read from the source without importing it."""
    tree = ast.parse((ROOT / "steerlens" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "_HOMES":
            return ast.literal_eval(node.value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_HOMES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError("steerlens/__init__.py has no _HOMES: the table of top-level names has no source")


def _import_rank(home: str) -> int:
    """The package's place in ARCHITECTURE.md's import order (tests/test_layout.py holds the code to it)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    order = re.search(r"Import order: `([^`]+)`", text).group(1).split()
    name = home.removeprefix("steerlens.")
    return order.index(name) if name in order else len(order)


_GENERATORS = {"cli": cli_reference, "top-level-names": top_level_names}
_MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


# A notebook's stderr output (one per write: nbconvert keeps each tqdm refresh as its own block).
_STDERR = re.compile(
    r'<div class="jp-OutputArea-child">\s*<div class="jp-OutputPrompt jp-OutputArea-prompt"></div>\s*'
    r'<div class="jp-RenderedText jp-OutputArea-output" data-mime-type="application/vnd.jupyter.stderr"[^>]*>\s*'
    r"<pre>((?:(?!</pre>).)*)</pre>\s*</div>\s*</div>",
    re.DOTALL,
)
_PROGRESS = re.compile(r"\d+%\||\d+(?:\.\d+)?(?:it/s|s/it)\]|^[\s\x1b\[A]*$")


def _drop_progress_bars(match: re.Match[str]) -> str:
    """A stderr block that is only tqdm progress (or blank) goes; a warning stays."""
    lines = [line for line in match.group(1).replace("\r", "\n").split("\n") if line.strip()]
    return "" if all(_PROGRESS.search(line) for line in lines) else match.group(0)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """Notebooks are shown with their committed outputs, less tqdm's progress bars (noise in a page)."""
    if page.file.src_uri.endswith(".ipynb"):
        return _STDERR.sub(_drop_progress_bars, html)
    return html


def on_config(config: Any) -> Any:
    """The Notebooks section of the nav lists every notebook in notebooks/, in file-name order.

    A notebook added to notebooks/ is in the site without an edit here (strict mode would otherwise
    fail on a page left out of the nav).
    """
    notebooks = [f"notebooks/{path.name}" for path in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for entry in config["nav"]:
        if isinstance(entry, dict) and "Notebooks" in entry:
            entry["Notebooks"] = notebooks
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return _MARKER.sub(lambda m: _GENERATORS[m.group(1)](), markdown)
