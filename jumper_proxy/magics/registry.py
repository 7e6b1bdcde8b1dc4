"""The table of every magic the proxy knows, ``%%jumper_help``, and completing and inspecting
magic names.

A magic family (one module of this package) imports :mod:`jumper_proxy.api` and registers its
magics in the table; only this module knows the families.
"""

from __future__ import annotations

from jumper_proxy.api import Magic, MagicContext, MagicTable
from jumper_proxy.magics import monitoring, multicell, scorep, scorep_results, writefile


def help_text(table: MagicTable) -> str:
    """The text of ``%%jumper_help``: every proxy magic with its usage and description."""
    lines = ["jumper-proxy cell magics (each alone on the first line of its cell):", ""]
    width = max((len(m.name) + len(m.usage) for m in table.all()), default=0) + 4
    for magic in table.all():
        head = f"%%{magic.name} {magic.usage}".rstrip()
        lines.append(f"  {head:<{width}} {magic.help}")
    lines.append("")
    lines.append("Any other cell, including IPython's own %%magics, runs in the kernel unchanged.")
    return "\n".join(lines) + "\n"


def _magic_word(code: str, cursor_pos: int) -> tuple[str, int] | None:
    """The ``%%word`` the cursor is in or just after, on the cell's first line, and its start."""
    first_line_end = code.find("\n")
    if first_line_end != -1 and cursor_pos > first_line_end:
        return None
    line = code[:cursor_pos]
    stripped = line.lstrip()
    if not stripped.startswith("%%") or " " in stripped:
        return None
    start = len(line) - len(stripped)
    end = first_line_end if first_line_end != -1 else len(code)
    word = code[start:end].split(" ", 1)[0]
    return word[2:], start


def complete_magic(table: MagicTable, code: str, cursor_pos: int) -> tuple[list[str], int] | None:
    """Completions of a proxy magic name at the cursor: ``(matches, cursor_start)``."""
    found = _magic_word(code, cursor_pos)
    if found is None:
        return None
    _, start = found
    prefix = code[start + 2 : cursor_pos]
    matches = [f"%%{name}" for name in table.names() if name.startswith(prefix)]
    return (matches, start) if matches else None


def inspect_magic(table: MagicTable, code: str, cursor_pos: int) -> str | None:
    """The help of the proxy magic named on the cell's first line, if the cursor is there."""
    first = code.split("\n", 1)[0]
    stripped = first.strip()
    if cursor_pos > len(first) or not stripped.startswith("%%"):
        return None
    magic = table.get(stripped[2:].split(" ", 1)[0])
    if magic is None:
        return None
    return f"%%{magic.name} {magic.usage}".rstrip() + f"\n\n{magic.help}\n"


def build_table() -> MagicTable:
    """The table of every magic the proxy knows."""
    table = MagicTable()

    async def jumper_help(ctx: MagicContext, args: str, body: str) -> None:
        ctx.out.stream(help_text(table))

    table.add(Magic("jumper_help", jumper_help, "list the proxy's magics"))
    monitoring.register(table)
    scorep.register(table)
    scorep_results.register(table)
    marking = multicell.register(table)
    writefile.register(table, marking)
    return table


__all__ = ["build_table", "complete_magic", "help_text", "inspect_magic"]
