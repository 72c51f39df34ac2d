"""The README's fenced code blocks, as the README test runs them (a small runner of our own).

Why our own: pytest-examples and mktestdocs run Python blocks (mktestdocs also bash)
one by one in the test process; the README needs shell and Python blocks run in
order, in one working folder, as separate processes, each shell command its own
test, and an explicit, reasoned marker for the blocks that cannot run in CI.

Rules (tests/docs/test_readme.py enforces them):

- ```` ```bash ```` (``sh``, ``shell``) blocks: each command (a line, with its ``\\``,
  ``&&``, ``||`` or ``|`` continuations) runs with ``bash -e -o pipefail``;
- ```` ```python ```` blocks: each block runs as its own script (self-contained);
- ```` ```text ```` blocks are not code (folder trees, sample output);
- any other block, or one with no language, must be marked;
- the marker is an HTML comment on the line before the block (blank lines between are
  allowed): ``<!-- readme-test: skip REASON -->``; REASON is required.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL = {"bash", "sh", "shell"}
PYTHON = {"python", "py"}
TEXT = {"text"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^`\s]*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<kind>\S+)\s*(?P<reason>.*?)\s*-->\s*$")
_CONTINUED = re.compile(r"(\\|&&|\|\||\|)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the marker's reason, if the block is marked skip
    marker_error: str | None = None  # a malformed marker, reported by the test


@dataclass(frozen=True)
class Command:
    """One thing the README test runs: a shell command or a whole Python block."""

    line: int
    lang: str  # "bash" or "python"
    code: str

    @property
    def id(self) -> str:
        first = self.code.strip().splitlines()[0] if self.code.strip() else ""
        return f"L{self.line}:{first[:60]}"


def parse_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the marker before it, if any."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = len(m.group("indent")), m.group("lang").lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # the closing fence
        skip = error = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        mark = _MARK.match(lines[j]) if j >= 0 else None
        if mark:
            if mark.group("kind") != "skip":
                error = f"unknown readme-test marker {mark.group('kind')!r} (only 'skip')"
            elif not mark.group("reason"):
                error = "a readme-test skip marker needs a reason"
            else:
                skip = mark.group("reason")
        blocks.append(Block(start + 1, lang, "\n".join(body) + "\n", skip, error))
    return blocks


def shell_commands(block: Block) -> list[Command]:
    """A shell block's commands: comment and blank lines dropped, continuations joined."""
    out: list[Command] = []
    pending: list[str] = []
    first = 0
    for n, raw in enumerate(block.code.splitlines(), start=block.line + 1):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if not pending:
            first = n
        pending.append(raw)
        if not _CONTINUED.search(raw.split(" #")[0] if " #" in raw else raw):
            out.append(Command(first, "bash", "\n".join(pending) + "\n"))
            pending = []
    if pending:
        out.append(Command(first, "bash", "\n".join(pending) + "\n"))
    return out


def commands(blocks: list[Block]) -> list[Command]:
    """What the README test runs, in README order: every command of every unmarked block."""
    out: list[Command] = []
    for b in blocks:
        if b.skip is not None or b.marker_error is not None:
            continue
        if b.lang in SHELL:
            out += shell_commands(b)
        elif b.lang in PYTHON:
            out.append(Command(b.line, "python", b.code))
    return out


def unrunnable(blocks: list[Block]) -> list[str]:
    """Problems that make the README test fail before it runs anything."""
    problems = []
    for b in blocks:
        if b.marker_error:
            problems.append(f"README.md:{b.line}: {b.marker_error}")
        elif b.skip is None and b.lang not in SHELL | PYTHON | TEXT:
            what = f"a ```{b.lang} block" if b.lang else "a block with no language"
            problems.append(
                f"README.md:{b.line}: {what} is neither run nor marked: tag it bash, python "
                "or text, or put <!-- readme-test: skip REASON --> before it"
            )
    return problems


def read(path: Path) -> list[Block]:
    return parse_blocks(path.read_text("utf-8"))
