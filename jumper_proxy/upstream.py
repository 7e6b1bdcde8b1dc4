"""Owning the upstream kernel: start, restart, interrupt, shutdown, death detection, and its
sockets.

The kernel's process is started by :mod:`jumper_proxy.launch` (the first one usually before
the proxy has imported anything heavy) on a private connection that carries the frontend
connection's own key and signature scheme, so frames pass through the proxy without being
signed again. Its exit is noticed at once through a pidfd in the event loop.

Only this module touches the upstream's sockets: the proxy's shell, control and stdin
connections, its IOPub subscription, and a second shell connection of the proxy's own
(``hidden``) for its silent work. What arrives on them goes to the handlers it is given; which
request a message answers is the scheduler's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.session import Session

from jumper_proxy import wire
from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import WireError
from jumper_proxy.launch import RUNTIME_PREFIX, KernelCommand, Launched, command_for, launch
from jumper_proxy.leftovers import owner_is_gone
from jumper_proxy.pump import Handler, Pump

log = logging.getLogger(__name__)

#: How long a kernel asked to stop may take before it is killed.
SHUTDOWN_GRACE = 5.0
#: How long a kernel sent SIGTERM (the proxy ending) may take before it is killed.
TERMINATE_GRACE = 1.0


def remove_stale_runtime_dirs() -> None:
    """Remove the private directories of proxies of this user that died without cleaning up.

    A directory is named after the proxy's pid; it is stale when that pid no longer runs
    (or is a zombie: dead, not yet reaped).
    """
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{RUNTIME_PREFIX}*-*"):
        if owner_is_gone(path, path.name[len(RUNTIME_PREFIX) :].split("-", 1)[0]):
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class UpstreamSockets:
    """The proxy's connections to one running upstream kernel.

    ``shell`` and ``stdin`` share one routing identity: ipykernel sends ``input_request`` on
    stdin to the identity it saw on shell, so that is how input requests find their way back.
    Frontend identities travel as extra routing frames in front of ours and come back in front
    of the replies. ``hidden`` is the proxy's own shell connection for silent work.
    """

    shell: zmq.Socket[Any]
    control: zmq.Socket[Any]
    stdin: zmq.Socket[Any]
    iopub: zmq.Socket[Any]
    hidden: zmq.Socket[Any]

    def all(self) -> tuple[zmq.Socket[Any], ...]:
        return (self.shell, self.control, self.stdin, self.iopub, self.hidden)


def _url(info: Mapping[str, Any], channel: str) -> str:
    port = info[f"{channel}_port"]
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


class Upstream:
    """One upstream kernel, restarted in place when it dies.

    ``routes`` maps ``shell``, ``control``, ``stdin``, ``iopub`` and ``hidden`` to the handlers
    of the messages arriving there. ``on_death`` is called (in the event loop) with the exit
    code when the process ends without the proxy asking it to. ``first`` is a kernel already
    started for this proxy (see :func:`jumper_proxy.launch.launch`).
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        context: zmq.Context[Any],
        pump: Pump,
        session: Session,
        routes: dict[str, Callable[[wire.Message], None]],
        *,
        runtime_dir: Path,
        transport: str = "ipc",
        on_death: Callable[[int | None], None] | None = None,
        first: Launched | None = None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.pump = pump
        self.session = session
        self.routes = routes
        self.transport = transport
        self.on_death = on_death
        self.runtime_dir = runtime_dir
        self.sockets: UpstreamSockets | None = None
        self.kernel: Launched | None = None
        self._first = first
        self._command: KernelCommand | None = first.command if first is not None else None
        self._pidfd: int | None = None
        self._stopping = False
        self._identity = f"jumper-proxy-{uuid.uuid4().hex[:8]}".encode()

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The upstream kernel's process id while it runs."""
        return self.kernel.process.pid if self.kernel is not None else None

    @property
    def interrupt_mode(self) -> str:
        return self._command.interrupt_mode if self._command is not None else "signal"

    def start(self) -> None:
        """Start the kernel (or adopt the one started for the proxy) and connect to it;
        whether it answers is for the caller to ask."""
        self._stopping = False
        first, self._first = self._first, None
        if first is not None:
            self.kernel = first
        else:
            if self._command is None:
                self._command = command_for(self.spec)
            key = self.session.key.decode()
            scheme = self.session.signature_scheme
            self.kernel = launch(self._command, self.runtime_dir, self.transport, key, scheme)
        self._connect(self.kernel.connection)
        self._watch_process()

    def _connect(self, info: Mapping[str, Any]) -> None:
        ctx = self.context

        def dealer(channel: str, identity: bytes) -> zmq.Socket[Any]:
            sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.sndhwm = 0  # never drop a request on its way to the kernel
            sock.setsockopt(zmq.IDENTITY, identity)
            sock.connect(_url(info, channel))
            return sock

        iopub = ctx.socket(zmq.SUB)
        iopub.linger = 0
        iopub.setsockopt(zmq.SUBSCRIBE, b"")
        iopub.connect(_url(info, "iopub"))
        self.sockets = UpstreamSockets(
            shell=dealer("shell", self._identity),
            control=dealer("control", self._identity),
            stdin=dealer("stdin", self._identity),
            iopub=iopub,
            hidden=dealer("shell", self._identity + b"-hidden"),
        )
        for name in ("shell", "control", "stdin", "iopub", "hidden"):
            self.pump.watch(getattr(self.sockets, name), self._reader(name))

    def _reader(self, channel: str) -> Handler:
        handle = self.routes[channel]

        def read(frames: list[Any]) -> None:
            try:
                msg = wire.split(frames)
            except WireError as exc:
                log.warning("Dropped a message from the kernel on %s: %s", channel, exc)
                return
            handle(msg)

        return read

    def send(self, channel: str, frames: list[Any]) -> None:
        """Send frames as they are on ``channel`` (shell, control, stdin or hidden)."""
        if self.sockets is not None:
            self.pump.send(getattr(self.sockets, channel), frames)

    def send_new(self, channel: str, out: wire.Outgoing) -> str:
        """Send a request of the proxy's own on ``channel``; its msg_id."""
        msg_id, frames = wire.serialize(self.session, out, None)
        self.send(channel, frames)
        return msg_id

    def _watch_process(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # pragma: no cover - kernels older than Linux 5.3
            asyncio.get_running_loop().create_task(self._poll_process())
            return
        asyncio.get_running_loop().add_reader(self._pidfd, self._process_ended)

    async def _poll_process(self) -> None:  # pragma: no cover - fallback without pidfd
        while self.is_alive():
            await asyncio.sleep(0.5)
        self._process_ended()

    def _unwatch_process(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def exit_code(self) -> int | None:
        return self.kernel.process.poll() if self.kernel is not None else None

    def is_alive(self) -> bool:
        return self.kernel is not None and self.kernel.process.poll() is None

    def _process_ended(self) -> None:
        self._unwatch_process()
        code = self.exit_code()
        if self._stopping:
            return
        log.warning("Upstream kernel ended unexpectedly (exit code %s)", code)
        if self.on_death is not None:
            self.on_death(code)

    def expect_exit(self) -> None:
        """The upstream was asked to shut down: its exit is not a death."""
        self._stopping = True

    async def restart(self) -> None:
        """Start a fresh kernel after the old one died."""
        await self._teardown(kill=True)
        self.start()

    async def shutdown(self, *, now: bool = False) -> None:
        """Stop the kernel (SIGTERM first unless ``now``) and remove its files."""
        self._stopping = True
        await self._teardown(kill=now)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    async def _teardown(self, *, kill: bool) -> None:
        self._unwatch_process()
        if self.sockets is not None:
            for sock in self.sockets.all():
                self.pump.unwatch(sock)
                sock.close(linger=0)
            self.sockets = None
        kernel, self.kernel = self.kernel, None
        if kernel is None:
            return
        process = kernel.process
        if process.poll() is None and not kill:
            self._signal(process, signal.SIGTERM)
            await self._wait(process, TERMINATE_GRACE)
        if process.poll() is None:
            self._signal(process, signal.SIGKILL)
            await self._wait(process, TERMINATE_GRACE)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        kernel.connection_file.unlink(missing_ok=True)

    @staticmethod
    def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Signal the kernel's process group (its own: it was started in a new session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            try:
                os.killpg(process.pid, sig)
            except OSError:
                process.send_signal(sig)

    @staticmethod
    async def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while process.poll() is None:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to end by itself; True if it did."""
        if self.kernel is None:
            return True
        return await self._wait(self.kernel.process, timeout)

    def signal_interrupt(self) -> None:
        """SIGINT to the kernel's process group (the ``signal`` interrupt mode)."""
        if self.kernel is not None and self.kernel.process.poll() is None:
            self._signal(self.kernel.process, signal.SIGINT)


__all__ = ["Upstream", "UpstreamSockets", "remove_stale_runtime_dirs"]
