"""The scheduler's ordering rules, driven without sockets: a recording port stands in for
the proxy, and replies/status are fed in as the upstream would send them."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

from jumper_proxy.errors import MagicError
from jumper_proxy.magics import Magic, MagicContext, MagicTable
from jumper_proxy.relay import Message
from jumper_proxy.scheduler import Request, Scheduler


def _msg(
    msg_type: str, content: dict[str, Any], parent: str | None = None, msg_id: str = ""
) -> Message:
    header = {"msg_id": msg_id or f"id-{content.get('code', msg_type)}", "msg_type": msg_type}
    frames = [b"{}", b"{}", b"{}", json.dumps(content).encode()]
    return Message(
        idents=[b"client"],
        frames=frames,
        header=header,
        parent_header={"msg_id": parent} if parent else {},
    )


class RecordingPort:
    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self.published: list[tuple[str, dict[str, Any], str]] = []
        self.replies: list[tuple[str, dict[str, Any]]] = []

    def forward_execute(self, msg: Message) -> None:
        self.forwarded.append(msg.content()["code"])

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self.published.append((msg_type, content, parent["msg_id"]))

    def reply(
        self,
        msg: Message,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.replies.append((msg.msg_id, content))


class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def cell_started(self, request: Request) -> None:
        self.events.append(("start", request.cell.code))

    def cell_finished(self, request: Request) -> None:
        self.events.append(("end", f"{request.cell.code}:{request.reply_status}"))


def _scheduler() -> tuple[Scheduler, RecordingPort, list[str]]:
    port = RecordingPort()
    ran: list[str] = []
    table = MagicTable()

    async def note(ctx: MagicContext, args: str, body: str) -> None:
        ran.append(args)
        ctx.out.stream(f"note {args}\n")
        if args == "fail":
            raise MagicError("asked to fail")

    table.add(Magic("note", note, "records that it ran"))

    async def run_hidden(code: str, expressions: dict[str, str] | None = None) -> dict[str, Any]:
        return {"n": 8}

    return Scheduler(port, table, run_hidden), port, ran


def _finish(scheduler: Scheduler, code: str, status: str = "ok") -> None:
    scheduler.on_status(f"id-{code}", "busy")
    scheduler.on_reply(
        _msg("execute_reply", {"status": status}, parent=f"id-{code}", msg_id=f"r-{code}")
    )
    scheduler.on_status(f"id-{code}", "idle")
    scheduler.pump()  # as the proxy does once it has passed the idle on


def synchronously(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _submit(scheduler: Scheduler, code: str, **content: Any) -> None:
    scheduler.submit(_msg("execute_request", {"code": code, **content}))


@synchronously
async def test_cells_go_to_the_upstream_one_at_a_time() -> None:
    scheduler, port, _ = _scheduler()
    _submit(scheduler, "a")
    _submit(scheduler, "b")
    assert port.forwarded == ["a"]
    scheduler.on_status("id-a", "busy")
    scheduler.on_reply(_msg("execute_reply", {"status": "ok"}, parent="id-a", msg_id="r-a"))
    assert port.forwarded == ["a"]  # the reply alone is not the end: the idle is
    scheduler.on_status("id-a", "idle")
    scheduler.pump()
    assert port.forwarded == ["a", "b"]


@synchronously
async def test_a_magic_waits_for_the_cells_before_it_and_holds_the_ones_after() -> None:
    scheduler, port, ran = _scheduler()
    _submit(scheduler, "a")
    _submit(scheduler, "%%note m")
    _submit(scheduler, "c")
    await _settle()
    assert port.forwarded == ["a"] and ran == []
    _finish(scheduler, "a")
    await _settle()
    assert ran == ["m"]
    assert port.forwarded == ["a", "c"]
    kinds = [kind for kind, _, parent in port.published if parent == "id-%%note m"]
    assert kinds == ["status", "execute_input", "stream", "status"]
    assert (
        "id-%%note m",
        {"status": "ok", "execution_count": 7, "user_expressions": {}, "payload": []},
    ) in port.replies


@synchronously
async def test_an_error_aborts_the_cells_queued_behind_it() -> None:
    scheduler, port, ran = _scheduler()
    _submit(scheduler, "a")
    _submit(scheduler, "%%note m")
    _submit(scheduler, "c")
    _finish(scheduler, "a", status="error")
    await _settle()
    assert ran == []
    assert port.forwarded == ["a"]
    aborted = [msg_id for msg_id, content in port.replies if content["status"] == "aborted"]
    assert aborted == ["id-%%note m", "id-c"]


@synchronously
async def test_no_abort_without_stop_on_error() -> None:
    scheduler, port, ran = _scheduler()
    _submit(scheduler, "a", stop_on_error=False)
    _submit(scheduler, "%%note m")
    _finish(scheduler, "a", status="error")
    await _settle()
    assert ran == ["m"]


@synchronously
async def test_a_failing_magic_gives_an_error_and_aborts_what_follows() -> None:
    scheduler, port, ran = _scheduler()
    _submit(scheduler, "%%note fail")
    _submit(scheduler, "after")
    await _settle()
    errors = [content for kind, content, _ in port.published if kind == "error"]
    assert errors and errors[0]["ename"] == "MagicError" and errors[0]["evalue"] == "asked to fail"
    assert port.replies[0][1]["status"] == "error"
    assert port.replies[1] == ("id-after", {"status": "aborted"})
    assert port.forwarded == []


@synchronously
async def test_observers_see_ordinary_cells_from_busy_to_idle() -> None:
    scheduler, port, _ = _scheduler()
    observer = Observer()
    scheduler.observers.append(observer)
    _submit(scheduler, "a")
    _finish(scheduler, "a")
    assert observer.events == [("start", "a"), ("end", "a:ok")]


@synchronously
async def test_a_barrier_runs_between_the_cells() -> None:
    scheduler, port, _ = _scheduler()
    order: list[str] = []

    async def work() -> None:
        order.append("barrier")

    _submit(scheduler, "a")
    scheduler.add_barrier(work)
    _submit(scheduler, "b")
    await _settle()
    assert order == [] and port.forwarded == ["a"]
    _finish(scheduler, "a")
    await _settle()
    assert order == ["barrier"]
    assert port.forwarded == ["a", "b"]


@synchronously
async def test_upstream_death_answers_every_cell_in_flight() -> None:
    scheduler, port, _ = _scheduler()
    _submit(scheduler, "a")
    _submit(scheduler, "b")
    scheduler.on_status("id-a", "busy")
    scheduler.on_upstream_died(-9)
    statuses = {msg_id: content["status"] for msg_id, content in port.replies}
    assert statuses == {"id-a": "error", "id-b": "aborted"}
    assert "SIGKILL" in next(c for i, c in port.replies if i == "id-a")["evalue"]
    assert not scheduler.inflight
