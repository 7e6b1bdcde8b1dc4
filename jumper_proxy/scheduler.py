"""Every request in flight between the frontend and the kernel, and what becomes of each.

The scheduler owns them all: the cells (execute requests, queued, then run one at a time by the
kernel or by a proxy magic), the other requests forwarded to the kernel (kept as their header
only, bounded and aged), the proxy's own hidden work on the kernel, and the probes that tell a
refused request from a slow one. It alone decides what happens to each when the kernel
answers, refuses a request without a word, goes idle without replying, is interrupted, or dies.
It sends nothing itself: the :class:`Port` around it moves the frames.

One cell, from socket to socket:

1. :meth:`submit` queues the verified execute_request; :meth:`pump` takes it when it is next
   and the kernel is free. A proxy magic runs here (:meth:`_run_magic`: busy, execute_input,
   outputs, execute_reply, idle). Any other cell is forwarded as it came.
2. The kernel's ``busy`` for it starts the cell for the observers (the monitor). No busy within
   ``busy_grace``: a probe (a ``kernel_info_request`` on the same connection, which the
   kernel answers in order) tells whether the kernel dropped the cell; if so it is answered
   with an error.
3. Its ``execute_reply`` goes to the frontend; an error with ``stop_on_error`` aborts the queue.
4. Its ``idle`` ends it (observers told first, then the idle is forwarded) and the next cell
   goes. An idle before the reply is held back; if no reply follows within
   ``quiet_grace`` a probe decides, and a cell the kernel finished without a reply (an
   interrupt landing inside the kernel's own code) is answered by the proxy.
5. If the kernel dies meanwhile (:meth:`upstream_died`), the cell is answered with the cause,
   the queue is aborted, a running magic is stopped and can reach no other kernel.

Cells go one at a time so that every sample the monitor takes belongs to the right cell: were
the kernel to queue cells itself, it would start the next before the proxy saw the previous one
end (ipykernel's idle can arrive late while the next cell holds the GIL).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jumper_proxy import kernelside, wire
from jumper_proxy.api import (
    CellObserver,
    CellRun,
    KernelFacts,
    Magic,
    MagicContext,
    MagicTable,
    Services,
)
from jumper_proxy.cells import parse_cell
from jumper_proxy.errors import (
    HiddenExecutionError,
    JumperError,
    MagicError,
    UpstreamDied,
    WireError,
    user_error,
)
from jumper_proxy.wire import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """The scheduler's deadlines (seconds) and bounds."""

    #: after a cell is forwarded, how long its busy may take before a probe asks the kernel
    busy_grace: float = 1.0
    #: after a cell's idle without its reply, how long before a probe asks the kernel
    quiet_grace: float = 0.5
    #: after a reply, how long its idle may take before the cell is finished anyway
    idle_grace: float = 2.0
    #: an interrupt delivered less than this long ago, to a cell still running, is not repeated
    interrupt_window: float = 1.0
    #: forwarded requests kept while they wait for their reply: how many, bytes, how long
    forwarded_max: int = 1024
    forwarded_max_bytes: int = 8 << 20
    forwarded_max_age: float = 3600.0


class Port(Protocol):
    """What the scheduler needs from the proxy around it."""

    def to_upstream(self, channel: str, msg: Message) -> None:
        """Forward a frontend message to the kernel as it came."""

    def upstream_request(self, channel: str, out: wire.Outgoing) -> str:
        """Send a request of the proxy's own on ``shell`` or ``hidden``; its msg_id."""

    def to_frontend(self, channel: str, msg: Message) -> None:
        """Forward a kernel message to the frontend as it came."""

    def reply(self, channel: str, request: Message, out: wire.Outgoing) -> None:
        """Answer ``request`` (to the client that sent it) with a message of the proxy's."""

    def publish(self, parent: dict[str, Any], out: wire.Outgoing) -> None:
        """Publish a message of the proxy's on IOPub."""

    async def interrupt_upstream(self) -> None: ...

    def kernel(self) -> KernelFacts: ...


@dataclass(eq=False)
class _Cell:
    """A cell's run and what the scheduler knows of it."""

    run: CellRun
    magic: Magic | None = None
    decided: bool = False
    busy: bool = False
    idle: Message | None = None
    replied: bool = False
    done: bool = False
    timer: asyncio.TimerHandle | None = None
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    interrupt_sent: float | None = None
    #: the kernel died under it (a magic's run): nothing more may reach any kernel for it
    lost: UpstreamDied | None = None

    @property
    def msg(self) -> Message:
        return self.run.msg


@dataclass(eq=False)
class _Forwarded:
    """A forwarded request waiting for its reply: its header and route, not its frames."""

    channel: str
    header: dict[str, Any]
    idents: list[bytes]
    size: int
    since: float
    amend: Callable[[Message], None] | None = None
    waiter: asyncio.Future[Message] | None = None


@dataclass(eq=False)
class _Hidden:
    """A request of the proxy's own on its hidden connection."""

    future: asyncio.Future[Message]
    busy: bool = False
    timer: asyncio.TimerHandle | None = None


class _Sink:
    """Publishes a magic's outputs on IOPub with its cell as parent."""

    def __init__(self, port: Port, parent: dict[str, Any]) -> None:
        self.port = port
        self.parent = parent

    def stream(self, text: str, name: str = "stdout") -> None:
        if text:
            self.port.publish(self.parent, wire.stream(name, text))

    def display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        display_id: str | None = None,
        update: bool = False,
    ) -> None:
        self.port.publish(self.parent, wire.display(data, metadata, display_id, update))


class Scheduler:
    """Owns every request in flight; see the module docstring for one cell's way."""

    def __init__(
        self, port: Port, magics: MagicTable, services: Services, limits: Limits | None = None
    ) -> None:
        self.port = port
        self.limits = limits or Limits()
        self.magics = magics
        self.services = services
        self.observers: list[CellObserver] = []
        self.queue: deque[_Cell] = deque()
        self.current: _Cell | None = None
        self.forwarded: OrderedDict[str, _Forwarded] = OrderedDict()
        self._forwarded_bytes = 0
        self.hidden: dict[str, _Hidden] = {}
        #: the proxy's own requests on the kernel's shell and control (probes, interrupts):
        #: msg_id → what to do with the answer
        self._own: dict[str, Callable[[], None]] = {}
        #: requests that wait for the kernel to be up
        self._backlog: list[tuple[str, Message, Callable[[Message], None] | None]] = []
        self._barriers: deque[Callable[[], Awaitable[None]]] = deque()
        self._busy_with: asyncio.Task[None] | None = None
        self._last_count = 0
        self._interrupted_at: float | None = None
        self.answering = False

    # ---- the kernel's availability ------------------------------------------------------

    def upstream_ready(self) -> None:
        """The kernel answers: what waited for it goes out, in order."""
        self.answering = True
        backlog, self._backlog = self._backlog, []
        for channel, msg, amend in backlog:
            self.forward(channel, msg, amend)
        self.pump()

    def upstream_died(self, exit_code: int | None) -> None:
        """The one place a death is handled: every request the dead kernel owed is answered
        with the cause (or fails, for the proxy's own), and the queue is aborted (its cells
        would run in a fresh kernel without the state they expect)."""
        self.answering = False
        died = UpstreamDied(exit_code)
        self._abort_queued()
        cell = self.current
        if cell is not None and cell.magic is not None:
            cell.lost = died  # its magic ends, and its reply names the death
            cell.interrupted.set()
        elif cell is not None:
            self._answer_lost(cell, "KernelDied", f"{died} The kernel is restarting.")
        for msg_id, entry in list(self.forwarded.items()):
            self._pop_forwarded(msg_id)
            if entry.waiter is not None:
                if not entry.waiter.done():
                    entry.waiter.set_exception(died)
                continue
            out = wire.error_reply(str(entry.header.get("msg_type", "")), "KernelDied", str(died))
            self.port.reply(entry.channel, _stub(entry), out)
        for hidden in self.hidden.values():
            if hidden.timer is not None:
                hidden.timer.cancel()
            if not hidden.future.done():
                hidden.future.set_exception(died)
        self.hidden.clear()
        self._own.clear()

    # ---- frontend requests --------------------------------------------------------------

    def submit(self, msg: Message) -> None:
        """Queue a verified execute_request."""
        content = msg.content()
        code = content.get("code", "")
        if not isinstance(code, str):
            self._refuse(msg, "the request's code is not a string")
            return
        self.queue.append(_Cell(CellRun(msg, parse_cell(code), content)))
        self.pump()

    def _refuse(self, msg: Message, why: str) -> None:
        parent = msg.as_parent()
        self.port.publish(parent, wire.status("busy"))
        self.port.reply("shell", msg, wire.error_reply(msg.msg_type, "BadRequest", why))
        self.port.publish(parent, wire.status("idle"))

    def forward(
        self, channel: str, msg: Message, amend: Callable[[Message], None] | None = None
    ) -> None:
        """Forward a request to the kernel; ``amend`` may change its reply on the way back."""
        if not self.answering:
            self._backlog.append((channel, msg, amend))
            return
        self._keep_forwarded(msg, channel, amend=amend)
        self.port.to_upstream(channel, msg)

    async def forward_and_wait(self, channel: str, msg: Message, timeout: float) -> Message | None:
        """Forward ``msg`` and wait up to ``timeout`` s for its reply (kept from the frontend);
        ``None`` when none came or the kernel died."""
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._keep_forwarded(msg, channel, waiter=waiter)
        self.port.to_upstream(channel, msg)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except (asyncio.TimeoutError, UpstreamDied):
            return None
        finally:
            self._pop_forwarded(msg.msg_id)

    def _keep_forwarded(
        self,
        msg: Message,
        channel: str,
        amend: Callable[[Message], None] | None = None,
        waiter: asyncio.Future[Message] | None = None,
    ) -> None:
        """Remember a forwarded request, within the bounds: oldest (and stale) forgotten first;
        a forgotten request's reply still reaches the frontend, only unamended."""
        msg_id = msg.msg_id
        size = len(msg.frames[1]) + sum(len(i) for i in msg.idents)
        since = time.monotonic()
        entry = _Forwarded(channel, msg.header, msg.idents, size, since, amend, waiter)
        self._pop_forwarded(msg_id)
        self.forwarded[msg_id] = entry
        self._forwarded_bytes += entry.size
        stale = entry.since - self.limits.forwarded_max_age
        while self.forwarded:
            oldest_id, oldest = next(iter(self.forwarded.items()))
            if (
                len(self.forwarded) <= self.limits.forwarded_max
                and self._forwarded_bytes <= self.limits.forwarded_max_bytes
                and oldest.since >= stale
            ) or oldest.waiter is not None:
                break
            self._pop_forwarded(oldest_id)

    def _pop_forwarded(self, msg_id: str) -> _Forwarded | None:
        entry = self.forwarded.pop(msg_id, None)
        if entry is not None:
            self._forwarded_bytes -= entry.size
        return entry

    async def interrupt(self) -> None:
        """Interrupt whatever runs: a magic is told, the kernel is interrupted in its own mode.

        Interrupts that arrive while one is being delivered (less than ``interrupt_window``
        after the last one delivered) are coalesced: a storm of them must neither land a second
        SIGINT inside the kernel's own handling of the first, nor spill over into the cell that
        runs next.
        """
        now = time.monotonic()
        if (
            self._interrupted_at is not None
            and now - self._interrupted_at < self.limits.interrupt_window
        ):
            return
        cell = self.current
        kernel_busy = (cell is not None and cell.magic is None) or bool(self.hidden)
        if cell is not None and cell.magic is not None:
            cell.interrupted.set()
        elif not kernel_busy:
            return
        self._interrupted_at = now
        if cell is not None:
            cell.interrupt_sent = now
        if kernel_busy:
            await self.port.interrupt_upstream()

    def add_barrier(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` once every cell submitted so far has finished, before any later one.

        For the proxy's own housekeeping on the kernel (e.g. re-reading settings a cell
        changed); an exception in ``work`` is logged, never shown.
        """
        self._barriers.append(work)
        self.pump()

    # ---- moving the queue ---------------------------------------------------------------

    def pump(self) -> None:
        """Start the next piece of work if nothing runs: a barrier, a magic, or a cell."""
        if self.current is not None or self._busy_with is not None or not self.answering:
            return
        loop = asyncio.get_running_loop()
        if self._barriers:
            self._busy_with = loop.create_task(self._run_barrier(self._barriers.popleft()))
            return
        if not self.queue:
            return
        cell = self.current = self.queue.popleft()
        if self._is_magic(cell):
            self._busy_with = loop.create_task(self._run_magic(cell))
            return
        self.port.to_upstream("shell", cell.msg)
        self._started(cell)  # it starts the moment the kernel reads it
        cell.timer = loop.call_later(self.limits.busy_grace, self._probe_cell, cell)

    def _is_magic(self, cell: _Cell) -> bool:
        """Whether the proxy answers this cell (decided when it is next, so that a mode the
        cell before switched on applies); a frontend's silent request is never a mode's."""
        if not cell.decided:
            cell.decided = True
            if cell.run.silent:
                cell.magic = self.magics.get(cell.run.cell.magic)
            else:
                cell.magic = self.magics.resolve(cell.run.cell)
        return cell.magic is not None

    async def _run_barrier(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            log.exception("Housekeeping on the kernel failed")
        finally:
            self._busy_with = None
            self.pump()

    def _started(self, cell: _Cell) -> None:
        if cell.run.started is None:
            cell.run.started = time.time()
            for observer in self.observers:
                observer.cell_started(cell.run)

    def _finish(self, cell: _Cell) -> None:
        """The cell is over: observers told, the next may go (the caller forwards its idle)."""
        if cell.done:
            return
        cell.done = True
        if cell.timer is not None:
            cell.timer.cancel()
        if cell.run.started is not None:
            for observer in self.observers:
                observer.cell_finished(cell.run)
        if self.current is cell:
            self.current = None

    # ---- the kernel's messages ----------------------------------------------------------

    def is_quiet(self, parent_id: str | None) -> bool:
        """Whether messages with this parent are the proxy's own business, not the user's."""
        return parent_id in self.hidden or parent_id in self._own

    def from_iopub(self, msg: Message) -> None:
        """A kernel IOPub message: dropped if it belongs to the proxy's own work, otherwise
        forwarded (a cell's busy and idle moving it on)."""
        parent = msg.parent_msg_id
        if msg.msg_type == "iopub_welcome" or self.is_quiet(parent):
            if parent is not None and parent in self.hidden and msg.msg_type == "status":
                self._hidden_status(parent, _state(msg))
            return
        cell = self.current
        if cell is None or cell.magic is not None or parent != cell.run.msg_id:
            self.port.to_frontend("iopub", msg)
            return
        state = _state(msg) if msg.msg_type == "status" else None
        if state == "busy":
            cell.busy = True
            if cell.timer is not None and not cell.replied:
                cell.timer.cancel()
                cell.timer = None
        elif state == "idle":
            cell.idle = msg
            if not cell.replied:  # held back until the reply is in (or the kernel says none)
                self._rearm(cell, self.limits.quiet_grace, self._probe_cell)
                return
            self._finish(cell)
            self.port.to_frontend("iopub", msg)
            self.pump()
            return
        self.port.to_frontend("iopub", msg)

    def from_shell(self, msg: Message) -> None:
        """A reply on the proxy's shell connection."""
        parent = msg.parent_msg_id or ""
        probe = self._own.pop(parent, None)
        if probe is not None:
            probe()
            return
        cell = self.current
        if cell is not None and cell.magic is None and parent == cell.run.msg_id:
            self._cell_reply(cell, msg)
            return
        self._forwarded_reply("shell", msg)

    def from_control(self, msg: Message) -> None:
        """A reply on the proxy's control connection."""
        own = self._own.pop(msg.parent_msg_id or "", None)
        if own is not None:
            own()
            return
        self._forwarded_reply("control", msg)

    def own_request(
        self, channel: str, out: wire.Outgoing, then: Callable[[], None] = lambda: None
    ) -> None:
        """Send a request of the proxy's own on ``channel``; its answer (and anything the
        kernel publishes for it) never reaches the frontend; ``then`` is called with it."""
        self._own[self.port.upstream_request(channel, out)] = then

    def _forwarded_reply(self, channel: str, msg: Message) -> None:
        """A reply to a forwarded request (or to one forgotten: passed on as it is)."""
        entry = self._pop_forwarded(msg.parent_msg_id or "")
        if entry is not None and entry.waiter is not None:
            if not entry.waiter.done():
                entry.waiter.set_result(msg)
            return
        if entry is not None and entry.amend is not None:
            try:
                entry.amend(msg)
            except (WireError, ValueError, TypeError, KeyError):
                log.exception("Could not amend a %s; passed on as it came", msg.msg_type)
        self.port.to_frontend(channel, msg)

    def _cell_reply(self, cell: _Cell, msg: Message) -> None:
        try:
            content = msg.content()
        except WireError:
            content = {"status": "error"}
        status = str(content.get("status", "error"))
        count = content.get("execution_count")
        if isinstance(count, int):
            self._last_count = count
            cell.run.execution_count = count
        interrupted = status == "error" and content.get("ename") == "KeyboardInterrupt"
        cell.run.reply_status = "interrupted" if interrupted else status
        cell.replied = True
        self.port.to_frontend("shell", msg)
        if status == "error" and cell.run.stop_on_error:
            self._abort_queued()
        if cell.idle is not None:  # it came first and was held back
            idle, cell.idle = cell.idle, None
            self._finish(cell)
            self.port.to_frontend("iopub", idle)
            self.pump()
        else:
            self._rearm(cell, self.limits.idle_grace, self._force_idle)

    def _force_idle(self, cell: _Cell) -> None:
        if not cell.done:
            log.debug("No idle status for %s; treating it as finished", cell.run.msg_id)
            self._finish(cell)
            self.pump()

    def _rearm(self, cell: _Cell, delay: float, then: Callable[[_Cell], None]) -> None:
        if cell.timer is not None:
            cell.timer.cancel()
        cell.timer = asyncio.get_running_loop().call_later(delay, then, cell)

    # ---- probes: a refused request told from a slow one ---------------------------------

    def _probe(self, channel: str, then: Callable[[], None]) -> None:
        """Ask the kernel a ``kernel_info_request`` on ``channel``. It answers the connection's
        requests in order, so when the answer comes, every request sent before it on the same
        connection has had its reply, or never will."""
        self.own_request(channel, wire.Outgoing("kernel_info_request", {}), then)

    def _probe_cell(self, cell: _Cell) -> None:
        cell.timer = None
        if cell.done or cell.replied:
            return
        self._probe("shell", lambda: self._probe_answered(cell))

    def _probe_answered(self, cell: _Cell) -> None:
        if cell.done or cell.replied or self.current is not cell:
            return
        if not cell.busy:
            log.warning("The kernel dropped cell %s without a reply", cell.run.msg_id)
            self._answer_lost(
                cell, "KernelRefused", "The kernel dropped this request without answering it."
            )
        elif cell.interrupt_sent is not None:
            self._answer_lost(
                cell,
                "KeyboardInterrupt",
                "Interrupted; the kernel stopped the cell without a reply.",
            )
        else:
            self._answer_lost(cell, "KernelError", "The kernel finished the cell without a reply.")

    def _answer_lost(self, cell: _Cell, ename: str, evalue: str) -> None:
        """Answer a forwarded cell the kernel will not answer: its error, reply and idle."""
        parent = cell.msg.as_parent()
        if not cell.busy and cell.idle is None:
            self.port.publish(parent, wire.status("busy"))
        self.port.publish(parent, wire.error(ename, evalue))
        count = self._last_count if self.port.kernel().ipython else None
        self.port.reply(
            "shell", cell.msg, wire.error_reply("execute_request", ename, evalue, count=count)
        )
        cell.replied = True
        cell.run.reply_status = "interrupted" if ename == "KeyboardInterrupt" else "error"
        idle, cell.idle = cell.idle, None
        self._finish(cell)
        if idle is not None:
            self.port.to_frontend("iopub", idle)
        else:
            self.port.publish(parent, wire.status("idle"))
        if cell.run.stop_on_error:
            self._abort_queued()
        self.pump()

    # ---- the proxy's own work on the kernel ---------------------------------------------

    async def run_hidden(
        self, code: str, expressions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run ``code`` silently in the user's namespace and evaluate ``expressions`` there.

        Nothing is shown to the user, nothing enters the history, the execution count does not
        change. Each expression's value comes back as a Python literal (``ast.literal_eval`` of
        its repr), so expressions should evaluate to str, numbers, lists, dicts or None.
        """
        if not self.answering:
            raise UpstreamDied(None)
        content: dict[str, Any] = {
            "code": code,
            "silent": True,
            "store_history": False,
            "user_expressions": expressions or {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        msg_id, hidden = self._send_hidden(wire.Outgoing("execute_request", content))
        hidden.timer = asyncio.get_running_loop().call_later(
            self.limits.busy_grace, self._probe_hidden, msg_id
        )
        try:
            reply = await hidden.future
        finally:
            self._forget_hidden(msg_id)
        return _hidden_values(reply)

    async def ask(self, out: wire.Outgoing, timeout: float) -> Message:
        """Send a request of the proxy's own on the hidden connection, also while the kernel is
        not answering yet, and wait up to ``timeout`` s for its reply (``TimeoutError``)."""
        msg_id, hidden = self._send_hidden(out)
        try:
            return await asyncio.wait_for(hidden.future, timeout)
        finally:
            self._forget_hidden(msg_id)

    def _send_hidden(self, out: wire.Outgoing) -> tuple[str, _Hidden]:
        msg_id = self.port.upstream_request("hidden", out)
        hidden = self.hidden[msg_id] = _Hidden(asyncio.get_running_loop().create_future())
        return msg_id, hidden

    def _forget_hidden(self, msg_id: str) -> None:
        hidden = self.hidden.pop(msg_id, None)
        if hidden is not None and hidden.timer is not None:
            hidden.timer.cancel()

    def from_hidden(self, msg: Message) -> None:
        """A reply on the proxy's hidden connection."""
        parent = msg.parent_msg_id or ""
        probe = self._own.pop(parent, None)
        if probe is not None:
            probe()
            return
        hidden = self.hidden.get(parent)
        if hidden is not None and not hidden.future.done():
            hidden.future.set_result(msg)

    def _hidden_status(self, msg_id: str, state: str | None) -> None:
        hidden = self.hidden.get(msg_id)
        if hidden is None:
            return
        if state == "busy":
            hidden.busy = True
            if hidden.timer is not None:
                hidden.timer.cancel()
                hidden.timer = None
        elif state == "idle" and not hidden.future.done():
            hidden.timer = asyncio.get_running_loop().call_later(
                self.limits.quiet_grace, self._probe_hidden, msg_id
            )

    def _probe_hidden(self, msg_id: str) -> None:
        def answered() -> None:
            hidden = self.hidden.get(msg_id)
            if hidden is not None and not hidden.future.done():
                hidden.future.set_exception(
                    HiddenExecutionError(
                        "KernelRefused", "the kernel did not answer the proxy's request"
                    )
                )

        if msg_id in self.hidden:
            self._probe("hidden", answered)

    # ---- cells the proxy answers --------------------------------------------------------

    def _abort_queued(self) -> None:
        while self.queue:
            cell = self.queue.popleft()
            parent = cell.msg.as_parent()
            self.port.publish(parent, wire.status("busy"))
            self.port.reply("shell", cell.msg, wire.aborted("execute_request"))
            self.port.publish(parent, wire.status("idle"))

    async def _execution_count(self, cell: _Cell) -> int | None:
        """A magic cell takes the kernel's next execution count, as it would in IPython; in
        front of another kernel it shows the last count the kernel gave."""
        if cell.run.silent:
            return None
        if not self.port.kernel().ipython:
            return self._last_count
        result = await self._hidden_for(cell)(*kernelside.next_execution_count())
        self._last_count = int(result["n"])
        return self._last_count - 1

    def _hidden_for(self, cell: _Cell) -> Callable[..., Awaitable[dict[str, Any]]]:
        """``run_hidden`` for a magic's cell: refused once the kernel it began on has died."""

        async def run_hidden(
            code: str, expressions: dict[str, str] | None = None
        ) -> dict[str, Any]:
            if cell.lost is not None:
                raise cell.lost
            return await self.run_hidden(code, expressions)

        return run_hidden

    async def _run_magic(self, cell: _Cell) -> None:
        run, magic = cell.run, cell.magic
        assert magic is not None
        parent = cell.msg.as_parent()
        count: int | None = None
        self.port.publish(parent, wire.status("busy"))
        try:
            kernel = self.port.kernel()
            if magic.needs_python and not kernel.ipython:
                raise MagicError(
                    f"%%{magic.name} runs Python in the kernel; this kernel is "
                    f"{kernel.language}, not IPython."
                )
            count = run.execution_count = await self._execution_count(cell)
            if not run.silent:
                self.port.publish(parent, wire.execute_input(run.cell.code, count))
            ctx = MagicContext(
                out=_Sink(self.port, parent),
                run_hidden=self._hidden_for(cell),
                services=self.services,
                interrupted=cell.interrupted,
                request=run.content,
                execution_count=count,
                cell_id=_cell_id(cell.msg),
            )
            if magic.measured:
                self._started(cell)
            await magic.handler(ctx, run.cell.args, run.cell.body)
            if cell.lost is not None:
                raise cell.lost
            out = wire.execute_ok(count)
        except Exception as exc:
            out = self._magic_failed(cell, exc, count)
        status = str(out.content["status"])
        run.reply_status = status
        if status == "error" and cell.interrupted.is_set() and cell.lost is None:
            run.reply_status = "interrupted"
        self._finish(cell)
        self.port.reply("shell", cell.msg, out)
        self.port.publish(parent, wire.status("idle"))
        self._busy_with = None
        if status == "error" and run.stop_on_error:
            self._abort_queued()
        self.pump()

    def _magic_failed(self, cell: _Cell, exc: Exception, count: int | None) -> wire.Outgoing:
        tb: list[str]
        if cell.lost is not None:
            ename, evalue, tb = "KernelDied", f"{cell.lost} The kernel is restarting.", []
        elif isinstance(exc, (JumperError, OSError)):
            ename, evalue, tb = user_error(exc)
        else:  # a bug in the proxy must not cost the user the kernel
            assert cell.magic is not None
            log.exception("Magic %%%%%s failed", cell.magic.name)
            ename, evalue = "InternalError", f"%%{cell.magic.name} failed: {exc}"
            tb = traceback.format_exception(exc)
        self.port.publish(cell.msg.as_parent(), wire.error(ename, evalue, tb))
        return wire.error_reply("execute_request", ename, evalue, tb, count)


def _state(msg: Message) -> str | None:
    try:
        state = msg.content().get("execution_state")
    except WireError:
        return None
    return str(state) if state is not None else None


def _cell_id(msg: Message) -> str | None:
    """The notebook cell a request came from: the ``cellId`` JupyterLab and Notebook put in
    an execute_request's metadata."""
    try:
        value = msg.metadata().get("cellId")
    except WireError:
        return None
    return value if isinstance(value, str) else None


def _stub(entry: _Forwarded) -> Message:
    """A request message rebuilt from what was kept of it, to answer it."""
    return Message(idents=entry.idents, frames=[], header=entry.header, parent_header={})


def _hidden_values(reply: Message) -> dict[str, Any]:
    import ast

    content = reply.content()
    if content.get("status") != "ok":
        raise HiddenExecutionError(
            content.get("ename", "Error"), content.get("evalue", ""), content.get("traceback")
        )
    results: dict[str, Any] = {}
    for name, value in content.get("user_expressions", {}).items():
        if value.get("status") != "ok":
            raise HiddenExecutionError(value.get("ename", "Error"), value.get("evalue", ""))
        text = value.get("data", {}).get("text/plain", "None")
        try:
            results[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise HiddenExecutionError(
                "ValueError", f"{name} is not a literal: {text[:200]}"
            ) from exc
    return results


__all__ = ["Limits", "Port", "Scheduler"]
