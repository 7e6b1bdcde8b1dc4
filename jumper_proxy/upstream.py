"""Owning the upstream kernel: start, restart, interrupt, shutdown, death detection, and its
sockets.

The upstream is started with jupyter_client on a private connection file of its own (mode
0600; ipc sockets in a 0700 directory, or loopback tcp) that carries the frontend connection's
own key and signature scheme, so frames pass through the proxy without being signed again. It
is tied to the proxy's life three ways: it is shut down with the proxy; ``JPY_PARENT_PID`` lets
ipykernel notice an orphaning itself; and ``PR_SET_PDEATHSIG`` (Linux) kills it if the proxy is
killed outright.

Only this module touches the upstream's sockets: the proxy's shell, control and stdin
connections, its IOPub subscription, and a second shell connection of the proxy's own
(``hidden``) for its silent work. What arrives on them goes to the handlers it is given; which
request a message answers is the scheduler's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from jumper_proxy import wire
from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import UpstreamError, WireError
from jumper_proxy.leftovers import owner_is_gone
from jumper_proxy.pump import Handler, Pump

log = logging.getLogger(__name__)

#: How long a shutdown_request may take before the upstream is killed.
SHUTDOWN_GRACE = 5.0

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to send SIGTERM to this (child) process when the proxy dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


RUNTIME_PREFIX = "jumper-proxy-"


def _remove_stale_runtime_dirs() -> None:
    """Remove the private directories of proxies of this user that died without cleaning up.

    A directory is named after the proxy's pid; it is stale when that pid no longer runs
    (or is a zombie: dead, not yet reaped).
    """
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{RUNTIME_PREFIX}*-*"):
        if owner_is_gone(path, path.name[len(RUNTIME_PREFIX) :].split("-", 1)[0]):
            shutil.rmtree(path, ignore_errors=True)


class _InterpreterSpecs(KernelSpecManager):
    """A kernelspec source with one entry: ipykernel in a given Python interpreter."""

    python = ""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({self.python})",
            language="python",
            interrupt_mode="signal",
            resource_dir="",
        )


def _make_manager(spec: UpstreamSpec, transport: str, runtime_dir: str) -> AsyncKernelManager:
    ip = os.path.join(runtime_dir, "upstream") if transport == "ipc" else "127.0.0.1"
    kwargs: dict[str, Any] = {"transport": transport, "ip": ip}
    kwargs["connection_file"] = os.path.join(runtime_dir, "upstream-connection.json")
    if spec.python is not None:
        specs = _InterpreterSpecs()
        specs.python = spec.python
        return AsyncKernelManager(kernel_name="python", kernel_spec_manager=specs, **kwargs)
    return AsyncKernelManager(kernel_name=spec.kernel_name or "python3", **kwargs)


@dataclass
class UpstreamSockets:
    """The proxy's connections to one running upstream kernel.

    ``shell`` and ``stdin`` share one routing identity: ipykernel sends ``input_request`` on
    stdin to the identity it saw on shell, so that is how input requests find their way back.
    Frontend identities travel as extra routing frames in front of ours and are restored on
    the way back. ``hidden`` is the proxy's own shell connection for silent work.
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
    code when the process ends without the proxy asking it to. ``generation`` counts the
    kernels started: work begun on one generation never continues on the next.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        context: zmq.Context[Any],
        pump: Pump,
        session: Session,
        routes: dict[str, Callable[[wire.Message], None]],
        *,
        transport: str = "ipc",
        on_death: Callable[[int | None], None] | None = None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.pump = pump
        self.session = session
        self.routes = routes
        self.transport = transport
        self.on_death = on_death
        self.generation = 0
        self.sockets: UpstreamSockets | None = None
        _remove_stale_runtime_dirs()
        self._runtime_dir = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-")  # 0700
        self._manager: AsyncKernelManager | None = None
        self._pidfd: int | None = None
        self._stopping = False
        self._identity = f"jumper-proxy-{uuid.uuid4().hex[:8]}".encode()

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The upstream kernel's process id while it runs."""
        proc = getattr(self._manager.provisioner, "process", None) if self._manager else None
        return proc.pid if proc is not None else None

    @property
    def running(self) -> bool:
        return self.sockets is not None

    async def start(self) -> None:
        """Start the kernel and connect to it (whether it answers is for the caller to ask)."""
        self._stopping = False
        try:
            self._manager = _make_manager(self.spec, self.transport, self._runtime_dir)
            # the frontend connection's key: forwarded frames keep their signatures
            self._manager.session.signature_scheme = self.session.signature_scheme
            self._manager.session.key = self.session.key
            await self._manager.start_kernel(preexec_fn=_die_with_parent)
        except NoSuchKernel as exc:
            raise UpstreamError(f"No kernelspec named {self.spec.kernel_name!r}") from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise UpstreamError(f"Could not start {self.spec.describe()}: {exc}") from exc
        self.generation += 1
        self._connect()
        self._watch_process()

    def _connect(self) -> None:
        assert self._manager is not None
        info = self._manager.get_connection_info()
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
        while self._manager is not None and await self._manager.is_alive():
            await asyncio.sleep(0.5)
        self._process_ended()

    def _unwatch_process(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def exit_code(self) -> int | None:
        proc = getattr(self._manager.provisioner, "process", None) if self._manager else None
        return proc.poll() if proc is not None else None

    def _process_ended(self) -> None:
        self._unwatch_process()
        code = self.exit_code()
        if self._stopping:
            return
        log.warning("Upstream kernel ended unexpectedly (exit code %s)", code)
        if self.on_death is not None:
            self.on_death(code)

    async def is_alive(self) -> bool:
        return self._manager is not None and bool(await self._manager.is_alive())

    def expect_exit(self) -> None:
        """The upstream was asked to shut down: its exit is not a death."""
        self._stopping = True

    async def restart(self) -> None:
        """Start a fresh kernel after the old one died."""
        await self._teardown(kill=True)
        await self.start()

    async def shutdown(self, *, now: bool = False) -> None:
        """Stop the kernel (it is asked first unless ``now``) and remove its files."""
        self._stopping = True
        await self._teardown(kill=now)
        shutil.rmtree(self._runtime_dir, ignore_errors=True)

    async def _teardown(self, *, kill: bool) -> None:
        self._unwatch_process()
        if self.sockets is not None:
            for sock in self.sockets.all():
                self.pump.unwatch(sock)
                sock.close(linger=0)
            self.sockets = None
        manager, self._manager = self._manager, None
        if manager is None:
            return
        with contextlib.suppress(Exception):
            if kill or not await manager.is_alive():
                await manager.shutdown_kernel(now=True)
            else:
                await asyncio.wait_for(manager.shutdown_kernel(now=False), SHUTDOWN_GRACE * 2)

    async def wait_exit(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to end by itself; True if it did."""
        manager = self._manager
        if manager is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not await manager.is_alive():
                return True
            await asyncio.sleep(0.05)
        return False

    async def interrupt(self) -> None:
        """Interrupt the running cell the way the upstream's kernelspec asks (signal/message)."""
        if self._manager is None:
            return
        with contextlib.suppress(Exception):
            await self._manager.interrupt_kernel()


__all__ = ["Upstream", "UpstreamSockets"]
