"""The proxy's configuration: one frozen dataclass built by the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class UpstreamSpec:
    """Which real kernel the proxy starts: a kernelspec by name, or a Python interpreter.

    Exactly one of ``kernel_name`` and ``python`` is set. ``python`` is an absolute path to an
    interpreter whose environment has ipykernel; it is started as
    ``PYTHON -m ipykernel_launcher -f CONNECTION_FILE``. ``args`` are appended to the kernel's
    command line (``--HistoryManager.hist_file=:memory:``, for example).
    """

    kernel_name: str | None = None
    python: str | None = None
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        return self.python if self.python is not None else f"kernelspec {self.kernel_name!r}"


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the running proxy needs to know, decided before it starts."""

    connection_file: Path
    upstream: UpstreamSpec = field(default_factory=lambda: UpstreamSpec(kernel_name="python3"))
    debug: bool = False
    #: transport for the private connection to the upstream: ``ipc`` (sockets in a 0700
    #: directory) or ``tcp`` (loopback)
    upstream_transport: str = "ipc"
