"""The running proxy: the composition root that wires the frontend sockets, the upstream kernel,
the scheduler, the magics and the monitor together, and the one table that says what happens
to each frontend request.

Frames move from socket to socket in one asyncio loop. Frontend requests the proxy acts on are
verified first (signature, replay, shape); everything else goes to the kernel as it came, and
comes back the same way. Which request a kernel message answers, and what becomes of requests
the kernel does not answer, is the scheduler's business (:mod:`jumper_proxy.scheduler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import zmq

from jumper_proxy import __version__, kernelside, wire
from jumper_proxy.api import KernelFacts, Services
from jumper_proxy.child.session import remove_stale_segments
from jumper_proxy.config import ProxyConfig
from jumper_proxy.errors import JumperError, UpstreamDied, UpstreamError, WireError
from jumper_proxy.frontend import Frontend, read_connection_file, session_for
from jumper_proxy.launch import Launched
from jumper_proxy.magics.registry import build_table, complete_magic, inspect_magic
from jumper_proxy.monitor.gpu import open_gpu_probe
from jumper_proxy.monitor.service import (
    FREQUENCY_VAR,
    REPORTS_MIN_VAR,
    Monitor,
    settings_from_env,
)
from jumper_proxy.pump import Handler, Pump
from jumper_proxy.scheduler import Scheduler
from jumper_proxy.upstream import SHUTDOWN_GRACE, Upstream, remove_stale_runtime_dirs
from jumper_proxy.wire import Message

log = logging.getLogger(__name__)

#: How long the upstream may take to answer its first kernel_info_request.
STARTUP_TIMEOUT = 60.0
#: How often the proxy checks that the process named by ``JPY_PARENT_PID`` still runs, where
#: it cannot be watched through a pidfd.
PARENT_POLL_S = 1.0

Request = Callable[[str, Message], None]


class Proxy:
    """Frontend sockets, the upstream kernel and the scheduler, wired together."""

    def __init__(
        self, config: ProxyConfig, runtime_dir: Path, first: Launched | None = None
    ) -> None:
        self.config = config
        self.context: zmq.Context[Any] = zmq.Context()
        self.pump = Pump(asyncio.get_running_loop())
        info = read_connection_file(config.connection_file)
        self.session = session_for(info)
        self.verifier = wire.Verifier(self.session)
        self.frontend = Frontend(info, self.context, self.pump, self.session)
        self.magics = build_table()
        self.monitor = Monitor(
            lambda: self.upstream.pid,
            lambda kind, content, parent: self.publish(parent, wire.Outgoing(kind, content)),
            open_gpu_probe(),
        )
        self.kernel_facts = KernelFacts()
        self.services = Services(self.monitor, self.kernel)
        self.scheduler = Scheduler(self, self.magics, self.services)
        self.scheduler.observers.append(self.monitor)
        self.monitor.on_settings_touched = self._settings_touched
        self.upstream = Upstream(
            config.upstream,
            self.context,
            self.pump,
            self.session,
            {
                "shell": self.scheduler.from_shell,
                "control": self.scheduler.from_control,
                "stdin": lambda msg: self.to_frontend("stdin", msg),
                "iopub": self._from_upstream_iopub,
                "hidden": self.scheduler.from_hidden,
            },
            runtime_dir=runtime_dir,
            transport=config.upstream_transport,
            on_death=self._on_upstream_death,
            first=first,
        )
        #: what the proxy does with each frontend request; anything else is forwarded
        self.requests: dict[tuple[str, str], Request] = {
            ("shell", "execute_request"): self._execute,
            ("shell", "complete_request"): self._complete,
            ("shell", "inspect_request"): self._inspect,
            ("shell", "kernel_info_request"): self._kernel_info,
            ("control", "kernel_info_request"): self._kernel_info,
            ("shell", "shutdown_request"): self._shutdown,
            ("control", "shutdown_request"): self._shutdown,
            ("control", "interrupt_request"): self._interrupt,
            ("shell", "jumper_perfdata_request"): self._perfdata,
        }
        self._iopub_seen = asyncio.Event()
        self._exit = asyncio.Event()
        self._exit_code = 0
        self._shutting_down = False
        #: the kernel is being (re)started: a death now fails the start instead of restarting
        self._starting = True
        self._background: set[asyncio.Task[Any]] = set()

    # ---- running -------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: self._spawn(self.scheduler.interrupt()))
        loop.add_signal_handler(signal.SIGTERM, self._exit.set)
        self.frontend.heartbeat.start()
        self.frontend.watch({name: self._reader(name) for name in ("shell", "control", "stdin")})
        self._watch_parent()
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

    def _stop(self, code: int) -> None:
        self._exit_code = code
        self._exit.set()

    async def _boot(self) -> None:
        await self._start_upstream(restart=False)
        remove_stale_runtime_dirs()
        removed = remove_stale_segments()
        if removed:
            log.info("Removed %d shared-memory segments of proxies that died", len(removed))

    async def _start_upstream(self, *, restart: bool) -> None:
        """Start the kernel (a fresh one after a death) and wait until it answers on shell and
        IOPub; then the requests that waited go out. A failure ends the proxy."""
        self._starting = True
        try:
            if restart:
                await self.upstream.restart()
            else:
                self.upstream.start()
            reply = await self._wait_answering()
        except JumperError as exc:
            log.error(
                "Could not %s the upstream kernel: %s", "restart" if restart else "start", exc
            )
            self._stop(1)
            return
        finally:
            self._starting = False
        content = reply.content()
        language = content.get("language_info", {}).get("name", "")
        self.kernel_facts = KernelFacts(
            language=str(language or "unknown"),
            ipython=content.get("implementation") == "ipython",
        )
        log.info(
            "Upstream kernel ready (pid %s, %s)", self.upstream.pid, self.config.upstream.describe()
        )
        self.scheduler.upstream_ready()

    async def _wait_answering(self) -> Message:
        """kernel_info on the hidden connection until both its reply and an IOPub message have
        arrived: the IOPub message proves the subscription is live, so no output of the first
        cell is lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        self._iopub_seen.clear()
        what = self.config.upstream.describe()
        if self.config.upstream.python is not None:
            python = self.config.upstream.python
            what += f" (can it import ipykernel? {python} -m pip install ipykernel)"
        wait = 0.05  # the kernel answers as soon as it is up: ask often at first
        while True:
            attempt = min(wait, max(0.01, deadline - loop.time()))
            wait = min(2 * wait, 1.0)
            try:
                reply = await self.scheduler.ask(wire.Outgoing("kernel_info_request", {}), attempt)
                await asyncio.wait_for(self._iopub_seen.wait(), attempt)
                return reply
            except asyncio.TimeoutError:
                pass
            except UpstreamDied as exc:
                raise UpstreamError(f"{what} exited during start-up ({exc})") from None
            if not self.upstream.is_alive():
                code = self.upstream.exit_code()
                raise UpstreamError(f"{what} exited during start-up (exit code {code})")
            if loop.time() >= deadline:
                raise UpstreamError(f"{what} did not answer within {STARTUP_TIMEOUT:.0f} s")

    def _watch_parent(self) -> None:
        """End with the process named by ``JPY_PARENT_PID`` (the Jupyter server), as ipykernel
        does: a killed server, or JupyterHub's "Stop My Server", must not leave us running."""
        try:
            parent = int(os.environ.get("JPY_PARENT_PID", ""))
        except ValueError:
            return
        if parent <= 1:
            return
        loop = asyncio.get_running_loop()

        def gone() -> None:
            log.warning("The parent process %d ended; shutting down", parent)
            self._stop(0)

        try:
            fd = os.pidfd_open(parent)
        except ProcessLookupError:
            gone()
            return
        except (AttributeError, OSError):  # pragma: no cover - without pidfd: poll
            self._spawn(self._poll_parent(parent, gone))
            return

        def ended() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            gone()

        loop.add_reader(fd, ended)

    async def _poll_parent(self, parent: int, gone: Callable[[], None]) -> None:  # pragma: no cover
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                gone()
                return
            except PermissionError:
                pass
            await asyncio.sleep(PARENT_POLL_S)

    def kernel(self) -> KernelFacts:
        facts = self.kernel_facts
        return KernelFacts(facts.language, facts.ipython, self.upstream.pid)

    # ---- frontend requests --------------------------------------------------------------

    def _reader(self, channel: str) -> Handler:
        requests = self.requests

        def read(frames: list[Any]) -> None:
            try:
                msg = wire.split(frames)
            except WireError as exc:
                log.warning("Dropped frames on %s: %s", channel, exc)
                return
            log.debug("<- %s %s", channel, msg.msg_type)
            if channel == "stdin":
                self.upstream.send("stdin", msg.to_wire())
                return
            handle = requests.get((channel, msg.msg_type))
            if handle is None:
                self.scheduler.forward(channel, msg)
            else:
                handle(channel, msg)

        return read

    def _verified(self, msg: Message) -> bool:
        """Whether the proxy may act on ``msg``; a bad one is dropped with a log line."""
        try:
            self.verifier.check(msg)
        except WireError as exc:
            log.warning("Dropped a %s: %s", msg.msg_type or "message", exc)
            return False
        return True

    def _execute(self, channel: str, msg: Message) -> None:
        if self._verified(msg):
            self.scheduler.submit(msg)

    def _complete(self, channel: str, msg: Message) -> None:
        """Completion by the kernel, with the proxy's magics added where they fit."""
        try:
            content = msg.content()
            ours = complete_magic(
                self.magics, str(content.get("code", "")), int(content.get("cursor_pos", 0))
            )
        except (WireError, TypeError, ValueError):
            ours = None
        if ours is None:
            self.scheduler.forward(channel, msg)
            return
        matches, start = ours
        cursor = int(content.get("cursor_pos", 0))

        def add_ours(reply: Message) -> None:
            answer = dict(reply.content())
            if answer.get("status") == "ok" and answer.get("cursor_start") == start:
                matches.extend(m for m in answer.get("matches", []) if m not in matches)
            answer.update(matches=matches, cursor_start=start, status="ok")
            answer.setdefault("cursor_end", cursor)
            answer.setdefault("metadata", {})
            reply.set_content(answer, self.session)

        self.scheduler.forward(channel, msg, amend=add_ours)

    def _inspect(self, channel: str, msg: Message) -> None:
        """Answer an inspection of one of the proxy's magics; forward any other."""
        try:
            content = msg.content()
            text = inspect_magic(
                self.magics, str(content.get("code", "")), int(content.get("cursor_pos", 0))
            )
        except (WireError, TypeError, ValueError):
            text = None
        if text is None:
            self.scheduler.forward(channel, msg)
            return
        if not self._verified(msg):
            return
        answer = {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}
        self._answer(channel, msg, wire.reply(msg.msg_type, answer))

    def _answer(self, channel: str, msg: Message, out: wire.Outgoing) -> None:
        """A request the proxy answers itself: busy, the reply, idle."""
        parent = msg.as_parent()
        self.publish(parent, wire.status("busy"))
        self.reply(channel, msg, out)
        self.publish(parent, wire.status("idle"))

    def _kernel_info(self, channel: str, msg: Message) -> None:
        self.scheduler.forward(channel, msg, amend=self._rewrite_kernel_info)

    def _rewrite_kernel_info(self, msg: Message) -> None:
        content = dict(msg.content())
        upstream_impl = content.get("implementation", "")
        content["implementation"] = "jumper-proxy"
        content["implementation_version"] = __version__
        banner = content.get("banner", "")
        content["banner"] = f"jumper-proxy {__version__} in front of {upstream_impl}\n{banner}"
        msg.set_content(content, self.session)

    def _perfdata(self, channel: str, msg: Message) -> None:
        """The proxy's own request: every monitored cell's record (``jumper-proxy run``)."""
        if not self._verified(msg):
            return

        async def answer() -> None:
            await self.monitor.drain()
            content = {"status": "ok", "records": self.monitor.export()}
            self.reply(channel, msg, wire.reply(msg.msg_type, content))

        self._spawn(answer())

    def _interrupt(self, channel: str, msg: Message) -> None:
        if not self._verified(msg):
            return

        async def interrupt() -> None:
            await self.scheduler.interrupt()
            self._answer(channel, msg, wire.reply(msg.msg_type, {"status": "ok"}))

        self._spawn(interrupt())

    def _shutdown(self, channel: str, msg: Message) -> None:
        if self._verified(msg) and not self._shutting_down:
            self._shutting_down = True
            self._spawn(self._shut_down(channel, msg))

    async def _shut_down(self, channel: str, msg: Message) -> None:
        """Shut the upstream down (its own way first), answer, and end the proxy."""
        restart = bool(msg.content().get("restart", False))
        reply: Message | None = None
        if self.scheduler.answering:
            self.upstream.expect_exit()
            reply = await self.scheduler.forward_and_wait("control", msg, SHUTDOWN_GRACE)
        if reply is not None:
            self.frontend.send(channel, reply.to_wire(msg.idents))
        else:
            self.reply(channel, msg, wire.reply(msg.msg_type, {"status": "ok", "restart": restart}))
        await self.upstream.wait_exit(SHUTDOWN_GRACE)
        self._stop(0)

    # ---- the kernel's side --------------------------------------------------------------

    def _from_upstream_iopub(self, msg: Message) -> None:
        self._iopub_seen.set()
        self.scheduler.from_iopub(msg)

    def _settings_touched(self) -> None:
        if self.kernel_facts.ipython:
            self.scheduler.add_barrier(self._read_settings)

    async def _read_settings(self) -> None:
        """Re-read the monitor's settings from the kernel after a cell that may set them."""
        values = await self.scheduler.run_hidden(
            *kernelside.environment((FREQUENCY_VAR, REPORTS_MIN_VAR))
        )
        self.monitor.settings = settings_from_env(values, self.monitor.settings)

    def _on_upstream_death(self, exit_code: int | None) -> None:
        self.scheduler.upstream_died(exit_code)
        if not self._shutting_down and not self._starting:
            log.warning("%s Restarting it.", UpstreamDied(exit_code))
            self._spawn(self._start_upstream(restart=True))

    # ---- the scheduler's port -------------------------------------------------------------

    def to_upstream(self, channel: str, msg: Message) -> None:
        self.upstream.send(channel, msg.to_wire())

    def upstream_request(self, channel: str, out: wire.Outgoing) -> str:
        return self.upstream.send_new(channel, out)

    def to_frontend(self, channel: str, msg: Message) -> None:
        log.debug("-> %s %s", channel, msg.msg_type)
        self.frontend.send(channel, msg.to_wire())

    def reply(self, channel: str, request: Message, out: wire.Outgoing) -> None:
        self.frontend.send_new(channel, out, request.header, request.idents)

    def publish(self, parent: dict[str, Any], out: wire.Outgoing) -> None:
        self.frontend.send_new("iopub", out, parent)

    async def interrupt_upstream(self) -> None:
        """Interrupt the kernel in its own interrupt mode."""
        if self.upstream.interrupt_mode == "message":
            self.scheduler.own_request("control", wire.Outgoing("interrupt_request", {}))
        else:
            self.upstream.signal_interrupt()


def run_kernel(config: ProxyConfig, runtime_dir: Path, first: Launched | None = None) -> int:
    """Run the proxy until it is shut down; the process exit code. ``first`` is its kernel,
    when it was started before the proxy was imported."""

    async def main() -> int:
        try:
            proxy = Proxy(config, runtime_dir, first)
        except JumperError as exc:
            log.error("%s", exc)
            if first is not None:
                first.process.kill()
            return 1
        return await proxy.serve()

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 1


def serve_and_exit(config: ProxyConfig, runtime_dir: Path, first: Launched | None) -> NoReturn:
    """Run the proxy, then end the process with its exit code at once: everything of the
    proxy's is closed and removed by then, and tearing a Python interpreter with everything
    imported down takes a third of a second that a restarting frontend would wait for."""
    code = run_kernel(config, runtime_dir, first)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
