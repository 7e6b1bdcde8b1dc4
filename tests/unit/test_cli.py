"""The command line: kernelspec commands, running the kernel, and how user errors end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jumper_proxy.cli import main
from jumper_proxy.config import ProxyConfig, UpstreamSpec
from jumper_proxy.launch import Launched

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix that jupyter_client searches, and a private user data dir."""
    root = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return root


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> list[ProxyConfig]:
    """A fake ``jumper_proxy.kernel`` whose ``serve_and_exit`` records its config, stops the
    kernel the command line started for it, and exits with 3."""
    calls: list[ProxyConfig] = []

    def serve_and_exit(config: ProxyConfig, runtime_dir: Path, first: Launched) -> None:
        calls.append(config)
        assert first.connection_file.parent == runtime_dir
        first.process.kill()
        first.process.wait()
        if first.process.stdin is not None:
            first.process.stdin.close()
        shutil.rmtree(runtime_dir)
        raise SystemExit(3)

    module = types.ModuleType("jumper_proxy.kernel")
    module.serve_and_exit = serve_and_exit  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jumper_proxy.kernel", module)
    return calls


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def assert_user_error(result: Result, message: str, exit_code: int = 1) -> None:
    """One clear ``Error:`` line last on stderr, no traceback, non-zero exit."""
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    assert message in last


def test_install_list_uninstall(prefix: Path) -> None:
    installed = invoke("install", "--prefix", str(prefix), "--name", "jp-cli")
    assert installed.exit_code == 0, installed.output
    destination = prefix / "share" / "jupyter" / "kernels" / "jp-cli"
    assert installed.stdout == (
        f"Installed kernelspec jp-cli in {destination} (wraps kernelspec 'python3')\n"
    )

    listed = invoke("list")
    assert listed.exit_code == 0
    assert f"jp-cli  wraps kernelspec 'python3'  {destination}" in listed.stdout.splitlines()

    removed = invoke("uninstall", "jp-cli")
    assert removed.exit_code == 0
    assert removed.stdout == f"Removed kernelspec jp-cli from {destination}\n"
    assert not destination.exists()
    assert_user_error(invoke("uninstall", "jp-cli"), "No kernelspec named 'jp-cli'")


def test_install_options_reach_kernel_json(prefix: Path) -> None:
    result = invoke(
        "install",
        "--prefix",
        str(prefix),
        "--display-name",
        "Shown",
        "--upstream-python",
        sys.executable,
        "--env",
        "A=1",
        "--env",
        "B=x=y",
    )

    assert result.exit_code == 0, result.output
    content = json.loads(
        (prefix / "share" / "jupyter" / "kernels" / "jumper-proxy" / "kernel.json").read_text()
    )
    assert content["display_name"] == "Shown"
    assert content["env"] == {"A": "1", "B": "x=y"}
    assert content["argv"][3:5] == ["--upstream-python", sys.executable]


def test_install_errors(prefix: Path, tmp_path: Path) -> None:
    assert_user_error(
        invoke("install", "--prefix", str(prefix), "--upstream", "no-such-kernel"),
        "No kernelspec named 'no-such-kernel' to wrap.",
    )
    assert_user_error(
        invoke("install", "--prefix", str(prefix), "--upstream-python", str(tmp_path / "nope")),
        "does not exist",
    )
    assert_user_error(invoke("install", "--user", "--prefix", str(prefix)), "Choose one location")
    assert_user_error(
        invoke("install", "--upstream", "python3", "--upstream-python", sys.executable),
        "not both",
    )
    assert_user_error(invoke("install", "--env", "NOVALUE"), "expected KEY=VALUE", exit_code=2)


def test_list_leaves_out_other_kernelspecs(prefix: Path) -> None:
    assert invoke("install", "--prefix", str(prefix), "--name", "jp-listed").exit_code == 0

    names = [line.split()[0] for line in invoke("list").stdout.splitlines()]

    assert "jp-listed" in names
    assert "python3" not in names


def test_uninstall_refuses_a_foreign_kernelspec() -> None:
    assert_user_error(invoke("uninstall", "python3"), "is not a jumper-proxy kernelspec")


def test_running_the_kernel_builds_its_config(
    tmp_path: Path, fake_kernel: list[ProxyConfig]
) -> None:
    connection = tmp_path / "kernel-1.json"
    connection.write_text("{}")

    result = invoke("--upstream", "python3", "--debug", "-f", str(connection))

    assert result.exit_code == 3, result.output
    assert fake_kernel == [
        ProxyConfig(
            connection_file=connection,
            upstream=UpstreamSpec(kernel_name="python3"),
            debug=True,
            upstream_transport="ipc",
        )
    ]


def test_running_the_kernel_wrapping_an_interpreter(
    tmp_path: Path, fake_kernel: list[ProxyConfig]
) -> None:
    connection = tmp_path / "kernel-2.json"
    connection.write_text("{}")

    result = invoke("--upstream-python", sys.executable, "-f", str(connection))

    assert result.exit_code == 3, result.output
    assert fake_kernel[0].upstream == UpstreamSpec(python=sys.executable)
    assert fake_kernel[0].debug is False


def test_running_the_kernel_with_upstream_arguments(
    tmp_path: Path, fake_kernel: list[ProxyConfig]
) -> None:
    connection = tmp_path / "kernel-4.json"
    connection.write_text("{}")

    result = invoke(
        "--upstream",
        "python3",
        "--upstream-arg=--HistoryManager.hist_file=:memory:",
        "--upstream-arg",
        "--log-level=DEBUG",
        "-f",
        str(connection),
    )

    assert result.exit_code == 3, result.output
    assert fake_kernel[0].upstream == UpstreamSpec(
        kernel_name="python3",
        args=("--HistoryManager.hist_file=:memory:", "--log-level=DEBUG"),
    )


def test_install_forwards_upstream_arguments(prefix: Path) -> None:
    result = invoke(
        "install", "--prefix", str(prefix), "--upstream-arg=--HistoryManager.hist_file=:memory:"
    )

    assert result.exit_code == 0, result.output
    content = json.loads(
        (prefix / "share" / "jupyter" / "kernels" / "jumper-proxy" / "kernel.json").read_text()
    )
    assert "--upstream-arg=--HistoryManager.hist_file=:memory:" in content["argv"]


def test_kernel_errors(tmp_path: Path, fake_kernel: list[ProxyConfig]) -> None:
    connection = tmp_path / "kernel-3.json"
    assert_user_error(
        invoke("-f", str(connection)), f"Connection file {connection} does not exist."
    )
    connection.write_text("{}")
    assert_user_error(
        invoke("--upstream", "no-such-kernel", "-f", str(connection)),
        "No kernelspec named 'no-such-kernel' to wrap.",
    )
    assert fake_kernel == []


def test_no_command_and_no_connection_file_is_a_usage_error() -> None:
    assert_user_error(invoke(), "Missing -f CONNECTION_FILE", exit_code=2)


def test_kernel_flags_before_a_command_are_a_usage_error() -> None:
    assert_user_error(invoke("--upstream", "python3", "list"), "--upstream belong to", exit_code=2)


def test_run_errors(tmp_path: Path) -> None:
    assert_user_error(
        invoke("run", str(tmp_path / "missing.ipynb")),
        f"Notebook {tmp_path / 'missing.ipynb'} does not exist.",
    )
    garbage = tmp_path / "garbage.ipynb"
    garbage.write_text("not json")
    assert_user_error(invoke("run", str(garbage)), "is not a notebook")
    assert_user_error(
        invoke("run", str(garbage), "--upstream", "no-such-kernel"),
        "No kernelspec named 'no-such-kernel' to wrap.",
    )
    missing = tmp_path / "no-dir" / "report.html"
    assert_user_error(
        invoke("run", str(garbage), "--upstream", "python3", "--html", str(missing)),
        f"Cannot write {missing}: {missing.parent} is not a directory.",
    )


def test_python_dash_m_runs_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jumper_proxy", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Usage: python -m jumper_proxy" in result.stdout
    for command in ("install", "list", "uninstall", "run"):
        assert command in result.stdout
