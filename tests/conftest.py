"""Shared fixtures: a jumper-proxy kernelspec installed into a temporary prefix, and one
proxy kernel shared by the end-to-end tests that don't need a fresh one."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROXY_KERNEL = "jumper-proxy-test"
#: the proxy kernel whose upstream can import the stand-in ``scorep`` package
SCOREP_KERNEL = "jumper-proxy-scorep-test"
FAKE_SCOREP = ROOT / "tests" / "fake_scorep"


@pytest.fixture(scope="session", autouse=True)
def proxy_kernelspec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Install the proxy kernelspec (wrapping ``python3``) where jupyter_client finds it."""
    from jumper_proxy.config import UpstreamSpec
    from jumper_proxy.kernelspec import install_kernelspec

    prefix = tmp_path_factory.mktemp("prefix")
    upstream = UpstreamSpec(kernel_name="python3")
    install_kernelspec(prefix=str(prefix), name=PROXY_KERNEL, upstream=upstream)
    path = os.pathsep.join([str(FAKE_SCOREP), str(ROOT)])
    install_kernelspec(
        prefix=str(prefix), name=SCOREP_KERNEL, upstream=upstream, env={"PYTHONPATH": path}
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
def python() -> str:
    return sys.executable


@pytest.fixture
def scorep_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stand-in ``scorep`` importable in this process for the test, forgotten afterwards."""
    monkeypatch.syspath_prepend(str(FAKE_SCOREP))
    yield
    for name in [n for n in sys.modules if n == "scorep" or n.startswith("scorep.")]:
        del sys.modules[name]
