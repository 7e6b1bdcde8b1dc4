"""In front of a kernel that is not IPython (bash_kernel): the relay and the monitor work, the
monitoring magics work from the proxy's own records, and the magics that need Python in the
kernel say so in one line. No Python code runs in the bash kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import start_new_kernel
from kernel_helpers import run, stdout

from jumper_proxy.config import UpstreamSpec
from jumper_proxy.kernelspec import install_kernelspec

pytestmark = pytest.mark.e2e

BASH_PROXY = "jumper-proxy-bash-test"


@pytest.fixture(scope="module")
def bash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingKernelClient, Path]]:
    """A proxy in front of bash_kernel, started in a directory of its own."""
    prefix = tmp_path_factory.mktemp("bash-prefix")
    subprocess.run(
        [sys.executable, "-m", "bash_kernel.install", "--prefix", str(prefix)],
        check=True,
        capture_output=True,
    )
    data = str(prefix / "share" / "jupyter")
    with pytest.MonkeyPatch.context() as env:  # the proxy looks the bash kernelspec up too
        env.setenv("JUPYTER_PATH", os.pathsep.join([data, os.environ.get("JUPYTER_PATH", "")]))
        install_kernelspec(
            prefix=str(prefix), name=BASH_PROXY, upstream=UpstreamSpec(kernel_name="bash")
        )
        cwd = tmp_path_factory.mktemp("bash-cwd")
        km, kc = start_new_kernel(kernel_name=BASH_PROXY, startup_timeout=60, cwd=str(cwd))
        try:
            yield kc, cwd
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def error_of(kc: BlockingKernelClient, code: str) -> dict[str, str]:
    reply, msgs = run(kc, code, timeout=30)
    assert reply["content"]["status"] == "error", reply["content"]
    return reply["content"]


def test_bash_cells_run_and_are_monitored(bash: tuple[BlockingKernelClient, Path]) -> None:
    kc, _ = bash
    reply, msgs = run(kc, "echo hello from bash", timeout=30)
    assert reply["content"]["status"] == "ok"
    assert "hello from bash" in stdout(msgs)
    reply, _ = run(kc, "sleep 1.2; echo done", timeout=30)
    assert reply["content"]["status"] == "ok"
    reply, msgs = run(kc, "%%display_code_history", timeout=30)
    assert reply["content"]["status"] == "ok"
    table = next(m for m in msgs if m["msg_type"] == "display_data")["content"]["data"]
    assert "echo hello from bash" in table["text/plain"]
    assert "sleep 1.2" in table["text/plain"]


def test_the_monitoring_magics_work_in_front_of_bash(
    bash: tuple[BlockingKernelClient, Path],
) -> None:
    kc, cwd = bash
    run(kc, "sleep 1.2", timeout=30)
    for magic in ("%%jumper_help", "%%display_graph_for_last", "%%display_code_for_index 0"):
        reply, msgs = run(kc, magic, timeout=60)
        assert reply["content"]["status"] == "ok", (magic, reply["content"])
        assert any(m["msg_type"] in ("stream", "display_data") for m in msgs), magic
    reply, msgs = run(kc, "%%perfdata_to_json bashperf", timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]
    written = json.loads((cwd / "bashperf_perfdata.json").read_text())
    assert written["cells"], "no cells in the export"
    assert json.loads((cwd / "bashperf_code.json").read_text())[0]["code"]
    reply, msgs = run(kc, "echo count", timeout=30)  # the kernel is still fine
    assert "count" in stdout(msgs)


@pytest.mark.parametrize("magic", ["%%perfdata_to_variable perf", "%%execute_with_scorep\necho x"])
def test_magics_that_need_python_say_so(
    bash: tuple[BlockingKernelClient, Path], magic: str
) -> None:
    kc, _ = bash
    error = error_of(kc, magic)
    assert error["evalue"].endswith("this kernel is bash, not IPython."), error
    assert "HiddenExecutionError" not in json.dumps(error)
    reply, msgs = run(kc, "echo still here", timeout=30)
    assert "still here" in stdout(msgs)


def test_installing_in_front_of_bash_names_the_magics_it_lacks(
    tmp_path: Path, bash: tuple[BlockingKernelClient, Path]
) -> None:
    from click.testing import CliRunner

    from jumper_proxy.cli import main

    result = CliRunner().invoke(
        main, ["install", "--prefix", str(tmp_path), "--name", "jp-bash-2", "--upstream", "bash"]
    )
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1
    assert "%%perfdata_to_variable" in notes[0] and "%%execute_with_scorep" in notes[0]
    assert "%%display_graph_for_last" not in notes[0]
    python = CliRunner().invoke(
        main, ["install", "--prefix", str(tmp_path), "--name", "jp-py", "--upstream", "python3"]
    )
    assert "Note:" not in python.stderr
