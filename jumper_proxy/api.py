"""The shared types every part of the proxy speaks: a cell run, a magic, the table of magics
and a magic's context, where a magic's outputs go, how it runs code in the kernel, who watches
cells, and the services a magic may use.

A leaf module: it imports nothing of the proxy's but the wire's message type, the cell parser
and the monitor's record store. The scheduler, the magic families and the monitor all import it;
none of them imports another through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jumper_proxy.cells import Cell
from jumper_proxy.monitor.store import PerfStore
from jumper_proxy.wire import Message

T = TypeVar("T")


@dataclass(eq=False)
class CellRun:
    """One frontend ``execute_request`` from the moment it is queued to its idle status.

    ``reply_status`` is the status of its ``execute_reply`` once known: ``ok``, ``error``,
    ``aborted``, or ``interrupted`` (an error reply raised by an interrupt).
    """

    msg: Message
    cell: Cell
    content: dict[str, Any]
    #: epoch seconds at which the kernel (or the proxy's magic) started it
    started: float | None = None
    reply_status: str | None = None
    #: the cell's execution count, once known
    execution_count: int | None = None

    @property
    def msg_id(self) -> str:
        return self.msg.msg_id

    @property
    def silent(self) -> bool:
        return bool(self.content.get("silent"))

    @property
    def stop_on_error(self) -> bool:
        return bool(self.content.get("stop_on_error", True)) and not self.silent


class CellObserver(Protocol):
    """Told when a cell of the user's starts and ends (the monitor)."""

    def cell_started(self, run: CellRun) -> None: ...

    def cell_finished(self, run: CellRun) -> None: ...


class OutputSink(Protocol):
    """Where a magic's outputs go: each is published on IOPub at once, parented to its cell."""

    def stream(self, text: str, name: str = "stdout") -> None: ...

    def display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        display_id: str | None = None,
        update: bool = False,
    ) -> None: ...


#: ``await run_hidden(code, expressions)``: run ``code`` silently in the user's namespace and
#: return each expression's value as a Python literal; raises HiddenExecutionError when the
#: code raises and UpstreamDied when the kernel it started on is gone
RunHidden = Callable[[str, "dict[str, str] | None"], Awaitable[dict[str, Any]]]


class MonitorControls(Protocol):
    """What magics may do with the monitor."""

    store: PerfStore
    #: processes watched besides the kernel's tree (a Score-P child)
    extra_roots: set[int]
    #: whether long cells show an updating live display
    live: bool

    async def drain(self) -> None:
        """Wait until every finished cell's record is in the store."""

    def export(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class KernelFacts:
    """What the proxy knows of the upstream kernel it runs in front of."""

    #: ``language_info.name`` of its kernel_info_reply (``python``, ``bash``, ...)
    language: str = "python"
    #: whether it is IPython (ipykernel): only then does the proxy run Python code in it
    ipython: bool = True
    #: the kernel's process id, while it runs
    pid: int | None = None


class Services:
    """The proxy's long-lived parts a magic may use.

    ``monitor`` is the monitor; ``kernel()`` says what the upstream is. Each magic family keeps
    its own settings in an object of its own type, made on first use: ``state(ScorepSettings)``
    returns the one ``ScorepSettings`` of this proxy.
    """

    def __init__(self, monitor: MonitorControls, kernel: Callable[[], KernelFacts]) -> None:
        self.monitor = monitor
        self.kernel = kernel
        self._state: dict[type[Any], Any] = {}

    def state(self, kind: type[T]) -> T:
        found = self._state.get(kind)
        if found is None:
            found = self._state[kind] = kind()
        assert isinstance(found, kind)
        return found


@dataclass
class MagicContext:
    """What a running magic may use.

    ``run_hidden`` runs code silently in the user's kernel (see :data:`RunHidden`);
    ``interrupted`` is set when the user interrupts the cell or the kernel dies under it;
    ``request`` is the execute_request's content; ``execution_count`` the cell's number;
    ``cell_id`` the notebook cell it came from (the request's ``cellId`` metadata), if known.
    """

    out: OutputSink
    run_hidden: RunHidden
    services: Services
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    request: dict[str, Any] = field(default_factory=dict)
    execution_count: int | None = None
    cell_id: str | None = None


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
    #: it runs Python code in the kernel, so it works only in front of an IPython kernel
    needs_python: bool = False


#: a mode's claim on a cell: the magic that answers it, or ``None``
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


__all__ = [
    "CellObserver",
    "CellRun",
    "Handler",
    "Intercept",
    "KernelFacts",
    "Magic",
    "MagicContext",
    "MagicTable",
    "MonitorControls",
    "OutputSink",
    "RunHidden",
    "Services",
]
