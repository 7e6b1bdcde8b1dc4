"""The execute queue: ordering, ``stop_on_error``, who handles each cell, and the
busy / execute_input / outputs / execute_reply / idle envelope of cells the proxy answers.

Cells wait in the proxy's queue and go to the upstream one at a time: the next when the one
before has finished (its reply and its idle status seen). So the upstream never starts a cell
before the proxy has seen the previous one end, and every sample the monitor takes belongs to
the right cell. A proxy magic is answered in the same order. A cell that fails with
``stop_on_error`` aborts the cells queued behind it, as ipykernel aborts its own queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jumper_proxy.cells import Cell, parse_cell
from jumper_proxy.errors import JumperError, UpstreamDied, user_error
from jumper_proxy.magics import Magic, MagicContext, MagicTable, RunHidden
from jumper_proxy.relay import Message

log = logging.getLogger(__name__)

#: After an execute_reply, how long to wait for the matching idle before moving on anyway.
IDLE_GRACE = 2.0


@dataclass
class Request:
    """One execute_request as it moves through the queue."""

    msg: Message
    cell: Cell
    content: dict[str, Any]
    started: float | None = None
    reply_status: str | None = None
    idle: bool = False
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)
    #: the proxy magic that answers this cell, once decided
    magic: Magic | None = None
    #: the wait for an idle that comes late (after the reply)
    idle_timer: asyncio.TimerHandle | None = None

    @property
    def msg_id(self) -> str:
        return self.msg.msg_id

    @property
    def stop_on_error(self) -> bool:
        return bool(self.content.get("stop_on_error", True)) and not self.content.get("silent")


class Port(Protocol):
    """What the scheduler needs from the proxy around it."""

    def forward_execute(self, msg: Message) -> None: ...

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None: ...

    def reply(
        self,
        msg: Message,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> None: ...


class CellObserver(Protocol):
    """Told when an ordinary cell starts and ends in the upstream (the monitor)."""

    def cell_started(self, request: Request) -> None: ...

    def cell_finished(self, request: Request) -> None: ...


class _Sink:
    """Publishes a magic's outputs on IOPub with the request as parent."""

    def __init__(self, port: Port, parent: dict[str, Any]) -> None:
        self.port = port
        self.parent = parent

    def stream(self, text: str, name: str = "stdout") -> None:
        if text:
            self.port.publish("stream", {"name": name, "text": text}, self.parent)

    def display(
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        display_id: str | None = None,
        update: bool = False,
    ) -> None:
        content: dict[str, Any] = {"data": data, "metadata": metadata or {}, "transient": {}}
        if display_id is not None:
            content["transient"] = {"display_id": display_id}
        self.port.publish("update_display_data" if update else "display_data", content, self.parent)


class Scheduler:
    """Decides, for each execute_request, who answers it and when."""

    def __init__(
        self,
        port: Port,
        magics: MagicTable,
        run_hidden: RunHidden,
        services: dict[str, Any] | None = None,
    ) -> None:
        self.port = port
        self.magics = magics
        self.run_hidden = run_hidden
        self.services = services if services is not None else {}
        self.observers: list[CellObserver] = []
        self.queue: deque[Request] = deque()
        self.inflight: dict[str, Request] = {}
        self.running: Request | None = None
        self._task: asyncio.Task[None] | None = None
        self._barriers: deque[Callable[[], Awaitable[None]]] = deque()
        self._barrier: asyncio.Task[None] | None = None

    # ---- intake --------------------------------------------------------------------------

    def submit(self, msg: Message) -> None:
        """Take a frontend execute_request."""
        content = msg.content()
        request = Request(msg=msg, cell=parse_cell(str(content.get("code", ""))), content=content)
        self.queue.append(request)
        self.pump()

    def is_magic(self, request: Request) -> bool:
        """Whether the proxy answers this cell (decided when the cell is next in line, so a
        mode switched on by the cell before it applies)."""
        if request.magic is None and request.content.get("silent"):
            request.magic = self.magics.get(request.cell.magic)  # a frontend's, not a mode's
        elif request.magic is None:
            request.magic = self.magics.resolve(request.cell)
        return request.magic is not None

    def add_barrier(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` once every cell submitted so far has finished, before any later one.

        For the proxy's own housekeeping on the upstream (e.g. re-reading settings a cell
        changed); an exception in ``work`` is logged, never shown.
        """
        self._barriers.append(work)
        self.pump()

    def pump(self) -> None:
        """Move queued requests on as far as ordering allows."""
        if self._barrier is not None or self.running is not None:
            return
        if self._barriers:
            if not self.inflight:
                work = self._barriers.popleft()
                self._barrier = asyncio.get_running_loop().create_task(self._run_barrier(work))
            return
        while self.queue and self.running is None:
            head = self.queue[0]
            if not self.is_magic(head):
                if self.inflight:
                    return
                self.queue.popleft()
                self.inflight[head.msg_id] = head
                self.port.forward_execute(head.msg)
                self._started(head)  # it starts the moment the upstream reads it
                continue
            if self.inflight:
                return
            self.queue.popleft()
            self.running = head
            self._task = asyncio.get_running_loop().create_task(self._run_magic(head))
            return

    async def _run_barrier(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            log.exception("Housekeeping on the kernel failed")
        finally:
            self._barrier = None
            self.pump()

    # ---- events from the upstream ---------------------------------------------------------

    def on_status(self, parent_id: str | None, state: str) -> None:
        """The upstream's status for a request (before the frontend sees it; the caller
        calls pump() after passing an idle on)."""
        request = self.inflight.get(parent_id or "")
        if request is None:
            return
        if state == "busy":
            self._started(request)
        elif state == "idle":
            request.idle = True
            self._maybe_done(request)

    def _started(self, request: Request) -> None:
        if request.started is None:
            request.started = time.time()
            for observer in self.observers:
                observer.cell_started(request)

    def on_reply(self, msg: Message) -> None:
        request = self.inflight.get(msg.parent_msg_id or "")
        if request is None:
            return
        request.reply_status = str(msg.content().get("status", "ok"))
        if request.reply_status == "error" and request.stop_on_error:
            self._abort_queued()
        if not request.idle and request.idle_timer is None:
            request.idle_timer = asyncio.get_running_loop().call_later(
                IDLE_GRACE, self._force_idle, request
            )
        self._maybe_done(request)
        self.pump()

    def _force_idle(self, request: Request) -> None:
        if request.msg_id in self.inflight and not request.idle:
            log.debug("No idle status for %s; treating it as finished", request.msg_id)
            request.idle = True
            self._maybe_done(request)
            self.pump()

    def _maybe_done(self, request: Request) -> None:
        """Finish the cell once its reply and idle are both in; the caller then calls pump()."""
        if request.reply_status is None or not request.idle:
            return
        if request.idle_timer is not None:
            request.idle_timer.cancel()
        del self.inflight[request.msg_id]
        for observer in self.observers:
            observer.cell_finished(request)

    def on_upstream_died(self, exit_code: int | None) -> None:
        """Answer the cell the dead upstream owed a reply, with the cause; abort those queued
        behind it (they would run in a fresh kernel without the state they expect)."""
        died = UpstreamDied(exit_code)
        self._abort_queued()
        for request in list(self.inflight.values()):
            self._publish_error(request, "KernelDied", f"{died} The kernel is restarting.", [])
            self.port.reply(
                request.msg, "execute_reply", _error_content("KernelDied", str(died), [])
            )
            self.port.publish("status", {"execution_state": "idle"}, request.msg.as_parent())
            request.reply_status = "error"
            request.idle = True
            self._maybe_done(request)

    # ---- interrupts and waiting ---------------------------------------------------------

    @property
    def busy_upstream(self) -> bool:
        return bool(self.inflight)

    def interrupt(self) -> None:
        """Tell a running magic that the user interrupted it."""
        if self.running is not None:
            self.running.interrupted.set()

    # ---- cells the proxy answers --------------------------------------------------------

    def _abort_queued(self) -> None:
        while self.queue:
            self._send_aborted(self.queue.popleft())

    def _send_aborted(self, request: Request) -> None:
        parent = request.msg.as_parent()
        self.port.publish("status", {"execution_state": "busy"}, parent)
        self.port.reply(request.msg, "execute_reply", {"status": "aborted"}, {"status": "aborted"})
        self.port.publish("status", {"execution_state": "idle"}, parent)

    def _publish_error(self, request: Request, ename: str, evalue: str, tb: list[str]) -> None:
        content = {"ename": ename, "evalue": evalue, "traceback": tb or [f"{ename}: {evalue}"]}
        self.port.publish("error", content, request.msg.as_parent())

    async def _next_execution_count(self, request: Request) -> int:
        """Magic cells take the next execution count, as they would in IPython."""
        if request.content.get("silent"):
            return 0
        result = await self.run_hidden(
            "get_ipython().execution_count += 1", {"n": "get_ipython().execution_count"}
        )
        return int(result["n"]) - 1

    async def _run_magic(self, request: Request) -> None:
        parent = request.msg.as_parent()
        magic = request.magic
        assert magic is not None
        status, count = "ok", 0
        self.port.publish("status", {"execution_state": "busy"}, parent)
        try:
            count = await self._next_execution_count(request)
            if not request.content.get("silent"):
                self.port.publish(
                    "execute_input", {"code": request.cell.code, "execution_count": count}, parent
                )
            ctx = MagicContext(
                out=_Sink(self.port, parent),
                run_hidden=self.run_hidden,
                interrupted=request.interrupted,
                services=self.services,
                request=request.content,
                execution_count=count,
            )
            if magic.measured:
                request.started = time.time()
                for observer in self.observers:
                    observer.cell_started(request)
            await magic.handler(ctx, request.cell.args, request.cell.body)
            reply = {
                "status": "ok",
                "execution_count": count,
                "user_expressions": {},
                "payload": [],
            }
        except (JumperError, OSError) as exc:
            reply = self._fail(request, count, *user_error(exc))
        except Exception as exc:  # a bug in the proxy must not cost the user the kernel
            log.exception("Magic %%%%%s failed", magic.name)
            tb = traceback.format_exception(exc)
            reply = self._fail(request, count, "InternalError", f"%%{magic.name} failed: {exc}", tb)
        status = str(reply["status"])
        if magic.measured and request.started is not None:
            request.reply_status = status
            for observer in self.observers:
                observer.cell_finished(request)
        self.port.reply(request.msg, "execute_reply", reply, {"status": status})
        self.port.publish("status", {"execution_state": "idle"}, parent)
        self.running = None
        if status == "error" and request.stop_on_error:
            self._abort_queued()
        self.pump()

    def _fail(
        self, request: Request, count: int, ename: str, evalue: str, tb: list[str]
    ) -> dict[str, Any]:
        self._publish_error(request, ename, evalue, tb)
        content = _error_content(ename, evalue, tb)
        content["execution_count"] = count
        return content


def _error_content(ename: str, evalue: str, tb: list[str]) -> dict[str, Any]:
    return {
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": tb or [f"{ename}: {evalue}"],
        "user_expressions": {},
        "payload": [],
    }


__all__ = ["CellObserver", "Port", "Request", "Scheduler"]
