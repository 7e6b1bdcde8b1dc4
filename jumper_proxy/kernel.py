"""The running proxy: one asyncio loop that moves frames between the frontend and the upstream.

Each socket has one reader coroutine. Frontend requests are verified, then either forwarded
to the upstream (re-signed, identities kept) or taken by the scheduler (execute requests) or
answered here (interrupt, shutdown, the proxy's own requests). Upstream replies and IOPub
messages come back the same way, except the proxy's hidden work, which never reaches the user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import zmq

from jumper_proxy import __version__
from jumper_proxy.child.session import remove_stale_segments
from jumper_proxy.config import ProxyConfig
from jumper_proxy.errors import JumperError, UpstreamDied
from jumper_proxy.magics import build_table, complete_magic, inspect_magic
from jumper_proxy.monitor.gpu import open_gpu_probe
from jumper_proxy.monitor.service import (
    FREQUENCY_VAR,
    REPORTS_MIN_VAR,
    Monitor,
    settings_from_env,
)
from jumper_proxy.pump import Handler, Pump
from jumper_proxy.relay import Frontend, Message, parse_frames, read_connection_file
from jumper_proxy.scheduler import Scheduler
from jumper_proxy.upstream import SHUTDOWN_GRACE, Upstream

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A forwarded request still owed a reply (so a dying upstream cannot swallow it)."""

    msg: Message
    channel: str
    waiter: asyncio.Future[Message] | None = None
    #: changes the reply before it goes to the frontend
    amend: Callable[[Message], None] | None = None


class Proxy:
    """Frontend sockets, the upstream kernel and the scheduler, wired together."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.context: zmq.Context[Any] = zmq.Context()
        self.pump = Pump(asyncio.get_running_loop())
        self.frontend = Frontend(
            read_connection_file(config.connection_file), self.context, self.pump
        )
        self.session = self.frontend.session
        self.upstream = Upstream(
            config.upstream,
            self.context,
            self.pump,
            {
                "shell": self._on_upstream_shell,
                "control": self._on_upstream_control,
                "stdin": self._on_upstream_stdin,
                "iopub": self._on_upstream_iopub,
            },
            transport=config.upstream_transport,
            on_death=self._on_upstream_death,
            resign_for=self.session,
        )
        self.magics = build_table()
        self.monitor = Monitor(lambda: self.upstream.pid, self.publish, open_gpu_probe())
        self.services: dict[str, Any] = {"upstream": self.upstream, "monitor": self.monitor}
        self.scheduler = Scheduler(self, self.magics, self.upstream.run_hidden, self.services)
        self.scheduler.observers.append(self.monitor)
        self.monitor.on_settings_touched = lambda: self.scheduler.add_barrier(self._read_settings)
        self.pending: dict[str, Pending] = {}
        self.local_requests: dict[str, Callable[[Message], None]] = {
            "jumper_perfdata_request": self._perfdata_request,
        }
        self._backlog: list[tuple[str, Message]] = []
        self._exit = asyncio.Event()
        self._exit_code = 0
        self._shutting_down = False
        self._background: set[asyncio.Task[Any]] = set()

    # ---- running -------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: self._spawn(self._interrupt()))
        loop.add_signal_handler(signal.SIGTERM, self._exit.set)
        self.frontend.heartbeat.start()
        self.frontend.watch(
            {
                "shell": self._frontend_reader(self._on_shell_request),
                "control": self._frontend_reader(self._on_control_request),
                "stdin": self._frontend_reader(self._on_stdin_message),
            }
        )
        self._spawn(self._boot())
        await self._exit.wait()
        for task in list(self._background):
            task.cancel()
        await self.upstream.shutdown(now=True)
        self.monitor.close()
        self.frontend.close()
        self.context.destroy(linger=0)
        return self._exit_code

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _boot(self) -> None:
        removed = remove_stale_segments()
        if removed:
            log.info("Removed %d shared-memory segments of proxies that died", len(removed))
        try:
            await self.upstream.start()
        except JumperError as exc:
            log.error("%s", exc)
            self._exit_code = 1
            self._exit.set()
            return
        self._upstream_ready()

    def _upstream_ready(self) -> None:
        """Requests that arrived while the upstream was (re)starting go out now, in order."""
        backlog, self._backlog = self._backlog, []
        for channel, msg in backlog:
            self._route(channel, msg)
        self.scheduler.pump()

    # ---- frontend → upstream -------------------------------------------------------------

    def _frontend_reader(self, handle: Callable[[Message], None]) -> Handler:
        def read(frames: list[Any]) -> None:
            msg = parse_frames(frames, self.session, self.upstream.session)
            if msg is not None:
                log.debug("<- %s", msg.msg_type)
                handle(msg)

        return read

    def _on_shell_request(self, msg: Message) -> None:
        if msg.msg_type == "shutdown_request":
            self._spawn(self._shutdown(msg, "shell"))
        elif not self.upstream.ready.is_set():
            self._backlog.append(("shell", msg))  # kernel_info and all wait for the upstream
        else:
            self._route("shell", msg)

    def _on_control_request(self, msg: Message) -> None:
        if msg.msg_type == "interrupt_request":
            self._spawn(self._interrupt(msg))
        elif msg.msg_type == "shutdown_request":
            self._spawn(self._shutdown(msg, "control"))
        elif not self.upstream.ready.is_set():
            self._backlog.append(("control", msg))
        else:
            self._route("control", msg)

    def _on_stdin_message(self, msg: Message) -> None:
        if self.upstream.ready.is_set():
            self.upstream.send("stdin", msg)

    def _route(self, channel: str, msg: Message) -> None:
        kind = msg.msg_type
        if channel == "shell" and kind == "execute_request":
            self.scheduler.submit(msg)
        elif channel == "shell" and kind in self.local_requests:
            self.local_requests[kind](msg)
        elif kind == "complete_request":
            self._complete(msg)
        elif kind == "inspect_request" and self._inspect(msg):
            return
        elif kind == "kernel_info_request":
            self._forward_request(msg, channel, amend=self._rewrite_kernel_info)
        else:
            self._forward_request(msg, channel)

    def _complete(self, msg: Message) -> None:
        """Completion by the upstream, with the proxy's magics added where they fit."""
        content = msg.content()
        ours = complete_magic(
            self.magics, str(content.get("code", "")), int(content.get("cursor_pos", 0))
        )
        if ours is None:
            self._forward_request(msg, "shell")
            return
        matches, start = ours

        def add_ours(reply: Message) -> None:
            answer = dict(reply.content())
            if answer.get("status") == "ok" and answer.get("cursor_start") == start:
                matches.extend(m for m in answer.get("matches", []) if m not in matches)
            answer.update(matches=matches, cursor_start=start, status="ok")
            answer.setdefault("cursor_end", int(content.get("cursor_pos", 0)))
            answer.setdefault("metadata", {})
            reply.set_content(answer, self.session)

        self._forward_request(msg, "shell", amend=add_ours)

    def _inspect(self, msg: Message) -> bool:
        """Answer an inspection of one of the proxy's magics; False if it is not one."""
        content = msg.content()
        text = inspect_magic(
            self.magics, str(content.get("code", "")), int(content.get("cursor_pos", 0))
        )
        if text is None:
            return False
        parent = msg.as_parent()
        self.publish("status", {"execution_state": "busy"}, parent)
        answer = {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}
        self.reply(msg, "inspect_reply", answer)
        self.publish("status", {"execution_state": "idle"}, parent)
        return True

    def _forward_request(
        self,
        msg: Message,
        channel: str,
        waiter: asyncio.Future[Message] | None = None,
        amend: Callable[[Message], None] | None = None,
    ) -> None:
        self.pending[msg.msg_id] = Pending(msg, channel, waiter, amend)
        self.upstream.send(channel, msg)

    def forward_execute(self, msg: Message) -> None:
        self.upstream.send("shell", msg)

    # ---- upstream → frontend -------------------------------------------------------------

    def _on_upstream_shell(self, msg: Message) -> None:
        log.debug("-> %s", msg.msg_type)
        self._deliver_reply(msg, self.frontend.shell)
        if msg.msg_type == "execute_reply":
            self.scheduler.on_reply(msg)

    def _on_upstream_control(self, msg: Message) -> None:
        log.debug("-> %s", msg.msg_type)
        self._deliver_reply(msg, self.frontend.control)

    def _deliver_reply(self, msg: Message, sock: zmq.Socket[Any]) -> None:
        pending = self.pending.pop(msg.parent_msg_id or "", None)
        if pending is not None and pending.waiter is not None:
            if not pending.waiter.done():
                pending.waiter.set_result(msg)
            return
        if pending is not None and pending.amend is not None:
            pending.amend(msg)
        self.frontend.send(sock, msg)

    def _rewrite_kernel_info(self, msg: Message) -> None:
        content = dict(msg.content())
        upstream_impl = content.get("implementation", "")
        content["implementation"] = "jumper-proxy"
        content["implementation_version"] = __version__
        banner = content.get("banner", "")
        content["banner"] = f"jumper-proxy {__version__} in front of {upstream_impl}\n{banner}"
        msg.set_content(content, self.session)

    def _on_upstream_stdin(self, msg: Message) -> None:
        log.debug("-> %s", msg.msg_type)
        self.frontend.send(self.frontend.stdin, msg)

    def _on_upstream_iopub(self, msg: Message) -> None:
        kind = msg.msg_type
        if kind == "iopub_welcome":  # that welcome answered our own subscription
            return
        parent = msg.parent_msg_id
        state = msg.content().get("execution_state") if kind == "status" else None
        if parent in self.upstream.hidden_ids:
            if state == "idle":
                self.upstream.hidden_ids.discard(parent)
            return
        if state is not None:  # before the frontend sees it: a finishing cell's last outputs
            self.scheduler.on_status(parent, str(state))
        self.frontend.send(self.frontend.iopub, msg)
        if state == "idle":
            self.scheduler.pump()

    # ---- the proxy's own answers --------------------------------------------------------

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self.frontend.publish(msg_type, content, parent)

    def reply(
        self,
        msg: Message,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.frontend.send_new(
            self.frontend.shell, msg_type, content, msg.header, msg.idents, metadata
        )

    def _perfdata_request(self, msg: Message) -> None:
        """The proxy's own request: every monitored cell's record (``jumper-proxy run``)."""

        async def answer() -> None:
            await self.monitor.drain()
            content = {"status": "ok", "records": self.monitor.export()}
            self.reply(msg, "jumper_perfdata_reply", content)

        self._spawn(answer())

    async def _read_settings(self) -> None:
        """Re-read the monitor's settings from the kernel after a cell that may set them."""
        getenv = "__import__('os').environ.get({!r})"
        values = await self.upstream.run_hidden(
            "", {name: getenv.format(name) for name in (FREQUENCY_VAR, REPORTS_MIN_VAR)}
        )
        self.monitor.settings = settings_from_env(values, self.monitor.settings)

    def _control_reply(self, msg: Message, msg_type: str, content: dict[str, Any]) -> None:
        parent = msg.as_parent()
        self.publish("status", {"execution_state": "busy"}, parent)
        self.frontend.send_new(self.frontend.control, msg_type, content, msg.header, msg.idents)
        self.publish("status", {"execution_state": "idle"}, parent)

    async def _interrupt(self, msg: Message | None = None) -> None:
        """Interrupt whatever runs: a proxy magic (and its child) and/or the upstream cell."""
        self.scheduler.interrupt()
        if self.scheduler.busy_upstream or self.upstream.hidden_running:
            await self.upstream.interrupt()
        if msg is not None:
            self._control_reply(msg, "interrupt_reply", {"status": "ok"})

    async def _shutdown(self, msg: Message, channel: str) -> None:
        """Shut the upstream down (its own way first), answer, and end the proxy."""
        restart = bool(msg.content().get("restart", False))
        if self._shutting_down:
            return
        self._shutting_down = True
        reply: Message | None = None
        if self.upstream.ready.is_set():
            self.upstream.expect_exit()
            waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._forward_request(msg, "control", waiter)
            with contextlib.suppress(asyncio.TimeoutError, UpstreamDied):
                reply = await asyncio.wait_for(waiter, SHUTDOWN_GRACE)
        sock = self.frontend.control if channel == "control" else self.frontend.shell
        if reply is not None:
            self.frontend.send(sock, reply, msg.idents)
        else:
            content = {"status": "ok", "restart": restart}
            self.frontend.send_new(sock, "shutdown_reply", content, msg.header, msg.idents)
        await self.upstream.wait_exit(SHUTDOWN_GRACE)
        self._exit.set()

    # ---- upstream death ------------------------------------------------------------------

    def _on_upstream_death(self, exit_code: int | None) -> None:
        if self._shutting_down:
            return
        self._spawn(self._recover(exit_code))

    async def _recover(self, exit_code: int | None) -> None:
        died = UpstreamDied(exit_code)
        self.scheduler.on_upstream_died(exit_code)
        for pending in list(self.pending.values()):
            self.pending.pop(pending.msg.msg_id, None)
            if pending.waiter is not None:
                if not pending.waiter.done():
                    pending.waiter.set_exception(died)
                continue
            reply_type = pending.msg.msg_type.rsplit("_", 1)[0] + "_reply"
            content = {
                "status": "error",
                "ename": "KernelDied",
                "evalue": str(died),
                "traceback": [],
            }
            sock = self.frontend.shell if pending.channel == "shell" else self.frontend.control
            self.frontend.send_new(
                sock, reply_type, content, pending.msg.header, pending.msg.idents
            )
        log.warning("%s Restarting it.", died)
        try:
            await self.upstream.restart()
        except JumperError as exc:
            log.error("Could not restart the upstream kernel: %s", exc)
            self._exit_code = 1
            self._exit.set()
            return
        self._upstream_ready()


def run_kernel(config: ProxyConfig) -> int:
    """Run the proxy until it is shut down; the process exit code."""

    async def main() -> int:
        try:
            proxy = Proxy(config)
        except JumperError as exc:
            log.error("%s", exc)
            return 1
        return await proxy.serve()

    return asyncio.run(main())
