"""Building and running the Score-P child command, streaming its output as it is written.

:func:`build_child_command` is the one place the command line is made (a launcher prefix such
as ``mpirun -np 4`` or ``srun`` goes in front of it), :func:`build_child_env` the one place its
environment is. :func:`run_child` runs the child in a process group of its own, hands each chunk
of stdout/stderr to a callback as soon as it is read, and on an interrupt sends SIGINT to the
group, then SIGTERM and SIGKILL after grace periods. :func:`find_experiment_dir` says where
Score-P wrote its experiment, without waiting for anything.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jumper_proxy.errors import ChildError, describe_exit

#: removed from the kernel's environment: the bindings set them up themselves on start (and
#: remove the directory ``SCOREP_PYTHON_BINDINGS_TEMP_DIR`` names when they end)
STRIPPED_ENV = (
    "LD_PRELOAD",
    "SCOREP_PYTHON_BINDINGS_INITIALISED",
    "SCOREP_LD_PRELOAD_BACKUP",
    "SCOREP_PYTHON_BINDINGS_TEMP_DIR",
)

#: run by the kernel's Python: where the Score-P bindings and ``scorep-config`` are (JSON). A
#: stray ``scorep`` directory, taken for a namespace package, is not the bindings.
PROBE_CODE = """\
import importlib.util, json, os, shutil, sys
def stamp(path):
    if not path:
        return None
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError:
        return real
    return "%s:%d:%d" % (real, info.st_size, info.st_mtime_ns)
spec = importlib.util.find_spec("scorep")
origin = spec.origin if spec is not None else None
print(json.dumps({
    "python": "%s:%d.%d" % (os.path.realpath(sys.executable), *sys.version_info[:2]),
    "bindings": stamp(origin),
    "scorep_config": stamp(shutil.which("scorep-config")),
}))
"""

SCOREP_INSTALL_HINT = (
    "Install the Score-P Python bindings in the kernel's environment with `pip install scorep`; "
    "they need a Score-P installation with `scorep-config` on PATH."
)
SCOREP_CONFIG_HINT = (
    "Load Score-P before the kernel starts (e.g. `module load Score-P`, or put its bin "
    "directory on PATH) and restart the kernel, or install the kernelspec with "
    "`jumper-proxy install --env PATH=/path/to/scorep/bin:$PATH`."
)

#: how long the kernel's Python may take to say where the bindings are
PROBE_TIMEOUT = 60.0
#: prctl(2) option: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1
#: how long the output of an ended child may take to drain before its group is killed
_DRAIN_GRACE = 1.0


@dataclass(frozen=True)
class BindingsProbe:
    """What the kernel's Python sees: its interpreter, the bindings' ``__init__.py`` and
    ``scorep-config`` (each as ``path:size:mtime``, ``None`` when missing)."""

    python: str
    bindings: str | None
    scorep_config: str | None

    def key(self) -> tuple[str, ...]:
        """What the prepared init library depends on, apart from the arguments."""
        return (self.python, self.bindings or "", self.scorep_config or "")


@dataclass(frozen=True)
class ChildResult:
    """How the child ended: its ``returncode`` (negative: killed by that signal), whether it was
    stopped because of an interrupt, and its wall time in seconds."""

    returncode: int
    interrupted: bool
    duration: float

    def describe(self) -> str:
        return describe_child_exit(self.returncode)


def describe_child_exit(returncode: int) -> str:
    """Say in words how the child ended."""
    return describe_exit(returncode, "The Score-P child process")


def build_child_command(
    python: str,
    binding_args: Sequence[str],
    runner: Path,
    launcher_prefix: Sequence[str] = (),
    script_args: Sequence[str] = (),
) -> list[str]:
    """``[*launcher_prefix, python, -m, scorep, --noinstrumenter, *binding_args, runner,
    *script_args]``: the bindings start with the Python instrumenter off, and the runner turns
    it on around the cells' code only."""
    return [
        *launcher_prefix,
        python,
        "-m",
        "scorep",
        "--noinstrumenter",
        *binding_args,
        str(runner),
        *script_args,
    ]


def build_child_env(kernel_env: Mapping[str, str], scorep_env: Mapping[str, str]) -> dict[str, str]:
    """The kernel's environment without :data:`STRIPPED_ENV`, plus the Score-P settings, with
    unbuffered Python output (so the cell shows it as it is written)."""
    env = {key: value for key, value in kernel_env.items() if key not in STRIPPED_ENV}
    env.update(scorep_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def probe_bindings(python: str, env: Mapping[str, str], cwd: Path) -> BindingsProbe:
    """Where ``python`` in ``env`` (and ``cwd``) finds the Score-P bindings and scorep-config."""
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            PROBE_CODE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=str(cwd),
            preexec_fn=functools.partial(die_with_proxy, os.getpid()),
        )
    except OSError as exc:
        raise ChildError(f"Cannot run the kernel's Python {python}: {exc.strerror}") from exc
    answer = await communicate(proc, PROBE_TIMEOUT)
    if answer is None:
        raise ChildError(
            f"The kernel's Python {python} did not say within {PROBE_TIMEOUT:.0f} s whether "
            "it can import the Score-P bindings (a hung file system?)."
        )
    out = answer[0]
    try:
        found = json.loads(out)
        return BindingsProbe(found["python"], found["bindings"], found["scorep_config"])
    except (ValueError, KeyError, TypeError):
        raise ChildError(
            f"The kernel's Python {python} cannot run a script (exit code {proc.returncode})."
        ) from None


async def communicate(
    proc: asyncio.subprocess.Process, timeout: float
) -> tuple[bytes, bytes] | None:
    """``proc``'s output once it has ended, or ``None`` when it did not end within ``timeout``
    seconds; then, as when the caller is cancelled, it is killed (nothing is left running)."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(BaseException):
            await proc.communicate()
        if isinstance(exc, asyncio.TimeoutError):
            return None
        raise
    return out or b"", err or b""


def die_with_proxy(proxy: int | None = None) -> None:  # pragma: no cover - runs in the child
    """In a child just forked: ask Linux to kill it when the proxy (its parent) dies, also by
    SIGKILL; if the proxy ``proxy`` is already gone, exit at once."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if proxy is not None and os.getppid() != proxy:
        os._exit(1)


async def run_child(
    cmd: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    on_output: Callable[[str, str], None],
    interrupt: asyncio.Event,
    *,
    interrupt_grace: float = 5.0,
    terminate_grace: float = 3.0,
    on_started: Callable[[int], None] | None = None,
    stdin: asyncio.Future[bytes] | None = None,
) -> ChildResult:
    """Run ``cmd`` to its end, streaming ``("stdout"|"stderr", text)`` to ``on_output``.

    When ``interrupt`` is set the child's process group gets SIGINT, after ``interrupt_grace``
    seconds SIGTERM, after ``terminate_grace`` more SIGKILL. Cancelling this coroutine kills the
    group. Processes the child leaves behind holding its output open are killed once the output
    has not ended within a second of the child's exit. ``on_started`` gets the child's pid.
    The child's stdin is empty, or, with ``stdin``, the bytes that future gets once it has them
    (the child can start before they are known).
    """
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    protocol = _ChildProtocol(loop, on_output)
    try:
        transport, _ = await loop.subprocess_exec(
            lambda: protocol,
            *cmd,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=str(cwd),
            start_new_session=True,
            preexec_fn=functools.partial(die_with_proxy, os.getpid()),
        )
    except OSError as exc:
        raise ChildError(f"Cannot start the Score-P child ({cmd[0]}): {exc.strerror}") from exc
    pid = transport.get_pid()
    interrupted = False
    if stdin is not None:
        stdin.add_done_callback(functools.partial(_feed, transport))
    try:
        if on_started is not None:
            on_started(pid)
        stop = asyncio.ensure_future(interrupt.wait())
        either: list[asyncio.Future[Any]] = [protocol.exited, stop]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not protocol.exited.done():
            interrupted = True
            await _stop(pid, protocol.exited, interrupt_grace, terminate_grace)
        if not await _wait(protocol.closed, _DRAIN_GRACE):
            _signal_group(pid, signal.SIGKILL)  # leftovers of the child hold its output open
            await _wait(protocol.closed, _DRAIN_GRACE)
    except BaseException:  # cancelled, or on_started failed: leave nothing running
        _signal_group(pid, signal.SIGKILL)
        with contextlib.suppress(BaseException):
            await asyncio.shield(protocol.exited)
        raise
    finally:
        transport.close()
    protocol.raise_callback_error()
    returncode = transport.get_returncode()
    assert returncode is not None  # the child has exited
    return ChildResult(returncode, interrupted, time.monotonic() - started)


def _feed(transport: asyncio.SubprocessTransport, data: asyncio.Future[bytes]) -> None:
    """Write what the child is waiting for on its stdin, and close it (also without data)."""
    pipe = transport.get_pipe_transport(0)
    if pipe is None or pipe.is_closing():
        return
    if not data.cancelled() and data.exception() is None:
        with contextlib.suppress(OSError):
            pipe.write(data.result())  # type: ignore[attr-defined]
    pipe.close()


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Hands each chunk of output to the callback as it arrives; ``exited`` is done when the
    process has ended, ``closed`` when its stdout and stderr have."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_output: Callable[[str, str], None]
    ) -> None:
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._on_output = on_output
        self._names = {1: "stdout", 2: "stderr"}
        self._decoders = {
            fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in self._names
        }
        self._open = set(self._names)
        self._error: BaseException | None = None

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._emit(fd, self._decoders[fd].decode(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self._open:
            self._emit(fd, self._decoders[fd].decode(b"", final=True))
            self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def raise_callback_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _emit(self, fd: int, text: str) -> None:
        if not text or self._error is not None:
            return
        try:
            self._on_output(self._names[fd], text)
        except Exception as exc:  # re-raised once the child has ended
            self._error = exc


async def _stop(
    pid: int, exited: asyncio.Future[None], interrupt_grace: float, terminate_grace: float
) -> None:
    for sig, grace in ((signal.SIGINT, interrupt_grace), (signal.SIGTERM, terminate_grace)):
        _signal_group(pid, sig)
        if await _wait(exited, grace):
            return
    _signal_group(pid, signal.SIGKILL)
    await exited


async def _wait(future: asyncio.Future[None], timeout: float) -> bool:
    """Whether ``future`` is done within ``timeout`` seconds (it is not cancelled)."""
    done, _ = await asyncio.wait([future], timeout=timeout)
    return bool(done)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def find_experiment_dir(cwd: Path, env: Mapping[str, str], started_at: float) -> Path | None:
    """Where Score-P wrote the experiment of a run started at ``started_at`` (``time.time()``).

    ``SCOREP_EXPERIMENT_DIRECTORY`` when set (relative to ``cwd``), if it exists; otherwise the
    newest ``scorep-*`` directory in ``cwd`` changed since ``started_at``. ``None`` when there is
    none; never waits.
    """
    configured = env.get("SCOREP_EXPERIMENT_DIRECTORY")
    if configured:
        path = Path(configured)
        path = path if path.is_absolute() else cwd / path
        return path if path.is_dir() else None
    newest: tuple[float, str] | None = None
    with contextlib.suppress(OSError), os.scandir(cwd) as entries:
        for entry in entries:
            if not entry.name.startswith("scorep-") or not entry.is_dir():
                continue
            mtime = entry.stat().st_mtime
            if mtime >= started_at and (newest is None or mtime > newest[0]):
                newest = (mtime, entry.path)
    return Path(newest[1]) if newest else None
