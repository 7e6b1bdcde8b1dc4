"""Starting the upstream's process: the kernelspec found as jupyter_client finds it, the
private connection file, the command and environment as jupyter_client builds them."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from jumper_proxy import launch
from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError


def kernelspec(root: Path, name: str, **spec: object) -> Path:
    folder = root / "kernels" / name
    folder.mkdir(parents=True)
    spec.setdefault("argv", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    spec.setdefault("display_name", name)
    spec.setdefault("language", "python")
    (folder / "kernel.json").write_text(json.dumps(spec))
    return folder


@pytest.fixture
def jupyter_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(first), str(second)]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return first, second


def test_the_first_directory_on_the_path_wins_case_insensitively(
    jupyter_path: tuple[Path, Path],
) -> None:
    first, second = jupyter_path
    kernelspec(second, "mine", language="second")
    kernelspec(first, "Mine", language="first", interrupt_mode="message", env={"A": "1"})
    command = launch.command_for(UpstreamSpec(kernel_name="mine"))
    assert command.language == "first"
    assert command.interrupt_mode == "message"
    assert command.env == {"A": "1"}


def test_a_missing_kernelspec_and_a_proxy_kernelspec_are_refused(
    jupyter_path: tuple[Path, Path],
) -> None:
    first, _ = jupyter_path
    with pytest.raises(ConfigurationError, match="No kernelspec named 'nothing'"):
        launch.command_for(UpstreamSpec(kernel_name="nothing"))
    kernelspec(first, "proxy", metadata={launch.METADATA_KEY: {"upstream": {}}})
    with pytest.raises(ConfigurationError, match="cannot wrap a proxy"):
        launch.command_for(UpstreamSpec(kernel_name="proxy"))
    provisioned = {"kernel_provisioner": {"provisioner_name": "docker-provisioner"}}
    kernelspec(first, "remote", metadata=provisioned)
    with pytest.raises(ConfigurationError, match="docker-provisioner"):
        launch.command_for(UpstreamSpec(kernel_name="remote"))


def test_python3_is_this_environments_ipykernel(jupyter_path: tuple[Path, Path]) -> None:
    command = launch.command_for(UpstreamSpec(kernel_name="python3"))
    assert command.argv[0] in ("python", sys.executable)  # "python" becomes sys.executable
    assert command.argv[1:3] == ["-m", "ipykernel_launcher"]


def test_the_connection_file_is_private_and_carries_the_key(tmp_path: Path) -> None:
    path, info = launch.write_connection(tmp_path, "ipc", "the-key", "hmac-sha512")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == info
    assert info["key"] == "the-key" and info["signature_scheme"] == "hmac-sha512"
    assert info["ip"] == str(tmp_path / "upstream") and info["transport"] == "ipc"
    ports = [info[f"{c}_port"] for c in launch.CHANNELS]
    assert len(set(ports)) == 5
    _, tcp = launch.write_connection(tmp_path, "tcp", "k", "hmac-sha256")
    assert tcp["ip"] == "127.0.0.1" and all(tcp[f"{c}_port"] > 0 for c in launch.CHANNELS)


def test_the_command_and_environment_are_filled_in_as_jupyter_client_fills_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_file = tmp_path / "seen.json"
    script = (
        "import json, os, sys; "
        f"open({str(seen_file)!r}, 'w').write(json.dumps({{'argv': sys.argv, "
        "'env': os.environ.get('FROM_SPEC'), 'parent': os.environ.get('JPY_PARENT_PID'), "
        "'session': os.getsid(0) == os.getpid()}))"
    )
    monkeypatch.setenv("OUTER", "outside")
    command = launch.KernelCommand(
        argv=["python", "-c", script, "{connection_file}", "{resource_dir}", "{unknown}"],
        env={"FROM_SPEC": "${OUTER}-and-${MISSING}"},
        resource_dir="/the/resources",
    )
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    launched = launch.launch(command, runtime, "ipc", "k", "hmac-sha256")
    assert launched.process.wait(timeout=30) == 0
    assert launched.process.stdin is not None
    launched.process.stdin.close()
    seen = json.loads(seen_file.read_text())
    assert seen["argv"][1:] == [
        os.path.realpath(launched.connection_file),
        "/the/resources",
        "{unknown}",
    ]
    assert seen["env"] == "outside-and-${MISSING}"
    assert seen["parent"] == str(os.getpid())
    assert seen["session"] is True  # its own session: interrupts reach its process group
    assert launched.process.args[0] == sys.executable  # a bare "python" is this interpreter
