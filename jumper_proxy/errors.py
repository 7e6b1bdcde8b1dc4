"""The project's exception tree and how each error reaches the user.

Third-party errors are caught where they arise and turned into one of these, with a message a
user can act on: ``zmq.ZMQError`` when binding the frontend sockets (ConfigurationError),
undecodable frames (WireError), ``OSError`` when starting the kernel (UpstreamError), psutil's
``NoSuchProcess``/``AccessDenied`` and ``pynvml.NVMLError`` in the monitor (a process or GPU is
simply left out), a failed Score-P child (ChildError and its subclasses). On a cell, an error
shows as ``user_error`` says; a magic's own misuse is a MagicError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


class JumperError(Exception):
    """Base of every error raised by jumper-proxy."""


class ConfigurationError(JumperError):
    """A flag, a setting or an environment value is wrong; the message says which and why."""


class WireError(JumperError):
    """Frames that are not a message the proxy can act on (bad signature, replay, malformed
    header, undecodable JSON); the message says which."""


class UpstreamError(JumperError):
    """The upstream kernel could not be found, started or reached."""


class UpstreamDied(UpstreamError):
    """The upstream kernel process exited while the proxy needed it."""

    def __init__(self, exit_code: int | None) -> None:
        self.exit_code = exit_code
        super().__init__(describe_exit(exit_code))


class HiddenExecutionError(JumperError):
    """Code the proxy ran silently on the upstream raised an exception."""

    def __init__(self, ename: str, evalue: str, traceback: list[str] | None = None) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback or []
        super().__init__(f"{ename}: {evalue}")


class MagicError(JumperError):
    """A proxy magic was used wrongly (bad arguments, nothing recorded yet, ...).

    Shown on the cell as an error output named ``ename``; the kernel keeps working.
    """

    ename = "MagicError"

    def __init__(self, message: str, *, ename: str | None = None) -> None:
        super().__init__(message)
        if ename is not None:
            self.ename = ename


class MonitorError(JumperError):
    """Sampling the kernel's process tree or the GPUs failed."""


class ChildError(JumperError):
    """A Score-P child interpreter failed (exception, signal, missing scorep)."""


class ScorepNotFound(ChildError):
    """The ``scorep`` module (the Score-P Python bindings) is not importable by the kernel's
    Python, or Score-P itself (``scorep-config``) is not on its PATH; the message says what to
    install or load."""


class HandoverError(ChildError):
    """The notebook's state could not be handed to a Score-P child or brought back from it.

    The kernel's state is unchanged.
    """


class ChildFailed(ChildError):
    """A Score-P cell failed in the child: an exception of the cell (``ename``, ``evalue`` and
    the ``traceback`` of the user's code, as an error output shows them), or a crash.

    The kernel's state is unchanged. ``experiment_dir`` is where Score-P wrote, if anywhere.
    """

    def __init__(
        self,
        ename: str,
        evalue: str,
        traceback: list[str] | None = None,
        *,
        returncode: int | None = None,
        experiment_dir: Path | None = None,
    ) -> None:
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback or []
        self.returncode = returncode
        self.experiment_dir = experiment_dir
        super().__init__(f"{ename}: {evalue}" if evalue else ename)


class ChildInterrupted(ChildFailed):
    """A Score-P cell was interrupted; its child was stopped and nothing was carried back."""


def user_error(exc: BaseException) -> tuple[str, str, list[str]]:
    """How an error shows on the cell: ``(ename, evalue, traceback)``.

    Errors that carry the user's own exception (a failed hidden execution, a failed Score-P
    child) show it as the kernel would; the proxy's own errors show their name and message.
    """
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    if evalue is None:
        evalue = str(exc)
    traceback = list(getattr(exc, "traceback", None) or [])
    return ename, evalue, traceback


def describe_exit(exit_code: int | None, process: str = "The kernel process") -> str:
    """Say in words how a process ended, from a ``Popen.returncode``-style code."""
    import signal

    if exit_code is None:
        return f"{process} exited."
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"{process} was killed by {name}."
    return f"{process} exited with code {exit_code}."
