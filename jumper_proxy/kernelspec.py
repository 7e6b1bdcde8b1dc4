"""Kernelspecs: resolving which upstream kernel the proxy wraps, and writing, finding and
removing the kernelspecs that start the proxy.

A jumper-proxy kernelspec is recognised by the ``jumper_proxy`` key in its ``metadata``; that key
also records the upstream (``{"kernel_name": ...}`` or ``{"python": ...}``, with ``"args"`` when
arguments are forwarded to it). Kernelspec directories are written readable by everyone, as
ipykernel writes its own (within the umask), so a ``--sys-prefix`` or ``--prefix`` install serves
every user of a JupyterHub; the logos are shipped inside the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from jumper_proxy import __version__
from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError
from jumper_proxy.launch import METADATA_KEY, command_for

DEFAULT_NAME = "jumper-proxy"
DEFAULT_UPSTREAM = "python3"
#: the logos copied into every kernelspec, package data in ``jumper_proxy/resources``
LOGO_FILES = ("logo-32x32.png", "logo-64x64.png")
#: how long an interpreter may take to ``import ipykernel`` before we give up on it
IMPORT_CHECK_TIMEOUT = 30.0
#: asks an interpreter whether the kernelspec its ipykernel writes declares the debugger
_DEBUGGER_PROBE = (
    "from ipykernel.kernelspec import get_kernel_dict\n"
    "print(get_kernel_dict().get('metadata', {}).get('debugger') is True)"
)


@dataclass(frozen=True)
class InstalledKernelspec:
    """A jumper-proxy kernelspec found on the Jupyter path."""

    name: str
    resource_dir: Path
    display_name: str
    #: ``None`` when the metadata does not name an upstream in a form we understand
    upstream: UpstreamSpec | None


def resolve_upstream(
    kernel_name: str | None, python: str | None, args: Sequence[str] = ()
) -> UpstreamSpec:
    """Check the user's choice of upstream and return it; ``python3`` when neither is given.

    A kernelspec must exist and must not be a jumper-proxy kernelspec itself. An interpreter
    is looked up on ``PATH`` when given without a directory, made absolute (symlinks are kept:
    a virtualenv's ``python`` is one) and must be able to ``import ipykernel``. ``args`` are
    passed to the upstream kernel after its own command line.
    """
    if kernel_name is not None and python is not None:
        raise ConfigurationError(
            "Choose one upstream: --upstream KERNELSPEC or --upstream-python PATH, not both."
        )
    if python is not None:
        return UpstreamSpec(python=_check_interpreter(python), args=tuple(args))
    name = _check_kernel_name(kernel_name or DEFAULT_UPSTREAM)
    return UpstreamSpec(kernel_name=name, args=tuple(args))


def _check_kernel_name(name: str) -> str:
    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        available = sorted(
            other
            for other, info in manager.get_all_specs().items()
            if METADATA_KEY not in info["spec"].get("metadata", {})
        )
        listing = ", ".join(available) if available else "none"
        raise ConfigurationError(
            f"No kernelspec named {name!r} to wrap. Available kernelspecs: {listing}."
        ) from None
    if METADATA_KEY in spec.metadata:
        wrapped = upstream_from_metadata(spec.metadata)
        hint = f" (it wraps {wrapped.describe()})" if wrapped is not None else ""
        raise ConfigurationError(
            f"Kernelspec {name!r} is a jumper-proxy kernelspec{hint}; "
            "a proxy cannot wrap a proxy. Name the kernel it should wrap instead."
        )
    return name


def _check_interpreter(python: str) -> str:
    given = python
    if os.sep not in python and (os.altsep is None or os.altsep not in python):
        found = shutil.which(python)
        if found is None:
            raise ConfigurationError(f"Upstream Python {given!r} is not on PATH.")
        python = found
    path = os.path.abspath(python)
    if not os.path.exists(path):
        raise ConfigurationError(f"Upstream Python {path} does not exist.")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise ConfigurationError(f"Upstream Python {path} is not an executable file.")
    hint = f"install it with: {path} -m pip install ipykernel"
    try:
        result = subprocess.run(
            [path, "-c", "import ipykernel"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=IMPORT_CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigurationError(
            f"Upstream Python {path} did not import ipykernel within {IMPORT_CHECK_TIMEOUT:g} s."
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"Upstream Python {path} cannot be run: {exc.strerror}.") from None
    if result.returncode != 0:
        raise ConfigurationError(f"Upstream Python {path} cannot import ipykernel; {hint}")
    return path


def upstream_for_notebook(kernel_name: str | None) -> UpstreamSpec:
    """The upstream for a notebook saved with kernelspec ``kernel_name``, checked as
    :func:`resolve_upstream` checks it: what a jumper-proxy kernelspec of that name wraps
    (with the arguments it forwards), the kernelspec itself if it is another installed one,
    else ``python3``."""
    if kernel_name:
        try:
            spec = KernelSpecManager().get_kernel_spec(kernel_name)
        except NoSuchKernel:
            spec = None
        if spec is not None:
            wrapped = upstream_from_metadata(spec.metadata)
            if wrapped is not None:
                return resolve_upstream(wrapped.kernel_name, wrapped.python, wrapped.args)
            if METADATA_KEY not in spec.metadata:
                return resolve_upstream(kernel_name, None)
    return resolve_upstream(None, None)


def upstream_from_metadata(metadata: Mapping[str, Any]) -> UpstreamSpec | None:
    """The upstream recorded in a kernelspec's metadata, or ``None`` if it is not ours."""
    ours = metadata.get(METADATA_KEY)
    if not isinstance(ours, Mapping):
        return None
    upstream = ours.get("upstream")
    if not isinstance(upstream, Mapping):
        return None
    kernel_name, python = upstream.get("kernel_name"), upstream.get("python")
    args = upstream.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        return None
    if isinstance(kernel_name, str) and python is None:
        return UpstreamSpec(kernel_name=kernel_name, args=tuple(args))
    if isinstance(python, str) and kernel_name is None:
        return UpstreamSpec(python=python, args=tuple(args))
    return None


def is_ipython_upstream(upstream: UpstreamSpec) -> bool:
    """Whether the upstream is ipykernel (so IPython's options such as
    ``--HistoryManager.hist_file`` apply and its magics run Python): its command, as the
    proxy will start it, runs ipykernel. ``False`` for an upstream that cannot be found."""
    try:
        command = command_for(upstream)
    except ConfigurationError:
        return False
    return any("ipykernel" in part for part in command.argv)


def kernel_argv(upstream: UpstreamSpec, *, debug: bool = False) -> list[str]:
    """The command line that starts the proxy with this interpreter, wrapping ``upstream``."""
    if upstream.python is not None:
        choice = ["--upstream-python", upstream.python]
    else:
        choice = ["--upstream", upstream.kernel_name or DEFAULT_UPSTREAM]
    # one token each, so that an argument that starts with "--" stays the option's value
    choice += [f"--upstream-arg={arg}" for arg in upstream.args]
    flags = ["--debug"] if debug else []
    return [sys.executable, "-m", "jumper_proxy", *flags, *choice, "-f", "{connection_file}"]


def kernel_json(
    upstream: UpstreamSpec,
    *,
    display_name: str | None = None,
    env: Mapping[str, str] | None = None,
    debug: bool = False,
) -> dict[str, Any]:
    """The content of ``kernel.json`` for a proxy wrapping ``upstream``.

    ``metadata.debugger`` (which JupyterLab reads to offer its debugger) is set when the
    upstream declares it: a kernelspec in its own metadata, an interpreter in the kernelspec
    its ipykernel would write.
    """
    recorded: dict[str, Any]
    if upstream.python is not None:
        language = "python"
        default_display = f"Python [{_environment_name(upstream.python)}] (jumper-proxy)"
        recorded = {"python": upstream.python}
        debugger = _interpreter_declares_debugger(upstream.python)
    else:
        name = upstream.kernel_name or DEFAULT_UPSTREAM
        try:
            spec = KernelSpecManager().get_kernel_spec(name)
        except NoSuchKernel:
            raise ConfigurationError(f"No kernelspec named {name!r} to wrap.") from None
        language = spec.language
        shown = spec.display_name.removesuffix(" (ipykernel)") or name
        default_display = f"{shown} (jumper-proxy)"
        recorded = {"kernel_name": name}
        debugger = spec.metadata.get("debugger") is True
    if upstream.args:
        recorded["args"] = list(upstream.args)
    metadata: dict[str, Any] = {METADATA_KEY: {"upstream": recorded, "version": __version__}}
    if debugger:
        metadata["debugger"] = True
    content: dict[str, Any] = {
        "argv": kernel_argv(upstream, debug=debug),
        "display_name": display_name or default_display,
        "language": language,
        "interrupt_mode": "message",
        "metadata": metadata,
    }
    if env:
        content["env"] = dict(env)
    return content


def _interpreter_declares_debugger(python: str) -> bool:
    try:
        result = subprocess.run(
            [python, "-c", _DEBUGGER_PROBE],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=IMPORT_CHECK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def _environment_name(python: str) -> str:
    """A short name for the environment an interpreter belongs to (``.../torch/bin/python``
    is ``torch``)."""
    directory = Path(python).parent
    if directory.name in ("bin", "Scripts") and directory.parent.name:
        return directory.parent.name
    return str(directory)


def write_kernelspec(directory: Path, content: Mapping[str, Any]) -> None:
    """Write ``kernel.json`` and the logos into ``directory`` (which must exist)."""
    (directory / "kernel.json").write_text(json.dumps(content, indent=1) + "\n")
    resources = files("jumper_proxy").joinpath("resources")
    for logo in LOGO_FILES:
        (directory / logo).write_bytes(resources.joinpath(logo).read_bytes())


def install_kernelspec(
    *,
    user: bool = False,
    prefix: str | None = None,
    sys_prefix: bool = False,
    name: str = DEFAULT_NAME,
    display_name: str | None = None,
    upstream: UpstreamSpec,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Install a kernelspec that starts the proxy wrapping ``upstream``; return its directory.

    Where it goes mirrors ``python -m ipykernel install``: system-wide by default, the user's
    Jupyter data directory with ``user``, ``PREFIX/share/jupyter/kernels`` with ``prefix``,
    and this interpreter's ``sys.prefix`` with ``sys_prefix``. An existing kernelspec of the
    same name is replaced.
    """
    if sum((user, prefix is not None, sys_prefix)) > 1:
        raise ConfigurationError("Choose one location: --user, --sys-prefix or --prefix DIR.")
    if not _valid_name(name):
        raise ConfigurationError(
            f"Invalid kernelspec name {name!r}: use letters, digits, '.', '_' and '-'."
        )
    if sys_prefix:
        prefix = sys.prefix
    content = kernel_json(upstream, display_name=display_name, env=env)
    with tempfile.TemporaryDirectory(prefix="jumper-proxy-kernelspec-") as private:
        # The directory is copied with its mode: not the 0700 of a temporary directory, but
        # what a new directory gets (0755 with the usual umask), as with ipykernel's.
        staging = Path(private) / "kernelspec"
        staging.mkdir()
        write_kernelspec(staging, content)
        try:
            destination = KernelSpecManager().install_kernel_spec(
                str(staging), name.lower(), user=user, prefix=prefix
            )
        except OSError as exc:
            where = exc.filename or "the kernelspec directory"
            raise ConfigurationError(
                f"Cannot write the kernelspec to {where}: {exc.strerror}. "
                "Try --user, --sys-prefix or --prefix DIR."
            ) from None
    return Path(destination)


def _valid_name(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def list_kernelspecs() -> list[InstalledKernelspec]:
    """The jumper-proxy kernelspecs on the Jupyter path, sorted by name."""
    found = []
    for name, info in KernelSpecManager().get_all_specs().items():
        spec = info["spec"]
        metadata = spec.get("metadata", {})
        if METADATA_KEY not in metadata:
            continue
        found.append(
            InstalledKernelspec(
                name=name,
                resource_dir=Path(info["resource_dir"]),
                display_name=spec.get("display_name", name),
                upstream=upstream_from_metadata(metadata),
            )
        )
    return sorted(found, key=lambda installed: installed.name)


def uninstall_kernelspec(name: str) -> Path:
    """Remove the jumper-proxy kernelspec ``name``; return the directory that was removed."""
    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(name)
    except NoSuchKernel:
        raise ConfigurationError(f"No kernelspec named {name!r}.") from None
    if METADATA_KEY not in spec.metadata:
        raise ConfigurationError(
            f"Kernelspec {name!r} is not a jumper-proxy kernelspec; "
            f"remove it with: jupyter kernelspec remove {name}"
        )
    try:
        removed = manager.remove_kernel_spec(name)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot remove kernelspec {name!r} from {spec.resource_dir}: {exc.strerror}."
        ) from None
    return Path(removed)
