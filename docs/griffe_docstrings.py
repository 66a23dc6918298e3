"""A griffe extension for the API reference: two conventions of curvdyn's docstrings.

Loaded by ``mkdocs.yml``; it rewrites each docstring before griffe parses it (Google style).

* Grouped arguments and attributes, ``rtol, atol: solver tolerances``. griffe's Google parser reads that as
  one argument named ``"rtol, atol"``, which is not in the signature (a warning, so
  ``mkdocs build --strict`` fails). Each grouped entry is written once per name with the same
  description, so every name is rendered and still checked against the signature.
* reStructuredText simple tables (``====  ====`` borders): written as Markdown tables (a row
  whose first cell is empty continues the row above); a paragraph ending in ``::`` before a
  literal block ends in ``:``.
* Sphinx roles, ``:func:`curvdyn.simulate```, ``:class:`~curvdyn.task.Task``` (a leading ``~``
  shows the last component only). Each becomes a cross-reference to the object, resolved in
  the docstring's scope, shown as code; one whose target is not on the site (another
  package, a private helper) stays plain code instead of failing the build.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SECTION = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Attributes):\s*$"
)
_NAME = r"\*{0,2}[A-Za-z_]\w*"
_GROUPED = re.compile(rf"^(\s*)({_NAME}(?:\s*,\s*{_NAME})+)(\s*\([^)]*\))?:(.*)$")
_BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def split_grouped_args(text: str) -> str:
    """``text`` with every grouped entry of an argument section written once per name."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = _SECTION.match(lines[i])
        out.append(lines[i])
        i += 1
        if not header:
            continue
        section_indent = len(header.group(1))
        item_indent: int | None = None
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > section_indent):
            if not lines[i].strip():
                out.append(lines[i])
                i += 1
                continue
            if item_indent is None:
                item_indent = _indent(lines[i])
            item = [lines[i]]  # the entry's first line and its continuation lines
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > item_indent):
                item.append(lines[i])
                i += 1
            trailing = len(item) - len("\n".join(item).rstrip().splitlines())
            body, blanks = item[: len(item) - trailing], item[len(item) - trailing :]
            grouped = _GROUPED.match(body[0]) if _indent(body[0]) == item_indent else None
            if grouped is None:
                out.extend(body)
            else:
                lead, names, annotation, description = grouped.groups()
                for name in re.split(r"\s*,\s*", names):
                    out.append(f"{lead}{name}{annotation or ''}:{description}")
                    out.extend(body[1:])
            out.extend(blanks)
    return "\n".join(out)


def _columns(border: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character span of each column of a simple-table border line."""
    return [m.span() for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    """A table line cut at the columns (the last column runs to the end of the line)."""
    cuts = [start for start, _ in spans] + [len(line)]
    return [line[cuts[k] : cuts[k + 1]].strip() for k in range(len(spans))]


def _escape_pipes(cell: str) -> str:
    """A table cell with ``|`` escaped outside code spans (Markdown tables split there only)."""
    parts = re.split(r"(``.*?``|`[^`]*`)", cell)
    return "".join(part if part.startswith("`") else part.replace("|", "\\|") for part in parts)


def rst_tables_to_markdown(text: str) -> str:
    """``text`` with every reStructuredText simple table written as a Markdown table."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        top = _BORDER.match(lines[i])
        if not top:
            out.append(lines[i].removesuffix("::") + ":" if lines[i].endswith("::") else lines[i])
            i += 1
            continue
        indent, spans = top.group(1), _columns(lines[i])
        borders, rows, j = 1, [], i + 1
        while j < len(lines) and borders < 3:
            if _BORDER.match(lines[j]):
                borders += 1
            elif lines[j].strip():
                cells = _cells(lines[j], spans)
                if rows and not cells[0] and borders > 1:
                    rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            j += 1
        if borders < 3 or not rows:  # not a complete table: leave it as it was
            out.append(lines[i])
            i += 1
            continue
        if out and out[-1].strip():
            out.append("")
        for k, row in enumerate(rows):
            out.append(indent + "| " + " | ".join(_escape_pipes(cell) for cell in row) + " |")
            if k == 0:
                out.append(indent + "|" + "|".join(" --- " for _ in row) + "|")
        i = j
    return "\n".join(out)


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full path that ``target`` names in ``obj``'s scope (``target`` itself if unknown)."""
    if target.startswith("."):  # relative to the docstring's package: ``.base``
        module = obj.module
        package = module.path if module.is_package else module.path.rpartition(".")[0]
        return package + target
    first, _, rest = target.partition(".")
    try:
        path = obj.resolve(first)
    except Exception:  # not a name of this scope: take it as a full path
        return target
    return f"{path}.{rest}" if rest else path


def link_roles(obj: griffe.Object, text: str) -> str:
    """``text`` with every Sphinx role written as an optional cross-reference shown as code."""

    def link(match: re.Match[str]) -> str:
        short, target = match.groups()
        target = target.removesuffix("()")
        shown = target.rpartition(".")[2] if short else target
        return f'<autoref identifier="{_resolve(obj, target)}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(link, text)


class CurvdynDocstrings(griffe.Extension):
    """Rewrite each docstring before it is parsed: grouped arguments, RST tables, Sphinx roles."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = link_roles(obj, rst_tables_to_markdown(split_grouped_args(obj.docstring.value)))

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        self.on_object(obj=pkg, loader=loader)  # on_object runs for the members, not the package
