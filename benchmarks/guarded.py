"""Kernels a benchmark must survive: every wait has a deadline, a wedged kernel is restarted.

A peer kernel may never answer (a cell it loses, an ``input()`` it does not pass on, a
process that dies). ``GuardedKernel`` runs cells with a deadline each; when one passes, or the
kernel's process has gone, it records what happened, kills the kernel with everything it
started, starts it again, re-runs its set-up cells and goes on. Nothing here waits without a
deadline, so no kernel can hang a run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import psutil
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

#: how often a wait looks whether the kernel's process is still there
POLL_S = 0.5


class Wedged(Exception):
    """A kernel that did not answer in time, or whose process went away."""


def wait_for(
    get: Callable[[float], dict[str, Any]],
    match: Callable[[dict[str, Any]], bool],
    deadline: float,
    alive: Callable[[], bool] = lambda: True,
) -> dict[str, Any] | None:
    """The first message ``get`` yields that ``match`` accepts before ``deadline``
    (``time.monotonic``); ``None`` when the deadline passes or ``alive`` says the kernel is gone."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = get(min(left, POLL_S))
        except queue.Empty:
            if not alive():
                return None
            continue
        if match(msg):
            return msg
    return None


def reply_to(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: msg["parent_header"].get("msg_id") == msg_id


def idle_of(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: (
        msg["parent_header"].get("msg_id") == msg_id
        and msg["msg_type"] == "status"
        and msg["content"]["execution_state"] == "idle"
    )


def kernel_tree(pid: int) -> list[psutil.Process]:
    """A process and all it started; empty when it is gone."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def survivors(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (zombies are gone already)."""
    left = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
    return left


def describe(processes: Sequence[psutil.Process]) -> list[str]:
    """``PID NAME`` of each process, for a report."""
    names = []
    for process in processes:
        try:
            names.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            names.append(f"{process.pid} (gone)")
    return names


def kill_all(processes: Sequence[psutil.Process]) -> None:
    """Kill what is left of ``processes`` (a kernel that started another kernel in a session of
    its own leaves it behind when it is killed)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(processes), timeout=5)


class GuardedKernel:
    """A kernel of kernelspec ``name`` that a benchmark drives with deadlines.

    ``notes`` collects what went wrong (a cell without a reply, a restart) for the report;
    ``setup`` cells are run after every (re)start.
    """

    def __init__(
        self,
        label: str,
        name: str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        log: IO[bytes] | None = None,
        start_timeout: float = 120,
    ) -> None:
        self.label = label
        self.name = name
        self.start_timeout = start_timeout
        self.setup: list[str] = []
        self.notes: list[str] = []
        self.restarts = 0
        #: what the first cell after the first start printed (a kernel's own start-up noise)
        self.first_output = ""
        self.km = KernelManager(kernel_name=name)
        self._launch: dict[str, Any] = {}
        if env:
            self._launch["env"] = {**os.environ, **env}
        if cwd:
            self._launch["cwd"] = cwd
        if log is not None:
            self._launch["stdout"] = self._launch["stderr"] = log
        self.kc: BlockingKernelClient | None = None
        self._tree: list[psutil.Process] = []

    # --- life -----------------------------------------------------------------------------

    def start(self) -> float:
        """Start the kernel and wait until it answers ``kernel_info``; the seconds it took."""
        started = time.perf_counter()
        self.km.start_kernel(**self._launch)
        self._connect()
        for index, code in enumerate(self.setup):
            _, text = self.ok(code)
            if index == 0 and not self.restarts:
                self.first_output = text
        return time.perf_counter() - started

    def _connect(self) -> None:
        self.kc = self.km.client()
        self.kc.start_channels()
        msg_id = self.kc.kernel_info()
        deadline = time.monotonic() + self.start_timeout
        if wait_for(self.kc.get_shell_msg, reply_to(msg_id), deadline, self.alive) is None:
            self.kc.stop_channels()
            if not self.alive():
                code = self.km.provisioner.process.returncode  # type: ignore[union-attr]
                raise Wedged(f"{self.label}: the kernel's process exited ({code}) before replying")
            raise Wedged(f"{self.label}: no kernel_info_reply within {self.start_timeout:g} s")
        self._tree = kernel_tree(self.pid)

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def alive(self) -> bool:
        return bool(self.km.is_alive())

    def client(self) -> BlockingKernelClient:
        assert self.kc is not None, f"{self.label} is not started"
        return self.kc

    def close(self) -> None:
        """Shut the kernel down (killed if it does not go within jupyter_client's wait), and
        kill whatever it left behind."""
        tree = self._tree + kernel_tree(self.pid) if self.km.has_kernel else self._tree
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=not self.alive())
        kill_all(tree)

    def recover(self, reason: str) -> None:
        """Note ``reason``, kill the kernel and all it started, and start it again."""
        self.notes.append(reason)
        print(f"  {reason}; restarting {self.label}", flush=True)
        tree = self._tree + kernel_tree(self.pid)
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        self.km.shutdown_kernel(now=True)
        kill_all(tree)
        self.restarts += 1
        self.km = KernelManager(kernel_name=self.name)  # a shut down manager cannot start again
        self.start()

    # --- cells ----------------------------------------------------------------------------

    def run(
        self,
        code: str,
        timeout: float,
        stdin: Callable[[dict[str, Any]], str] | None = None,
        seen: list[str] | None = None,
        recover: bool = True,
    ) -> tuple[float, dict[str, Any] | None, str]:
        """Seconds until the reply and idle of ``code`` arrived, the reply, and its stream text.

        ``stdin`` answers ``input_request``s; ``seen`` collects the types of the IOPub messages
        the cell caused. Without a reply and idle within ``timeout`` the kernel is wedged: the
        reply is ``None`` and, unless ``recover`` is false, the kernel is restarted.
        """
        kc = self.client()
        text: list[str] = []
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        msg_id = kc.execute(code, allow_stdin=stdin is not None)
        reply = self._wait_reply(kc, msg_id, deadline, stdin)
        idle = None
        if reply is not None:
            collect = self._collect(msg_id, text, [] if seen is None else seen)
            idle = wait_for(kc.get_iopub_msg, collect, deadline, self.alive)
        elapsed = time.perf_counter() - started
        if reply is None or idle is None:
            what = "no reply" if reply is None else "a reply but no idle status"
            gone = "" if self.alive() else " (its process had gone)"
            reason = f"{self.label}: {what} to {_short(code)} within {timeout:g} s{gone}"
            if recover:
                self.recover(reason)
            return elapsed, None, "".join(text)
        return elapsed, reply, "".join(text)

    def ok(self, code: str, timeout: float = 120) -> tuple[float, str]:
        """Run ``code``; it must succeed (a set-up cell: failing it is a broken benchmark)."""
        seconds, reply, text = self.run(code, timeout)
        if reply is None or reply["content"]["status"] != "ok":
            content = reply["content"] if reply else "no reply"
            raise Wedged(f"{self.label}: cell {_short(code)} failed: {content} {text}")
        return seconds, text

    def _wait_reply(
        self,
        kc: BlockingKernelClient,
        msg_id: str,
        deadline: float,
        stdin: Callable[[dict[str, Any]], str] | None,
    ) -> dict[str, Any] | None:
        if stdin is None:
            return wait_for(kc.get_shell_msg, reply_to(msg_id), deadline, self.alive)
        while time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                request = kc.get_stdin_msg(timeout=0.01)
                if request["msg_type"] == "input_request":
                    kc.input(stdin(request))
            step = min(deadline, time.monotonic() + 0.05)
            reply = wait_for(kc.get_shell_msg, reply_to(msg_id), step, self.alive)
            if reply is not None:
                return reply
        return None

    @staticmethod
    def _collect(msg_id: str, text: list[str], seen: list[str]) -> Callable[[dict[str, Any]], bool]:
        is_idle = idle_of(msg_id)

        def match(msg: dict[str, Any]) -> bool:
            if msg["parent_header"].get("msg_id") == msg_id:
                seen.append(msg["msg_type"])
                if msg["msg_type"] == "stream":
                    text.append(msg["content"]["text"])
            return is_idle(msg)

        return match


def _short(code: str) -> str:
    line = code.strip().splitlines()[0] if code.strip() else ""
    return repr(line if len(line) <= 40 else line[:37] + "...")
