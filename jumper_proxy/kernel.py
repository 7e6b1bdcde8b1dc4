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
import zmq.asyncio

from jumper_proxy import __version__
from jumper_proxy.config import ProxyConfig
from jumper_proxy.errors import JumperError, UpstreamDied
from jumper_proxy.magics import build_table
from jumper_proxy.relay import Frontend, Message, forward, read_connection_file, recv_message, sync
from jumper_proxy.scheduler import Scheduler
from jumper_proxy.upstream import SHUTDOWN_GRACE, Upstream

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """A forwarded request still owed a reply (so a dying upstream cannot swallow it)."""

    msg: Message
    channel: str
    waiter: asyncio.Future[Message] | None = None


class Proxy:
    """Frontend sockets, the upstream kernel and the scheduler, wired together."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.context = zmq.asyncio.Context()
        self.frontend = Frontend(read_connection_file(config.connection_file), self.context)
        self.session = self.frontend.session
        self.upstream = Upstream(
            config.upstream,
            self.context,
            transport=config.upstream_transport,
            on_death=self._on_upstream_death,
        )
        self.magics = build_table()
        self.services: dict[str, Any] = {"upstream": self.upstream, "proxy": self}
        self.scheduler = Scheduler(self, self.magics, self.upstream.run_hidden, self.services)
        self.pending: dict[str, Pending] = {}
        self.local_requests: dict[str, Callable[[Message], None]] = {}
        self._control_queue: asyncio.Queue[Message] = asyncio.Queue()
        self._upstream_tasks: list[asyncio.Task[None]] = []
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
        readers = [
            loop.create_task(self._read_frontend_shell()),
            loop.create_task(self._read_frontend_control()),
            loop.create_task(self._run_control_queue()),
            loop.create_task(self._read_frontend_stdin()),
            loop.create_task(self._read_frontend_subscriptions()),
        ]
        self._spawn(self._boot())
        await self._exit.wait()
        for task in readers + self._upstream_tasks + list(self._background):
            task.cancel()
        await self.upstream.shutdown(now=True)
        self.frontend.close()
        self.context.destroy(linger=0)
        return self._exit_code

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _boot(self) -> None:
        try:
            await self.upstream.start()
        except JumperError as exc:
            log.error("%s", exc)
            self._exit_code = 1
            self._exit.set()
            return
        self._start_upstream_readers()

    def _start_upstream_readers(self) -> None:
        sockets = self.upstream.sockets
        assert sockets is not None
        self._up_shell = sync(sockets.shell)
        self._up_control = sync(sockets.control)
        self._up_stdin = sync(sockets.stdin)
        loop = asyncio.get_running_loop()
        self._upstream_tasks = [
            loop.create_task(self._read_upstream(sockets.shell, self._on_upstream_shell)),
            loop.create_task(self._read_upstream(sockets.control, self._on_upstream_control)),
            loop.create_task(self._read_upstream(sockets.stdin, self._on_upstream_stdin)),
            loop.create_task(self._read_upstream(sockets.iopub, self._on_upstream_iopub)),
            loop.create_task(self._read_upstream(sockets.hidden, self.upstream.deliver_hidden)),
        ]

    # ---- frontend → upstream -------------------------------------------------------------

    async def _read_frontend_shell(self) -> None:
        while True:
            msg = await recv_message(self.frontend.shell, self.session, self.upstream.session)
            if msg is None:
                continue
            log.debug("shell <- %s", msg.msg_type)
            await self.upstream.ready.wait()  # requests queue here while the upstream boots
            try:
                self._on_shell_request(msg)
            except Exception:  # one bad message must not stop the relay
                log.exception("Could not handle %s", msg.msg_type)

    def _on_shell_request(self, msg: Message) -> None:
        kind = msg.msg_type
        if kind == "execute_request":
            self.scheduler.submit(msg)
        elif kind == "shutdown_request":
            self._spawn(self._shutdown(msg, "shell"))
        elif kind in self.local_requests:
            self.local_requests[kind](msg)
        else:
            self._forward_request(msg, "shell")

    def _forward_request(self, msg: Message, channel: str, waiter: asyncio.Future[Message] | None = None) -> None:
        self.pending[msg.msg_id] = Pending(msg, channel, waiter)
        forward(msg, self._up_shell if channel == "shell" else self._up_control, self.upstream_session)

    @property
    def upstream_session(self) -> Any:
        return self.upstream.session

    def forward_execute(self, msg: Message) -> None:
        log.debug("shell -> upstream execute_request %s", msg.msg_id)
        forward(msg, self._up_shell, self.upstream_session)

    async def _read_frontend_control(self) -> None:
        while True:
            msg = await recv_message(self.frontend.control, self.session)
            if msg is None:
                continue
            log.debug("control <- %s", msg.msg_type)
            if msg.msg_type == "interrupt_request":
                self._spawn(self._interrupt(msg))
            elif msg.msg_type == "shutdown_request":
                self._spawn(self._shutdown(msg, "control"))
            else:
                self._control_queue.put_nowait(msg)

    async def _run_control_queue(self) -> None:
        while True:
            msg = await self._control_queue.get()
            await self.upstream.ready.wait()
            self._forward_request(msg, "control")

    async def _read_frontend_stdin(self) -> None:
        while True:
            msg = await recv_message(self.frontend.stdin, self.session, self.upstream.session)
            if msg is None or not self.upstream.ready.is_set():
                continue
            log.debug("stdin <- %s", msg.msg_type)
            forward(msg, self._up_stdin, self.upstream_session)

    async def _read_frontend_subscriptions(self) -> None:
        while True:
            frame = await self.frontend.iopub.recv()
            self.frontend.welcome(frame)

    # ---- upstream → frontend -------------------------------------------------------------

    async def _read_upstream(self, sock: zmq.asyncio.Socket, handle: Callable[[Message], None]) -> None:
        session = self.upstream.session
        while True:
            msg = await recv_message(sock, session, self.session)
            if msg is None:
                continue
            try:
                handle(msg)
            except Exception:
                log.exception("Could not relay %s", msg.msg_type)

    def _on_upstream_shell(self, msg: Message) -> None:
        log.debug("shell -> %s", msg.msg_type)
        self._deliver_reply(msg, self.frontend.sync_shell)
        if msg.msg_type == "execute_reply":
            self.scheduler.on_reply(msg)

    def _on_upstream_control(self, msg: Message) -> None:
        log.debug("control -> %s", msg.msg_type)
        self._deliver_reply(msg, self.frontend.sync_control)

    def _deliver_reply(self, msg: Message, sock: zmq.Socket[Any]) -> None:
        pending = self.pending.pop(msg.parent_msg_id or "", None)
        if pending is not None and pending.waiter is not None:
            if not pending.waiter.done():
                pending.waiter.set_result(msg)
            return
        if msg.msg_type == "kernel_info_reply":
            self._rewrite_kernel_info(msg)
        forward(msg, sock, self.session)

    def _rewrite_kernel_info(self, msg: Message) -> None:
        content = dict(msg.content())
        upstream_impl = content.get("implementation", "")
        content["implementation"] = "jumper-proxy"
        content["implementation_version"] = __version__
        banner = content.get("banner", "")
        content["banner"] = f"jumper-proxy {__version__} in front of {upstream_impl}\n{banner}"
        msg.set_content(content, self.session)

    def _on_upstream_stdin(self, msg: Message) -> None:
        log.debug("stdin -> %s", msg.msg_type)
        forward(msg, self.frontend.sync_stdin, self.session)

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
        forward(msg, self.frontend.sync_iopub, self.session)
        if state is not None:
            self.scheduler.on_status(parent, str(state))

    # ---- the proxy's own answers --------------------------------------------------------

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self.frontend.publish(msg_type, content, parent)

    def reply(
        self, msg: Message, msg_type: str, content: dict[str, Any], metadata: dict[str, Any] | None = None
    ) -> None:
        sock = self.frontend.sync_shell
        self.session.send(sock, msg_type, content, parent=msg.header, ident=msg.idents, metadata=metadata)

    def _control_reply(self, msg: Message, msg_type: str, content: dict[str, Any]) -> None:
        parent = msg.as_parent()
        self.publish("status", {"execution_state": "busy"}, parent)
        self.session.send(self.frontend.sync_control, msg_type, content, parent=msg.header, ident=msg.idents)
        self.publish("status", {"execution_state": "idle"}, parent)

    async def _interrupt(self, msg: Message | None = None) -> None:
        """Interrupt whatever runs: a proxy magic (and its child) and/or the upstream cell."""
        self.scheduler.interrupt()
        if self.scheduler.busy_upstream or self.upstream.hidden_ids or self.scheduler.running:
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
        sock = self.frontend.sync_control if channel == "control" else self.frontend.sync_shell
        if reply is not None:
            forward(reply, sock, self.session, idents=msg.idents)
        else:
            content = {"status": "ok", "restart": restart}
            self.session.send(sock, "shutdown_reply", content, parent=msg.header, ident=msg.idents)
        await self.upstream.wait_exit(SHUTDOWN_GRACE)
        self._exit.set()

    # ---- upstream death ------------------------------------------------------------------

    def _on_upstream_death(self, exit_code: int | None) -> None:
        if self._shutting_down:
            return
        self._spawn(self._recover(exit_code))

    async def _recover(self, exit_code: int | None) -> None:
        for task in self._upstream_tasks:
            task.cancel()
        self._upstream_tasks = []
        died = UpstreamDied(exit_code)
        self.scheduler.on_upstream_died(exit_code)
        for pending in list(self.pending.values()):
            self.pending.pop(pending.msg.msg_id, None)
            if pending.waiter is not None:
                if not pending.waiter.done():
                    pending.waiter.set_exception(died)
                continue
            reply_type = pending.msg.msg_type.rsplit("_", 1)[0] + "_reply"
            content = {"status": "error", "ename": "KernelDied", "evalue": str(died), "traceback": []}
            sock = self.frontend.sync_shell if pending.channel == "shell" else self.frontend.sync_control
            self.session.send(sock, reply_type, content, parent=pending.msg.header, ident=pending.msg.idents)
        log.warning("%s Restarting it.", died)
        try:
            await self.upstream.restart()
        except JumperError as exc:
            log.error("Could not restart the upstream kernel: %s", exc)
            self._exit_code = 1
            self._exit.set()
            return
        self._start_upstream_readers()
        self.scheduler.pump()


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
