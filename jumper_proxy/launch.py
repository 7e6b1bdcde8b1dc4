"""Starting the upstream kernel's process, before the proxy imports anything heavy.

The proxy is ready only when its upstream is, so the upstream is started first: the kernelspec
is read from the Jupyter path as jupyter_client reads it, a private connection file is written
(mode 0600, in the proxy's 0700 runtime directory; ipc sockets by default) with the frontend
connection's own key and signature scheme, and the kernel's command is started in a session of
its own, as jupyter_client starts it. Only the standard library and ``jupyter_core.paths`` are
imported here; the rest of the proxy is imported while the kernel boots.

The kernel cannot outlive the proxy: ``PR_SET_PDEATHSIG`` (Linux) sends it SIGTERM when the
proxy dies, even by SIGKILL, and ``JPY_PARENT_PID`` lets ipykernel notice an orphaning itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import re
import signal
import socket
import string
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError, UpstreamError

#: the ``metadata`` key that marks a kernelspec as a jumper-proxy kernelspec
METADATA_KEY = "jumper_proxy"
#: a proxy's private directory is ``<tmp>/jumper-proxy-<pid>-<random>`` (0700)
RUNTIME_PREFIX = "jumper-proxy-"
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
_PR_SET_PDEATHSIG = 1
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class KernelCommand:
    """How to start one upstream kernel: a kernelspec's argv (``{connection_file}`` still in
    it), its environment, and what the proxy needs to know of it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    interrupt_mode: str = "signal"
    language: str = "python"
    resource_dir: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def kernel_dirs() -> list[Path]:
    """The directories searched for kernelspecs, in jupyter_client's order."""
    from jupyter_core.paths import get_home_dir, jupyter_path

    dirs = [Path(d) for d in jupyter_path("kernels")]
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(get_home_dir(), ".ipython")
    dirs.append(Path(ipython_dir) / "kernels")
    return dirs


def find_kernelspec(name: str) -> KernelCommand | None:
    """The kernelspec ``name`` (case-insensitive) from the first directory that has it, or
    ipykernel's own ``python3`` of this environment; ``None`` when there is none."""
    wanted = name.lower()
    for base in kernel_dirs():
        with contextlib.suppress(OSError), os.scandir(base) as entries:
            for entry in entries:
                if entry.name.lower() == wanted and (Path(entry.path) / "kernel.json").is_file():
                    return read_kernelspec(Path(entry.path))
    if wanted == "python3" and importlib.util.find_spec("ipykernel") is not None:
        return interpreter_command(sys.executable)
    return None


def read_kernelspec(resource_dir: Path) -> KernelCommand:
    try:
        spec = json.loads((resource_dir / "kernel.json").read_text(encoding="utf-8"))
        return KernelCommand(
            argv=[str(a) for a in spec["argv"]],
            env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
            interrupt_mode=str(spec.get("interrupt_mode", "signal")),
            language=str(spec.get("language", "")),
            resource_dir=str(resource_dir),
            metadata=dict(spec.get("metadata") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot read the kernelspec in {resource_dir}: {exc}") from None


def interpreter_command(python: str) -> KernelCommand:
    """ipykernel in the environment of interpreter ``python``."""
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    return KernelCommand(argv=argv, metadata={"debugger": True})


def command_for(spec: UpstreamSpec) -> KernelCommand:
    """The command of the upstream ``spec``; a ConfigurationError saying why there is none."""
    if spec.python is not None:
        command = interpreter_command(spec.python)
    else:
        name = spec.kernel_name or "python3"
        found = find_kernelspec(name)
        if found is None:
            raise ConfigurationError(f"No kernelspec named {name!r} to wrap.")
        if METADATA_KEY in found.metadata:
            raise ConfigurationError(
                f"Kernelspec {name!r} is a jumper-proxy kernelspec; a proxy cannot wrap a proxy."
            )
        provisioner = found.metadata.get("kernel_provisioner", {})
        wanted = provisioner.get("provisioner_name") if isinstance(provisioner, dict) else None
        if wanted not in (None, "local-provisioner"):
            raise ConfigurationError(
                f"Kernelspec {name!r} asks for the kernel provisioner {wanted!r}; jumper-proxy "
                "starts its kernels as local processes."
            )
        command = found
    if spec.args:  # the upstream arguments, after its own command line
        command = replace(command, argv=[*command.argv, *spec.args])
    return command


@dataclass
class Launched:
    """A started upstream kernel process and its connection."""

    process: subprocess.Popen[bytes]
    connection: dict[str, Any]
    connection_file: Path
    command: KernelCommand


def write_connection(
    runtime_dir: Path, transport: str, key: str, signature_scheme: str
) -> tuple[Path, dict[str, Any]]:
    """A private connection file for the upstream in ``runtime_dir`` (0700)."""
    if transport == "ipc":
        ip = str(runtime_dir / "upstream")
        ports = [n for n in range(1, 64) if not os.path.exists(f"{ip}-{n}")][: len(CHANNELS)]
    else:
        ip = "127.0.0.1"
        ports = _free_ports(len(CHANNELS))
    info: dict[str, Any] = {f"{c}_port": p for c, p in zip(CHANNELS, ports, strict=True)}
    info.update(ip=ip, transport=transport, key=key, signature_scheme=signature_scheme)
    info["kernel_name"] = ""
    path = runtime_dir / "upstream-connection.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    return path, info


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def launch(
    command: KernelCommand,
    runtime_dir: Path,
    transport: str,
    key: str,
    signature_scheme: str,
    cwd: str | None = None,
) -> Launched:
    """Start the kernel of ``command`` on a fresh private connection."""
    path, info = write_connection(runtime_dir, transport, key, signature_scheme)
    env = dict(os.environ)
    env.update({k: string.Template(v).safe_substitute(os.environ) for k, v in command.env.items()})
    env["JPY_PARENT_PID"] = str(os.getpid())
    values = {"connection_file": os.path.realpath(path), "prefix": sys.prefix}
    values["resource_dir"] = command.resource_dir

    def fill(arg: str) -> str:
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group()), arg)

    argv = [os.path.expanduser(fill(a)) for a in command.argv]
    if argv and argv[0] in {
        "python",
        f"python{sys.version_info[0]}",
        "python{}.{}".format(*sys.version_info[:2]),
    }:
        argv[0] = sys.executable  # as jupyter_client does
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group, for interrupts
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        raise UpstreamError(f"Could not start {argv[0]}: {exc.strerror}") from None
    return Launched(process, info, path, command)


def make_runtime_dir() -> Path:
    """The proxy's private directory (0700), named after its pid so that a later proxy can
    remove it if this one dies without cleaning up."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"{RUNTIME_PREFIX}{os.getpid()}-"))


def upstream_spec(kernel_name: str | None, python: str | None) -> UpstreamSpec:
    """The upstream named on the kernel's command line (checked when it is started)."""
    if kernel_name is not None and python is not None:
        raise ConfigurationError(
            "Choose one upstream: --upstream KERNELSPEC or --upstream-python PATH, not both."
        )
    if python is None:
        return UpstreamSpec(kernel_name=kernel_name or "python3")
    import shutil

    found = python if os.sep in python else shutil.which(python)
    if found is None:
        raise ConfigurationError(f"Upstream Python {python!r} is not on PATH.")
    return UpstreamSpec(python=os.path.abspath(found))


def launch_for_proxy(
    spec: UpstreamSpec, connection_file: Path, transport: str
) -> tuple[Path, Launched]:
    """Start the upstream of a proxy serving ``connection_file``: its private directory and
    the started kernel (with the connection's own key and signature scheme)."""
    try:
        info = json.loads(connection_file.read_text())
        key, scheme = str(info.get("key", "")), str(info.get("signature_scheme", "hmac-sha256"))
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"Cannot read connection file {connection_file}: {exc}") from None
    command = command_for(spec)
    runtime_dir = make_runtime_dir()
    try:
        return runtime_dir, launch(command, runtime_dir, transport, key, scheme)
    except BaseException:
        import shutil

        shutil.rmtree(runtime_dir, ignore_errors=True)
        raise


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to send SIGTERM to this (child) process when the proxy dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


__all__ = [
    "METADATA_KEY",
    "RUNTIME_PREFIX",
    "KernelCommand",
    "Launched",
    "command_for",
    "find_kernelspec",
    "launch",
    "launch_for_proxy",
    "make_runtime_dir",
    "read_kernelspec",
    "upstream_spec",
]
