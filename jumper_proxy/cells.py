"""Pure parsing of a cell's source: which proxy magic (if any), its argument line, its body."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """A cell split into its first-line cell magic (without ``%%``), the rest of that line and
    the body below it. ``magic`` is ``None`` for a cell that does not start with ``%%``."""

    code: str
    magic: str | None
    args: str
    body: str


def parse_cell(code: str) -> Cell:
    """Split ``code`` into magic, arguments and body.

    Blank lines before the magic line are allowed, as IPython allows them. Only the first
    non-blank line can name a cell magic.
    """
    lines = code.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        stripped = line.strip()
        if not stripped.startswith("%%") or len(stripped) == 2:
            break
        name, _, args = stripped[2:].partition(" ")
        if not name or not _is_name(name):
            break
        return Cell(code=code, magic=name, args=args.strip(), body="".join(lines[i + 1 :]))
    return Cell(code=code, magic=None, args="", body=code)


def _is_name(name: str) -> bool:
    return name.replace("_", "a").replace(".", "a").isalnum()
