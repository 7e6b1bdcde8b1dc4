"""The peers' environments and kernelspecs: each peer from PyPI, pinned, in a venv of its own.

* JUmPER (``jumper-kernel``): ``benchmarks/.peers-venv``, its kernelspec by its own installer
  (see ``bench_peers.py``);
* jumper-extension: ``benchmarks/.peers-venv-extension``. The package does not depend on
  ipykernel (it is an IPython extension), so ipykernel is installed beside it, at this
  environment's version; its kernelspec is ipykernel with the extension loaded and its monitor
  started at 2 Hz (``--InteractiveShellApp.extensions=jumper_extension``,
  ``--InteractiveShellApp.exec_lines=%perfmonitor_start 0.5``);
* jumper-wrapper-kernel: ``benchmarks/.peers-venv-wrapper``; its kernelspec is the one its
  ``%wrap_kernel python3 --save`` writes (``--JumperWrapperKernel.auto_wrap_kernel=python3``),
  written here into the run's own Jupyter data directory instead of the user's.

Both jumper-extension kernels write their logs to ``JUMPER_LOG_DIR`` (set in the kernelspec to
the run's directory; without it, every kernel start leaves a ``jumper_logs_*`` directory in
the home directory).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kernels import on_jupyter_path

HERE = Path(__file__).resolve().parent
EXTENSION_KERNEL = "jumper-extension-bench"
WRAPPER_KERNEL = "jumper-wrapper-bench"
EXTENSION_PACKAGE = "jumper-extension==0.4.1"
WRAPPER_PACKAGE = "jumper-wrapper-kernel==0.1.2"


@dataclass(frozen=True)
class PeerVenv:
    """A virtual environment holding ``requirements`` (each ``name==version``)."""

    directory: Path
    requirements: tuple[str, ...]

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    def installed(self, package: str) -> str | None:
        """The version of ``package`` in this environment, ``None`` when it is not there."""
        if not self.python.exists():
            return None
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        found = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True)
        return found.stdout.strip() if found.returncode == 0 else None

    def requires(self, package: str) -> list[str]:
        """What ``package`` declares it needs (its ``Requires-Dist``)."""
        code = f"import importlib.metadata as m; print('\\n'.join(m.requires({package!r}) or []))"
        found = subprocess.run(
            [str(self.python), "-c", code], capture_output=True, text=True, check=True
        )
        return found.stdout.split("\n")[:-1]

    def ensure(self) -> dict[str, str]:
        """Create the environment and install what is missing or at another version; the
        versions installed."""
        if not self.python.exists():
            print(f"creating {self.directory} ...", flush=True)
            subprocess.run(["python3", "-m", "venv", str(self.directory)], check=True)
        missing = [r for r in self.requirements if self.installed(_name(r)) != _version(r)]
        if missing:
            print(f"installing {' '.join(missing)} from PyPI ...", flush=True)
            pip = [str(self.python), "-m", "pip", "install", "--quiet"]
            subprocess.run([*pip, "--disable-pip-version-check", *missing], check=True)
        versions = {_name(r): self.installed(_name(r)) for r in self.requirements}
        wrong = [r for r in self.requirements if versions[_name(r)] != _version(r)]
        if wrong:
            raise SystemExit(f"{' '.join(wrong)} could not be installed in {self.directory}")
        return {name: version for name, version in versions.items() if version}


def _name(requirement: str) -> str:
    return requirement.split("==")[0]


def _version(requirement: str) -> str:
    return requirement.split("==")[1]


EXTENSION = PeerVenv(
    HERE / ".peers-venv-extension",
    (EXTENSION_PACKAGE, f"ipykernel=={metadata.version('ipykernel')}"),
)
WRAPPER = PeerVenv(HERE / ".peers-venv-wrapper", (WRAPPER_PACKAGE,))


def extension_argv(python: Path) -> list[str]:
    return [
        str(python),
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "--InteractiveShellApp.extensions=jumper_extension",
        "--InteractiveShellApp.exec_lines=%perfmonitor_start 0.5",
    ]


def wrapper_argv(python: Path) -> list[str]:
    return [
        str(python),
        "-m",
        "jumper_wrapper_kernel",
        "-f",
        "{connection_file}",
        "--JumperWrapperKernel.auto_wrap_kernel=python3",
    ]


def write_kernelspec(
    data_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None
) -> dict[str, object]:
    spec: dict[str, object] = {"argv": argv, "display_name": name, "language": "python"}
    if env:
        spec["env"] = env
    directory = data_dir / "kernels" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec


@contextlib.contextmanager
def peer_kernelspecs(work: Path) -> Iterator[dict[str, dict[str, object]]]:
    """The extension's and the wrapper's environments made ready and their kernelspecs written
    into ``work``, on ``JUPYTER_PATH`` meanwhile; what the run used, per kernelspec name."""
    versions = {"extension": EXTENSION.ensure(), "wrapper": WRAPPER.ensure()}
    data_dir = work / "peers-share" / "jupyter"
    logs = {"JUMPER_LOG_DIR": str(work / "jumper-extension-logs")}
    specs = {
        EXTENSION_KERNEL: write_kernelspec(
            data_dir, EXTENSION_KERNEL, extension_argv(EXTENSION.python), logs
        ),
        WRAPPER_KERNEL: write_kernelspec(
            data_dir, WRAPPER_KERNEL, wrapper_argv(WRAPPER.python), logs
        ),
    }
    requires = EXTENSION.requires(_name(EXTENSION_PACKAGE))
    used = {
        EXTENSION_KERNEL: {
            **specs[EXTENSION_KERNEL],
            "installed": versions["extension"],
            "declares_ipykernel": any(r.startswith("ipykernel") for r in requires),
        },
        WRAPPER_KERNEL: {**specs[WRAPPER_KERNEL], "installed": versions["wrapper"]},
    }
    with on_jupyter_path(str(data_dir)):
        yield used
