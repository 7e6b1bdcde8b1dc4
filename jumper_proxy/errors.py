"""The project's exception tree and how each error reaches the user.

Third-party errors (``zmq.ZMQError``, psutil's ``NoSuchProcess``/``AccessDenied``,
``pynvml.NVMLError``, ``jupyter_client`` failures) are caught where they arise and turned into
one of these, with a message a user can act on.
"""

from __future__ import annotations


class JumperError(Exception):
    """Base of every error raised by jumper-proxy."""


class ConfigurationError(JumperError):
    """A flag, a setting or an environment value is wrong; the message says which and why."""


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


def describe_exit(exit_code: int | None) -> str:
    """Say in words how a process ended, from a ``Popen.returncode``-style code."""
    import signal

    if exit_code is None:
        return "The kernel process exited."
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"The kernel process was killed by {name}."
    return f"The kernel process exited with code {exit_code}."
