"""The lifecycle of every request in flight, driven without sockets: a recording port stands in
for the proxy around the scheduler, and the kernel's messages are fed in as it would send them
(or fail to)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from jumper_proxy import wire
from jumper_proxy.api import CellRun, KernelFacts, Magic, MagicContext, MagicTable, Services
from jumper_proxy.errors import MagicError, UpstreamDied
from jumper_proxy.monitor.store import PerfStore
from jumper_proxy.scheduler import Limits, Scheduler
from jumper_proxy.wire import Message

FAST = Limits(busy_grace=0.05, quiet_grace=0.05, idle_grace=0.1, interrupt_window=0.2)


def message(
    msg_type: str,
    content: dict[str, Any] | bytes,
    *,
    msg_id: str,
    parent: str | None = None,
    idents: list[bytes] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Message:
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    header = {"msg_id": msg_id, "msg_type": msg_type}
    meta = json.dumps(metadata or {}).encode()
    return Message(
        idents=[b"client"] if idents is None else idents,
        frames=[b"sig", json.dumps(header).encode(), b"{}", meta, raw],
        header=header,
        parent_header={"msg_id": parent} if parent else {},
    )


class RecordingPort:
    """The proxy around the scheduler: records what goes where."""

    def __init__(self, ipython: bool = True) -> None:
        self.to_kernel: list[tuple[str, str, str]] = []  # (channel, msg_type, msg_id)
        self.to_client: list[tuple[str, str, str | None, dict[str, Any]]] = []
        self.interrupts = 0
        self.facts = KernelFacts(language="python" if ipython else "bash", ipython=ipython)
        self._ids = 0

    def to_upstream(self, channel: str, msg: Message) -> None:
        self.to_kernel.append((channel, msg.msg_type, msg.msg_id))

    def upstream_request(self, channel: str, out: wire.Outgoing) -> str:
        self._ids += 1
        msg_id = f"proxy-{self._ids}"
        self.to_kernel.append((channel, out.msg_type, msg_id))
        return msg_id

    def to_frontend(self, channel: str, msg: Message) -> None:
        self.to_client.append((channel, msg.msg_type, msg.parent_msg_id, msg.content()))

    def reply(self, channel: str, request: Message, out: wire.Outgoing) -> None:
        self.to_client.append((channel, out.msg_type, request.msg_id, out.content))

    def publish(self, parent: dict[str, Any], out: wire.Outgoing) -> None:
        self.to_client.append(("iopub", out.msg_type, parent.get("msg_id"), out.content))

    async def interrupt_upstream(self) -> None:
        self.interrupts += 1

    def kernel(self) -> KernelFacts:
        return self.facts

    # ---- what the tests read -----------------------------------------------------------

    def cells_sent(self) -> list[str]:
        return [
            msg_id
            for channel, kind, msg_id in self.to_kernel
            if kind == "execute_request" and channel == "shell"
        ]

    def probes(self, channel: str = "shell") -> list[str]:
        return [
            i for c, kind, i in self.to_kernel if kind == "kernel_info_request" and c == channel
        ]

    def replies(self, parent: str) -> list[dict[str, Any]]:
        return [c for ch, kind, p, c in self.to_client if p == parent and kind.endswith("_reply")]

    def iopub(self, parent: str) -> list[str]:
        out = []
        for channel, kind, p, content in self.to_client:
            if channel == "iopub" and p == parent:
                out.append(content["execution_state"] if kind == "status" else kind)
        return out


class Monitor:
    def __init__(self) -> None:
        self.store = PerfStore()
        self.extra_roots: set[int] = set()
        self.live = False
        self.events: list[str] = []

    async def drain(self) -> None:
        pass

    def export(self) -> list[dict[str, Any]]:
        return []

    def cell_started(self, run: CellRun) -> None:
        self.events.append(f"start {run.cell.code}")

    def cell_finished(self, run: CellRun) -> None:
        self.events.append(f"end {run.cell.code}:{run.reply_status}")


class Kernel:
    """Feeds the scheduler what a kernel would send."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self._ids = 0

    def _id(self) -> str:
        self._ids += 1
        return f"k-{self._ids}"

    def status(self, parent: str, state: str) -> None:
        msg = message("status", {"execution_state": state}, msg_id=self._id(), parent=parent)
        self.scheduler.from_iopub(msg)

    def output(self, parent: str, text: str) -> None:
        content = {"name": "stdout", "text": text}
        self.scheduler.from_iopub(message("stream", content, msg_id=self._id(), parent=parent))

    def reply(self, parent: str, content: dict[str, Any] | bytes, channel: str = "shell") -> None:
        msg = message("execute_reply", content, msg_id=self._id(), parent=parent)
        {"shell": self.scheduler.from_shell, "hidden": self.scheduler.from_hidden}[channel](msg)

    def answer_probe(self, probe: str, channel: str = "shell") -> None:
        msg = message("kernel_info_reply", {"status": "ok"}, msg_id=self._id(), parent=probe)
        {"shell": self.scheduler.from_shell, "hidden": self.scheduler.from_hidden}[channel](msg)

    def run(self, parent: str, status: str = "ok", **content: Any) -> None:
        """The whole of a cell: busy, reply, idle."""
        self.status(parent, "busy")
        self.reply(parent, {"status": status, "execution_count": 3, **content})
        self.status(parent, "idle")


def synchronously(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def settle(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


def setup(ipython: bool = True) -> tuple[Scheduler, RecordingPort, Kernel, list[str]]:
    port = RecordingPort(ipython)
    ran: list[str] = []
    table = MagicTable()

    async def note(ctx: MagicContext, args: str, body: str) -> None:
        ran.append(args)
        if args == "cell":
            ran.append(str(ctx.cell_id))
        ctx.out.stream(f"note {args}\n")
        if args == "fail":
            raise MagicError("asked to fail")
        if args == "hidden":
            ran.append(str(await ctx.run_hidden("x = 1", {"x": "x"})))

    table.add(Magic("note", note, "records that it ran"))
    monitor = Monitor()
    scheduler = Scheduler(port, table, Services(monitor, port.kernel), FAST)
    scheduler.observers.append(monitor)
    scheduler.upstream_ready()
    return scheduler, port, Kernel(scheduler), ran


def submit(scheduler: Scheduler, code: str, msg_id: str | None = None, **content: Any) -> str:
    msg_id = msg_id or code
    scheduler.submit(message("execute_request", {"code": code, **content}, msg_id=msg_id))
    return msg_id


def answer_counts(port: RecordingPort, kernel: Kernel) -> None:
    """Answer the hidden execution-count requests of magic cells."""
    for channel, kind, msg_id in port.to_kernel:
        if channel == "hidden" and kind == "execute_request" and msg_id in kernel.scheduler.hidden:
            kernel.reply(
                msg_id,
                {
                    "status": "ok",
                    "user_expressions": {
                        name: {"status": "ok", "data": {"text/plain": "8"}} for name in ("n", "x")
                    },
                },
                channel="hidden",
            )


# ---- ordering ------------------------------------------------------------------------------


@synchronously
async def test_cells_go_to_the_kernel_one_at_a_time() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "a")
    submit(scheduler, "b")
    assert port.cells_sent() == ["a"]
    kernel.status("a", "busy")
    kernel.reply("a", {"status": "ok"})
    assert port.cells_sent() == ["a"]  # the reply alone is not the end: the idle is
    kernel.status("a", "idle")
    assert port.cells_sent() == ["a", "b"]


@synchronously
async def test_a_magic_waits_for_the_cells_before_it_and_holds_the_ones_after() -> None:
    scheduler, port, kernel, ran = setup()
    submit(scheduler, "a")
    submit(scheduler, "%%note m", msg_id="m")
    submit(scheduler, "c")
    await settle()
    assert port.cells_sent() == ["a"] and ran == []
    kernel.run("a")
    await settle()
    answer_counts(port, kernel)
    await settle()
    assert ran == ["m"]
    assert port.cells_sent() == ["a", "c"]
    assert port.iopub("m") == ["busy", "execute_input", "stream", "idle"]
    assert port.replies("m") == [
        {"status": "ok", "execution_count": 7, "user_expressions": {}, "payload": []}
    ]


@synchronously
async def test_a_magic_knows_the_notebook_cell_it_came_from() -> None:
    scheduler, port, kernel, ran = setup()
    content = {"code": "%%note cell"}
    scheduler.submit(message("execute_request", content, msg_id="m", metadata={"cellId": "c-7"}))
    await settle()
    answer_counts(port, kernel)
    await settle()
    assert ran == ["cell", "c-7"]


@synchronously
async def test_an_error_aborts_the_cells_queued_behind_it() -> None:
    scheduler, port, kernel, ran = setup()
    submit(scheduler, "a")
    submit(scheduler, "%%note m", msg_id="m")
    submit(scheduler, "c")
    kernel.run("a", status="error", ename="ValueError")
    await settle()
    assert ran == [] and port.cells_sent() == ["a"]
    assert port.replies("m") == [{"status": "aborted"}]
    assert port.replies("c") == [{"status": "aborted"}]


@synchronously
async def test_no_abort_without_stop_on_error() -> None:
    scheduler, port, kernel, ran = setup()
    submit(scheduler, "a", stop_on_error=False)
    submit(scheduler, "%%note m", msg_id="m")
    kernel.run("a", status="error")
    await settle()
    answer_counts(port, kernel)
    await settle()
    assert ran == ["m"]


@synchronously
async def test_a_failing_magic_gives_an_error_and_aborts_what_follows() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "%%note fail", msg_id="m")
    submit(scheduler, "after")
    await settle()
    answer_counts(port, kernel)
    await settle()
    errors = [c for ch, kind, p, c in port.to_client if kind == "error" and p == "m"]
    assert errors[0]["ename"] == "MagicError" and errors[0]["evalue"] == "asked to fail"
    assert port.replies("m")[0]["status"] == "error"
    assert port.replies("after") == [{"status": "aborted"}]
    assert port.cells_sent() == []


@synchronously
async def test_observers_see_cells_from_busy_to_idle_with_their_status() -> None:
    scheduler, port, kernel, _ = setup()
    monitor = scheduler.observers[0]
    assert isinstance(monitor, Monitor)
    submit(scheduler, "a")
    kernel.run("a")
    submit(scheduler, "b")
    kernel.run("b", status="error", ename="KeyboardInterrupt")
    assert monitor.events == ["start a", "end a:ok", "start b", "end b:interrupted"]


@synchronously
async def test_a_barrier_runs_between_the_cells() -> None:
    scheduler, port, kernel, _ = setup()
    order: list[str] = []

    async def work() -> None:
        order.append("barrier")

    submit(scheduler, "a")
    scheduler.add_barrier(work)
    submit(scheduler, "b")
    await settle()
    assert order == [] and port.cells_sent() == ["a"]
    kernel.run("a")
    await settle()
    assert order == ["barrier"]
    assert port.cells_sent() == ["a", "b"]


@synchronously
async def test_nothing_goes_to_a_kernel_that_does_not_answer_yet() -> None:
    scheduler, port, kernel, _ = setup()
    scheduler.upstream_died(-9)
    submit(scheduler, "a")
    scheduler.forward("shell", message("complete_request", {}, msg_id="c"))
    assert port.to_kernel == []
    scheduler.upstream_ready()
    assert [m for _, _, m in port.to_kernel] == ["c", "a"]


# ---- requests the kernel does not answer -------------------------------------------------


@synchronously
async def test_a_cell_the_kernel_drops_is_answered_and_the_next_goes() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "dropped", stop_on_error=False)
    submit(scheduler, "next")
    await settle(FAST.busy_grace * 2)
    assert port.cells_sent() == ["dropped"]
    [probe] = port.probes()
    kernel.answer_probe(probe)
    [reply] = port.replies("dropped")
    assert reply["status"] == "error" and reply["ename"] == "KernelRefused"
    assert port.iopub("dropped") == ["busy", "error", "idle"]
    assert port.cells_sent() == ["dropped", "next"]


@synchronously
async def test_a_slow_cell_is_not_taken_for_a_dropped_one() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "slow")
    await settle(FAST.busy_grace * 2)
    [probe] = port.probes()
    kernel.status("slow", "busy")  # it started after all; the kernel answers in order:
    kernel.reply("slow", {"status": "ok"})
    kernel.answer_probe(probe)
    kernel.status("slow", "idle")
    assert port.replies("slow") == [{"status": "ok"}]
    assert port.iopub("slow") == ["busy", "idle"]


@synchronously
async def test_an_idle_without_reply_is_held_then_the_cell_is_answered() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "sleep")
    kernel.status("sleep", "busy")
    await scheduler.interrupt()
    kernel.status("sleep", "idle")  # the interrupt landed in the kernel's own code: no reply
    assert port.iopub("sleep") == ["busy"]  # the idle waits for the reply
    submit(scheduler, "next")
    await settle(FAST.quiet_grace * 2)
    [probe] = port.probes()
    kernel.answer_probe(probe)
    [reply] = port.replies("sleep")
    assert reply["ename"] == "KeyboardInterrupt"
    assert port.iopub("sleep") == ["busy", "error", "idle"]
    assert port.cells_sent() == ["sleep"]  # stop_on_error: the interrupted cell aborts the rest
    assert port.replies("next") == [{"status": "aborted"}]


@synchronously
async def test_a_reply_after_its_idle_goes_out_first() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "a")
    kernel.status("a", "busy")
    kernel.status("a", "idle")
    kernel.reply("a", {"status": "ok"})
    kinds = [(ch, kind) for ch, kind, p, _ in port.to_client if p == "a"]
    assert kinds == [("iopub", "status"), ("shell", "execute_reply"), ("iopub", "status")]
    assert port.probes() == []


@synchronously
async def test_a_reply_whose_json_has_a_lone_surrogate_finishes_the_cell() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "raise", stop_on_error=False)
    submit(scheduler, "next")
    kernel.status("raise", "busy")
    # jupyter_client encodes a lone surrogate with surrogateescape: not UTF-8
    raw = json.dumps({"status": "error", "evalue": "bad \udcff"}, ensure_ascii=False)
    kernel.reply("raise", raw.encode("utf-8", "surrogateescape"))
    kernel.status("raise", "idle")
    assert port.cells_sent() == ["raise", "next"]


@synchronously
async def test_hidden_work_the_kernel_drops_fails_instead_of_waiting() -> None:
    scheduler, port, kernel, _ = setup()
    task = asyncio.ensure_future(scheduler.run_hidden("x = 1"))
    await settle(FAST.busy_grace * 2)
    [probe] = port.probes("hidden")
    kernel.answer_probe(probe, channel="hidden")
    with pytest.raises(Exception, match="did not answer"):
        await task
    assert not scheduler.hidden


# ---- interrupts --------------------------------------------------------------------------


@synchronously
async def test_an_interrupt_storm_reaches_the_kernel_once() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "sleep")
    kernel.status("sleep", "busy")
    for _ in range(10):
        await scheduler.interrupt()
    assert port.interrupts == 1
    await settle(FAST.interrupt_window * 1.5)
    await scheduler.interrupt()  # the cell ignored it: a later one goes through
    assert port.interrupts == 2


@synchronously
async def test_an_interrupt_storm_does_not_spill_into_the_next_cell() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "sleep")
    kernel.status("sleep", "busy")
    await scheduler.interrupt()
    kernel.run("sleep", status="error", ename="KeyboardInterrupt")
    submit(scheduler, "next")  # the storm's stragglers arrive after the next cell started:
    kernel.status("next", "busy")
    await scheduler.interrupt()
    assert port.interrupts == 1


@synchronously
async def test_an_idle_kernel_is_not_interrupted() -> None:
    scheduler, port, kernel, _ = setup()
    await scheduler.interrupt()
    assert port.interrupts == 0


# ---- the kernel's death ------------------------------------------------------------------


@synchronously
async def test_death_answers_every_request_in_flight() -> None:
    scheduler, port, kernel, _ = setup()
    submit(scheduler, "a")
    submit(scheduler, "b")
    scheduler.forward("shell", message("inspect_request", {}, msg_id="i"))
    hidden = asyncio.ensure_future(scheduler.run_hidden("x = 1"))
    await settle()
    kernel.status("a", "busy")
    scheduler.upstream_died(-9)
    assert port.replies("a")[0]["ename"] == "KernelDied"
    assert "SIGKILL" in port.replies("a")[0]["evalue"]
    assert port.replies("b") == [{"status": "aborted"}]
    assert port.replies("i")[0]["ename"] == "KernelDied"
    with pytest.raises(UpstreamDied):
        await hidden
    assert not scheduler.forwarded and not scheduler.hidden and scheduler.current is None


@synchronously
async def test_a_magic_whose_kernel_died_reaches_no_other_kernel() -> None:
    scheduler, port, kernel, ran = setup()
    submit(scheduler, "%%note hidden", msg_id="m")
    await settle()
    answer_counts(port, kernel)  # the execution count
    await settle()
    scheduler.upstream_died(-9)  # while the magic waits for its own hidden work
    scheduler.upstream_ready()  # a fresh kernel
    await settle()
    sent = [kind for channel, kind, _ in port.to_kernel if channel == "hidden"]
    assert sent == ["execute_request", "execute_request"]  # nothing went to the new one
    [reply] = port.replies("m")
    assert reply["ename"] == "KernelDied"


# ---- forwarded requests ------------------------------------------------------------------


@synchronously
async def test_forwarded_requests_are_kept_within_bounds() -> None:
    port = RecordingPort()
    limits = Limits(forwarded_max=3, forwarded_max_bytes=10_000)
    scheduler = Scheduler(port, MagicTable(), Services(Monitor(), port.kernel), limits)
    scheduler.upstream_ready()
    for n in range(10):
        scheduler.forward("shell", message("nonstandard_request", b"x" * 1_000_000, msg_id=f"r{n}"))
    assert list(scheduler.forwarded) == ["r7", "r8", "r9"]
    assert all(not hasattr(e, "frames") for e in scheduler.forwarded.values())
    scheduler.forward("shell", message("small", {}, msg_id="s"))
    assert list(scheduler.forwarded) == ["r8", "r9", "s"]
    scheduler.forward("shell", message("big", {}, msg_id="h" * 20_000))
    assert list(scheduler.forwarded) == []  # over the bytes bound: the oldest go first
    assert port.to_kernel[-1][2] == "h" * 20_000  # it went to the kernel all the same


@synchronously
async def test_a_reply_is_amended_once_and_a_forgotten_one_passes_unchanged() -> None:
    scheduler, port, kernel, _ = setup()
    seen: list[str] = []
    scheduler.forward("shell", message("kernel_info_request", {}, msg_id="k"), seen.append)  # type: ignore[arg-type]
    reply = message("kernel_info_reply", {"status": "ok"}, msg_id="r", parent="k")
    scheduler.from_shell(reply)
    scheduler.from_shell(reply)
    assert len(seen) == 1
    assert [kind for _, kind, p, _ in port.to_client if p == "k"] == ["kernel_info_reply"] * 2


# ---- in front of a kernel that is not IPython ---------------------------------------------


@synchronously
async def test_a_python_magic_in_front_of_another_kernel_says_so() -> None:
    scheduler, port, kernel, ran = setup(ipython=False)
    scheduler.magics.add(Magic("py", lambda ctx, a, b: asyncio.sleep(0), "", needs_python=True))
    submit(scheduler, "%%py", msg_id="py", stop_on_error=False)
    submit(scheduler, "%%note m", msg_id="m", stop_on_error=False)
    await settle()
    [reply] = port.replies("py")
    assert reply["ename"] == "MagicError" and "bash, not IPython" in reply["evalue"]
    assert ran == ["m"]
    assert [c for c, kind, _ in port.to_kernel if c == "hidden"] == []  # no Python ran there
