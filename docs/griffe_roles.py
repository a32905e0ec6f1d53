"""A griffe extension: steerlens' reST-flavoured docstrings as Markdown for mkdocstrings.

steerlens' docstrings are Google style (``Example:`` sections) written with a few reST habits, which
Markdown would show raw:

* roles (``:func:`x```, ``:class:`~a.b.C```, ``:mod:`.pairs```, ``:meth:``, ``:attr:``, ``:data:``)
  become code linked to the object's API entry when that object is rendered in the site, plain code
  otherwise (mkdocs-autorefs' *optional* references: an object that is not documented, such as a
  private module or torch's, is not an error in strict mode);
* a paragraph ending in ``::`` (a literal block follows) ends in ``:``;
* reST simple tables (rows between ``===  ===`` rules) become Markdown tables.

Loaded by mkdocs.yml (``extensions: - docs/griffe_roles.py``). Names are resolved with griffe's
own tree once the package is fully loaded: relative to the object, then its parents, then its module's
package, as Sphinx resolves them.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(func|meth|class|mod|attr|data|obj|exc):`([^`]+)`")
_RULE = re.compile(r"^( *)(=+)( +=+)+ *$")


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The path of ``target`` as seen from ``obj`` (None when it is not in the loaded tree)."""
    collection = obj.modules_collection
    if target.startswith("."):
        package = obj.module if obj.module.is_package else obj.module.parent
        candidates = [f"{package.path}{target}"]
    else:
        scopes = []
        scope: Any = obj
        while scope is not None:
            scopes.append(scope.path)
            scope = scope.parent
        candidates = [f"{path}.{target}" for path in scopes] + [target]
    for path in candidates:
        try:
            found = collection.get_member(path)
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError, ValueError):
            continue
        try:
            return found.final_target.path if found.is_alias else found.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return found.path if not found.is_alias else found.target_path
    return None


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    kind, body = match.group(1), match.group(2).strip()
    explicit = re.fullmatch(r"(.+?)\s*<([^>]+)>", body)
    if explicit:
        title, target = explicit.group(1), explicit.group(2)
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target.lstrip(".")
        if kind in ("func", "meth"):
            title += "()"
    path = _resolve(obj, target.lstrip("~"))
    code = f"<code>{html.escape(title)}</code>"
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _table(lines: list[str]) -> list[str]:
    """A reST simple table (its lines, rules included) as a Markdown table."""
    rule = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", rule)]

    def cells(line: str) -> list[str]:
        out = []
        for i, (start, _end) in enumerate(spans):
            stop = spans[i + 1][0] if i + 1 < len(spans) else None
            out.append(line[start:stop].strip())
        return out

    rules = [i for i, line in enumerate(lines) if _RULE.match(line)]
    header_end = rules[1] if len(rules) == 3 else None
    rows: list[list[str]] = []
    header: list[str] | None = None
    for i, line in enumerate(lines):
        if i in rules or not line.strip():
            continue
        row = cells(line)
        in_body = header_end is None or i > header_end
        if rows and in_body and not row[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row)]
            continue
        if header_end is not None and i < header_end:
            header = row
        else:
            rows.append(row)
    header = header or [""] * len(spans)
    md = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in spans) + "|"]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return [""] + md + [""]


def convert(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with its reST roles, ``::`` and simple tables as Markdown."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _RULE.match(lines[i]):
            indent = len(lines[i]) - len(lines[i].lstrip())
            rules, j = 1, i + 1
            while j < len(lines) and rules < 3:
                if _RULE.match(lines[j]):
                    rules += 1
                    # rule, body, rule: a table without a header ends at its second rule
                    if rules == 2 and (j + 1 == len(lines) or not lines[j + 1].strip()):
                        j += 1
                        break
                j += 1
            block = [line[indent:] for line in lines[i:j]]
            out += [" " * indent + line for line in _table(block)]
            i = j
            continue
        line = lines[i]
        if line.rstrip() == "Example:":  # griffe's Google parser reads "Examples:" as code, "Example:" as prose
            line = "Examples:"
        if line.rstrip().endswith("::") and not line.strip() == "::":
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
    return _ROLE.sub(lambda m: _role(obj, m), "\n".join(out))


class ReSTRoles(griffe.Extension):
    """Rewrites every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._unshadow(pkg)
        self._walk(pkg, set())

    def _unshadow(self, module: griffe.Module) -> None:
        """``from .layer_report import layer_report`` in a package: its attribute is the function.

        Python binds the imported name over the submodule; griffe keeps the submodule, so the function
        would be missing from its package's page.
        """
        for name, member in list(module.members.items()):
            if member.is_alias or not member.is_module:
                continue
            target = module.imports.get(name)
            if target == f"{member.path}.{name}" and name in member.members:
                module.set_member(name, griffe.Alias(name, member.members[name], parent=module))
            self._unshadow(member)

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = convert(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, seen)
