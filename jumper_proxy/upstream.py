"""Owning the upstream kernel: start, restart, interrupt, death detection, and hidden execution.

The upstream is started with jupyter_client on a private connection file of its own (a fresh
random key, mode 0600, loopback tcp or ipc in a 0700 directory). It is tied to the proxy's
life three ways: it is shut down with the proxy; ``JPY_PARENT_PID`` lets ipykernel notice an
orphaning itself; and ``PR_SET_PDEATHSIG`` (Linux) kills it if the proxy is killed outright.

Only this module touches the upstream's sockets. Frames are relayed by ``relay.py``; here we
own the sockets, the upstream's :class:`~jupyter_client.session.Session` and the proxy's own
"hidden" shell socket used by :meth:`Upstream.run_hidden`.
"""

from __future__ import annotations

import ast
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

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import HiddenExecutionError, UpstreamDied, UpstreamError
from jumper_proxy.leftovers import owner_is_gone
from jumper_proxy.pump import Handler, Pump
from jumper_proxy.relay import Message, forward_frames, new_frames, parse_frames

log = logging.getLogger(__name__)

#: How long the upstream may take to answer its first kernel_info_request.
STARTUP_TIMEOUT = 60.0
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

    ``routes`` maps ``shell``, ``control``, ``stdin`` and ``iopub`` to the handlers of
    verified messages from those sockets. ``on_death`` is called (in the event loop) with the
    exit code when the process ends without the proxy asking it to; the proxy then answers
    what was pending and calls :meth:`restart`.
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        context: zmq.Context[Any],
        pump: Pump,
        routes: dict[str, Callable[[Message], None]],
        *,
        transport: str = "ipc",
        on_death: Callable[[int | None], None] | None = None,
        resign_for: Session | None = None,
    ) -> None:
        self.spec = spec
        self.context = context
        self.pump = pump
        self.routes = routes
        self.resign_for = resign_for
        self.transport = transport
        self.on_death = on_death
        self.ready = asyncio.Event()
        self.sockets: UpstreamSockets | None = None
        self.session: Session | None = None
        _remove_stale_runtime_dirs()
        self._runtime_dir = tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-")  # 0700
        self._manager: AsyncKernelManager | None = None
        self._pidfd: int | None = None
        self._stopping = False
        self._hidden_waiters: dict[str, asyncio.Future[Message]] = {}
        self.hidden_ids: set[str] = set()
        self._iopub_seen = asyncio.Event()
        self._identity = f"jumper-proxy-{uuid.uuid4().hex[:8]}".encode()

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The upstream kernel's process id while it runs."""
        proc = getattr(self._manager.provisioner, "process", None) if self._manager else None
        return proc.pid if proc is not None else None

    async def start(self) -> None:
        """Start the kernel, connect, and wait until it answers on shell and iopub."""
        self.ready.clear()
        self._stopping = False
        try:
            self._manager = _make_manager(self.spec, self.transport, self._runtime_dir)
            await self._manager.start_kernel(preexec_fn=_die_with_parent)
        except NoSuchKernel as exc:
            raise UpstreamError(f"No kernelspec named {self.spec.kernel_name!r}") from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise UpstreamError(f"Could not start {self.spec.describe()}: {exc}") from exc
        self.session = self._manager.session
        self._connect()
        self._watch_process()
        await self._wait_until_answering()
        self.ready.set()
        log.info("Upstream kernel ready (pid %s, %s)", self.pid, self.spec.describe())

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
        sockets = self.sockets
        for name in ("shell", "control", "stdin"):
            self.pump.watch(getattr(sockets, name), self._reader(self.routes[name]))
        self.pump.watch(sockets.iopub, self._reader(self._on_iopub))
        self.pump.watch(sockets.hidden, self._reader(self._deliver_hidden))

    def _reader(self, handle: Callable[[Message], None]) -> Handler:
        def read(frames: list[Any]) -> None:
            assert self.session is not None
            msg = parse_frames(frames, self.session, self.resign_for)
            if msg is not None:
                handle(msg)

        return read

    def _on_iopub(self, msg: Message) -> None:
        self._iopub_seen.set()
        self.routes["iopub"](msg)

    def send(self, channel: str, msg: Message) -> None:
        """Relay a frontend message to the kernel, signed with the kernel's key."""
        assert self.sockets is not None and self.session is not None
        self.pump.send(getattr(self.sockets, channel), forward_frames(msg, self.session))

    def _send_hidden(self, msg_type: str, content: dict[str, Any]) -> str:
        assert self.sockets is not None and self.session is not None
        msg_id, frames = new_frames(self.session, msg_type, content, None)
        self.hidden_ids.add(msg_id)
        self.pump.send(self.sockets.hidden, frames)
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

    def _process_ended(self) -> None:
        self._unwatch_process()
        proc = getattr(self._manager.provisioner, "process", None) if self._manager else None
        code = proc.poll() if proc is not None else None
        self.ready.clear()
        for fut in self._hidden_waiters.values():
            if not fut.done():
                fut.set_exception(UpstreamDied(code))
        self._hidden_waiters.clear()
        if self._stopping:
            return
        log.warning("Upstream kernel ended unexpectedly (exit code %s)", code)
        if self.on_death is not None:
            self.on_death(code)

    async def _wait_until_answering(self) -> None:
        """kernel_info on shell until both the reply and an iopub message have arrived.

        The iopub message (welcome or status) proves our SUB socket is connected, so no
        output of the first cell is lost.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_TIMEOUT
        self._iopub_seen.clear()
        while True:
            msg_id = self._send_hidden("kernel_info_request", {})
            reply: asyncio.Future[Message] = loop.create_future()
            self._hidden_waiters[msg_id] = reply
            attempt = min(1.0, max(0.01, deadline - loop.time()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(asyncio.shield(reply), self._iopub_seen.wait()), attempt
                )
            self._hidden_waiters.pop(msg_id, None)
            if (
                reply.done()
                and not reply.cancelled()
                and reply.exception() is None
                and self._iopub_seen.is_set()
            ):
                return
            if reply.done() and not reply.cancelled() and reply.exception() is not None:
                raise UpstreamError(f"{self.spec.describe()} exited during start-up")
            if self._manager is None or not await self._manager.is_alive():
                proc = (
                    getattr(self._manager.provisioner, "process", None) if self._manager else None
                )
                code = proc.poll() if proc is not None else None
                raise UpstreamError(
                    f"{self.spec.describe()} exited during start-up (exit code {code})"
                )
            if loop.time() >= deadline:
                raise UpstreamError(
                    f"{self.spec.describe()} did not answer within {STARTUP_TIMEOUT:.0f} s"
                )

    @property
    def hidden_running(self) -> bool:
        """Whether hidden code of the proxy's runs (or waits) in the kernel."""
        return bool(self._hidden_waiters)

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
        self.ready.clear()
        await self._teardown(kill=now)
        shutil.rmtree(self._runtime_dir, ignore_errors=True)

    async def _teardown(self, *, kill: bool) -> None:
        self._unwatch_process()
        if self.sockets is not None:
            for sock in self.sockets.all():
                self.pump.unwatch(sock)
                sock.close(linger=0)
            self.sockets = None
        self.hidden_ids.clear()
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

    # ---- hidden execution -----------------------------------------------------------------

    def _deliver_hidden(self, msg: Message) -> None:
        """Hand a reply that arrived on the hidden socket to whoever waits for it."""
        fut = self._hidden_waiters.pop(msg.parent_msg_id or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    async def run_hidden(
        self, code: str, expressions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Run ``code`` silently in the user's namespace and evaluate ``expressions`` there.

        Nothing is shown to the user, nothing enters the history, the execution count does not
        change. Each expression's value comes back as a Python literal (``ast.literal_eval`` of
        its repr), so expressions should evaluate to str, numbers, lists, dicts or None.
        """
        await self.ready.wait()
        content = {
            "code": code,
            "silent": True,
            "store_history": False,
            "user_expressions": expressions or {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        msg_id = self._send_hidden("execute_request", content)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._hidden_waiters[msg_id] = fut
        try:
            reply = await fut
        finally:
            self._hidden_waiters.pop(msg_id, None)
        reply_content = reply.content()
        if reply_content.get("status") != "ok":
            raise HiddenExecutionError(
                reply_content.get("ename", "Error"),
                reply_content.get("evalue", ""),
                reply_content.get("traceback"),
            )
        results: dict[str, Any] = {}
        for name, value in reply_content.get("user_expressions", {}).items():
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


__all__ = ["Upstream", "UpstreamSockets"]
