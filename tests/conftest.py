"""Shared fixtures: jumper-proxy kernelspecs installed into a temporary prefix, and the tier of
tests that run real Score-P.

Kernelspecs (all wrap this interpreter's ``python3`` kernel unless said otherwise):

* ``PROXY_KERNEL``: the plain proxy, with this process's environment;
* ``SCOREP_KERNEL``: the proxy whose kernel has Score-P's ``bin`` directory first on PATH, so
  ``python -m scorep`` runs the real bindings (installed in this interpreter's environment);
* ``NO_SCOREP_CONFIG_KERNEL``: the real bindings importable, but no ``scorep-config`` on PATH
  (Score-P not loaded, the ``module load`` case);
* ``no_scorep_kernel`` (a fixture): the upstream is a virtual environment made for the test run
  that has everything of this one except the Score-P bindings.

Tests marked ``real_scorep`` need Score-P (``scorep-config``), the bindings, pycubexr and the
OTF2 bindings; without them they are skipped, and the summary at the end says why. ``make
test`` installs all of it when ``../shared`` holds the Score-P installer.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROXY_KERNEL = "jumper-proxy-test"
#: the proxy kernel whose upstream runs the real Score-P bindings
SCOREP_KERNEL = "jumper-proxy-scorep-test"
#: the proxy kernel whose upstream has the bindings but no scorep-config on PATH
NO_SCOREP_CONFIG_KERNEL = "jumper-proxy-no-scorep-config-test"
#: the proxy kernel whose upstream environment has no Score-P bindings at all
NO_SCOREP_KERNEL = "jumper-proxy-no-scorep-test"
#: the FAKE Score-P bindings, for fast unit tests only
FAKE_SCOREP = ROOT / "tests" / "fake_scorep"
#: where Score-P is looked for when scorep-config is not on PATH
SCOREP_PREFIX = Path(os.environ.get("SCOREP_PREFIX", "/opt/scorep"))

REAL_SCOREP = "real_scorep"


@functools.cache
def scorep_bin() -> Path | None:
    """The directory of ``scorep-config``: on PATH, or under SCOREP_PREFIX."""
    found = shutil.which("scorep-config") or shutil.which(
        "scorep-config", path=str(SCOREP_PREFIX / "bin")
    )
    return Path(found).resolve().parent if found else None


@functools.cache
def real_scorep_missing() -> str | None:
    """Why the real-Score-P tier cannot run here, or ``None`` when it can."""
    if scorep_bin() is None:
        return (
            f"no Score-P installation (scorep-config is neither on PATH nor in {SCOREP_PREFIX}"
            "/bin; `make test` installs it from ../shared/scorep when ../shared is there)"
        )
    for module, hint in (
        ("scorep", "PATH=/opt/scorep/bin:$PATH .venv/bin/pip install scorep"),
        ("pycubexr", "pip install pycubexr"),
        ("otf2", "pip install otf2"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed in {sys.prefix} ({hint})"
    return None


def without_scorep_on_path(path: str) -> str:
    """``path`` without the directories that hold a ``scorep-config``."""
    kept = [p for p in path.split(os.pathsep) if p and not (Path(p) / "scorep-config").exists()]
    return os.pathsep.join(kept)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{REAL_SCOREP}: runs real Score-P (skipped, with the reason, without it)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = real_scorep_missing()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"real Score-P tier skipped: {reason}")
    for item in items:
        if item.get_closest_marker(REAL_SCOREP) is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on the real-Score-P tier: how many of its tests ran, or why it was skipped."""
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if REAL_SCOREP not in getattr(report, "keywords", {}):
                continue
            if report.when == "call" or (report.when == "setup" and outcome != "passed"):
                counts[outcome] = counts.get(outcome, 0) + 1
    reason = real_scorep_missing()
    if reason is not None:
        line = f"real Score-P tier SKIPPED ({counts.get('skipped', 0)} tests): {reason}"
    else:
        ran = counts.get("passed", 0) + counts.get("failed", 0)
        details = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
        line = (
            f"real Score-P tier: {ran} tests ran against Score-P in {scorep_bin()} "
            f"({details or 'none selected'})"
        )
    terminalreporter.write_sep("=", line)


@pytest.fixture(scope="session", autouse=True)
def proxy_kernelspec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install the proxy kernelspecs where jupyter_client finds them."""
    from jumper_proxy.config import UpstreamSpec
    from jumper_proxy.kernelspec import install_kernelspec

    prefix = tmp_path_factory.mktemp("prefix")
    upstream = UpstreamSpec(kernel_name="python3")
    install_kernelspec(prefix=str(prefix), name=PROXY_KERNEL, upstream=upstream)
    path = os.environ.get("PATH", os.defpath)
    bin_dir = scorep_bin()
    with_scorep = os.pathsep.join([str(bin_dir), path]) if bin_dir else path
    install_kernelspec(
        prefix=str(prefix), name=SCOREP_KERNEL, upstream=upstream, env={"PATH": with_scorep}
    )
    install_kernelspec(
        prefix=str(prefix),
        name=NO_SCOREP_CONFIG_KERNEL,
        upstream=upstream,
        env={"PATH": without_scorep_on_path(path)},
    )
    data = prefix / "share" / "jupyter"
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(data), old) if p)
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    yield PROXY_KERNEL
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.fixture(scope="session")
def no_scorep_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Python of a virtual environment with everything of this one except the Score-P
    bindings (its site-packages link to this one's, ``scorep`` left out)."""
    env = tmp_path_factory.mktemp("no-scorep-env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name == "scorep" or entry.name.startswith(("scorep-", "scorep.")):
            continue
        target = Path(site) / entry.name
        if not target.exists():
            target.symlink_to(entry)
    return str(python)


@pytest.fixture(scope="session")
def no_scorep_kernel(no_scorep_python: str, proxy_kernelspec: str) -> str:
    """A proxy kernelspec whose upstream is :func:`no_scorep_python`."""
    from jumper_proxy.config import UpstreamSpec
    from jumper_proxy.kernelspec import install_kernelspec

    prefix = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]).parent.parent
    install_kernelspec(
        prefix=str(prefix), name=NO_SCOREP_KERNEL, upstream=UpstreamSpec(python=no_scorep_python)
    )
    return NO_SCOREP_KERNEL


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture
def scorep_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The FAKE ``scorep`` importable in this process for the test, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(FAKE_SCOREP))
    yield
    for name in [n for n in sys.modules if n == "scorep" or n.startswith("scorep.")]:
        del sys.modules[name]
