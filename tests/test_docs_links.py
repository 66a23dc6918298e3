"""Every link in the repository's Markdown points at a file of the repository.

A relative link (``[text](docs/optim.md)``, ``![fig](figures/x.png)``, a reference definition
``[id]: path`` or an HTML ``href``/``src``) must resolve, from the file that contains it, to a
file or folder inside the repository. A link to a local absolute path (``/work/...``,
``file://...``) is an error even if it exists on this machine: nobody else has it. Web links
(``https://...``) are not fetched. Links inside code (fenced blocks, inline code) are text,
not links, and are not checked as links.

A file path quoted as inline code (`` `docs/optim.md` ``: a slash and an extension) names a file
of the repository too: it must exist relative to the Markdown file or to the repository root,
unless it is one of the files the project's own commands write (``_WRITTEN``). A bare file
name (`` `report.md` ``) is not checked: without a folder it names no place.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folders that are not part of the repository's text: hidden ones (.git, .venv-ci, caches) and
# the outputs that .gitignore lists (the docs site, reproduction results, builds).
_SKIP_DIRS = {"site", "results", "out", "build", "dist", "node_modules"}

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\S\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.M)
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CODE_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.[A-Za-z0-9]+)`")
# Files named in the docs that exist only once a command of the project has written them.
_WRITTEN = {
    "benchmarks/results/gpu.json": "python benchmarks/gpu.py (on a CUDA machine)",
}
# A path under an upper-case placeholder (`OUT/manifest.json`, `OUT/FIG/data.npz`) names a file
# of a user's output directory, not of the repository.
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*/")
# Absolute paths of this kind of machine's workspaces, wherever they appear in the text.
_LOCAL_PATH = re.compile(r"(?<![\w.~/-])/(?:work|home|Users|root|mnt)/[\w.-]+")


def markdown_files(root: Path) -> list[Path]:
    """The Markdown files of the repository, outside hidden and generated folders."""
    files = []
    for path in sorted(root.rglob("*.md")):
        parts = path.relative_to(root).parts[:-1]
        if any(part.startswith(".") or part in _SKIP_DIRS or part.endswith(".egg-info") for part in parts):
            continue
        files.append(path)
    return files


def link_targets(text: str) -> list[str]:
    """The targets of every link in Markdown ``text`` (code blocks and code spans removed)."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    targets = [m.group(1) for m in _INLINE.finditer(text)]
    targets += [m.group(1) for m in _REFERENCE.finditer(text)]
    targets += [m.group(1) for m in _HTML.finditer(text)]
    return [t[1:-1] if t.startswith("<") and t.endswith(">") else t for t in targets]


def link_problems(path: Path, root: Path) -> list[str]:
    """What is wrong with the links of the Markdown file ``path`` (empty if nothing)."""
    text = path.read_text(encoding="utf-8")
    problems = [f"local absolute path {m.group(0)!r} in the text" for m in _LOCAL_PATH.finditer(_FENCE.sub("", text))]
    for quoted in _CODE_PATH.findall(_FENCE.sub("", text)):
        if quoted in _WRITTEN or _PLACEHOLDER.match(quoted):
            continue
        if (path.parent / quoted).exists() or (root / quoted).exists():
            continue
        problems.append(f"`{quoted}`: a quoted path that is not a file of the repository")
    for target in link_targets(text):
        if target.lower().startswith("file:"):
            problems.append(f"{target!r}: a link to a local file URL")
            continue
        if _SCHEME.match(target):  # https:, mailto:, ...: not a file of the repository
            continue
        file_part = re.split(r"[#?]", target, maxsplit=1)[0]
        if not file_part:  # a link to a heading of the same page
            continue
        if file_part.startswith("/"):
            problems.append(f"{target!r}: an absolute path (links must be relative to the file)")
            continue
        resolved = (path.parent / file_part).resolve()
        if not resolved.is_relative_to(root):
            problems.append(f"{target!r}: points outside the repository ({resolved})")
        elif not resolved.exists():
            problems.append(f"{target!r}: no such file in the repository")
    return problems


FILES = markdown_files(ROOT)


def test_the_repository_markdown_is_found():
    names = {path.relative_to(ROOT).as_posix() for path in FILES}
    assert {"README.md", "CHANGELOG.md", "docs/optim.md", "benchmarks/README.md"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(path):
    assert link_problems(path, ROOT) == []


def test_the_checker_reports_each_kind_of_bad_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# there\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](there.md) [ok anchor](there.md#there) [same page](#top) ![web](https://example.org/x.png)\n"
        "[missing](nothere.md) [outside](../../elsewhere/paper.txt) [absolute](/work/shared/paper.txt)\n"
        '[file url](file:///tmp/x.md) <img src="figures/missing.png">\n'
        "[ref]: missing-ref.md\n"
        "The paper is in /work/shared/paper.\n"
        "`[in code](nothere.md)` `docs/there.md` `there.md` `report.md` `paper/the-paper.txt` `OUT/FIG/data.npz`\n\n"
        "```\n[in a block](nothere.md) `paper/in-a-block.txt`\n```\n"
    )
    problems = link_problems(page, tmp_path)
    outside = (tmp_path.parent / "elsewhere" / "paper.txt").resolve()
    assert sorted(problems) == sorted(
        [
            "local absolute path '/work/shared' in the text",  # the absolute link's path
            "local absolute path '/work/shared' in the text",  # "The paper is in /work/shared/paper."
            "'nothere.md': no such file in the repository",
            f"'../../elsewhere/paper.txt': points outside the repository ({outside})",
            "'/work/shared/paper.txt': an absolute path (links must be relative to the file)",
            "'file:///tmp/x.md': a link to a local file URL",
            "'figures/missing.png': no such file in the repository",
            "'missing-ref.md': no such file in the repository",
            "`paper/the-paper.txt`: a quoted path that is not a file of the repository",
        ]
    )
