"""The proxy's own cell magics: the context a handler runs in, and the table of all handlers.

A handler is ``async def handler(ctx: MagicContext, args: str, body: str) -> None``. It never
sends protocol messages itself: it writes outputs through ``ctx`` (stream text, display data)
and raises :class:`~jumper_proxy.errors.MagicError` for misuse. The scheduler wraps all of it in
busy / ``execute_input`` / outputs / ``execute_reply`` / idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jumper_proxy.cells import Cell


class OutputSink(Protocol):
    """Where a magic's outputs go: the scheduler publishes each on IOPub at once."""

    def stream(self, text: str, name: str = "stdout") -> None: ...

    def display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        display_id: str | None = None,
        update: bool = False,
    ) -> None: ...


RunHidden = Callable[[str, "dict[str, str] | None"], Awaitable[dict[str, Any]]]


@dataclass
class MagicContext:
    """What a running magic may use.

    ``run_hidden(code, expressions)`` runs code silently in the user's kernel and returns the
    expressions' values; ``interrupted`` is set when the user interrupts the cell;
    ``services`` holds the proxy's long-lived parts by name (the monitor, Score-P settings...).
    """

    out: OutputSink
    run_hidden: RunHidden
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    services: dict[str, Any] = field(default_factory=dict)
    #: the request's content (``code``, ``silent``, ``stop_on_error``...)
    request: dict[str, Any] = field(default_factory=dict)
    #: the cell's execution count (``In [N]``), when it has one
    execution_count: int | None = None


Handler = Callable[[MagicContext, str, str], Awaitable[None]]


@dataclass(frozen=True)
class Magic:
    """One cell magic: its name (without ``%%``), handler, and a one-line description."""

    name: str
    handler: Handler
    help: str
    usage: str = ""
    #: the cell does the user's work (e.g. a Score-P run): the monitor records it
    measured: bool = False


Intercept = Callable[[Cell], "Magic | None"]


class MagicTable:
    """All magics the proxy answers; anything else goes to the upstream unchanged.

    ``interceptors`` are consulted first, in order: a mode such as multi-cell marking or
    script recording takes every cell it wants (ordinary ones included) by returning the magic
    that handles it.
    """

    def __init__(self) -> None:
        self._magics: dict[str, Magic] = {}
        self.interceptors: list[Intercept] = []

    def resolve(self, cell: Cell) -> Magic | None:
        """The magic that answers ``cell``, or ``None`` for the upstream."""
        for intercept in self.interceptors:
            magic = intercept(cell)
            if magic is not None:
                return magic
        return self.get(cell.magic)

    def add(self, magic: Magic) -> None:
        self._magics[magic.name] = magic

    def get(self, name: str | None) -> Magic | None:
        return self._magics.get(name) if name else None

    def __contains__(self, name: object) -> bool:
        return name in self._magics

    def names(self) -> list[str]:
        return sorted(self._magics)

    def all(self) -> list[Magic]:
        return [self._magics[name] for name in self.names()]


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
    # the families import this module
    from jumper_proxy.magics import monitoring, multicell, scorep, writefile

    monitoring.register(table)
    scorep.register(table)
    marking = multicell.register(table)
    writefile.register(table, marking)
    return table
