"""Writing, finding and removing kernelspecs, and checking the upstream a user names."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from jumper_proxy import kernelspec
from jumper_proxy.config import UpstreamSpec
from jumper_proxy.errors import ConfigurationError
from jumper_proxy.kernelspec import (
    install_kernelspec,
    is_ipython_upstream,
    kernel_argv,
    list_kernelspecs,
    resolve_upstream,
    uninstall_kernelspec,
    upstream_for_notebook,
    upstream_from_metadata,
)

PYTHON3 = UpstreamSpec(kernel_name="python3")


@pytest.fixture
def prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix that jupyter_client searches, and a private user data dir."""
    root = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", str(root / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return root


def _kernel_json(directory: Path) -> dict[str, object]:
    content = json.loads((directory / "kernel.json").read_text())
    assert isinstance(content, dict)
    return content


def _write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _foreign_kernelspec(prefix: Path, name: str) -> Path:
    directory = prefix / "share" / "jupyter" / "kernels" / name
    directory.mkdir(parents=True)
    (directory / "kernel.json").write_text(
        json.dumps({"argv": ["true", "{connection_file}"], "display_name": name, "language": "x"})
    )
    return directory


def test_install_writes_a_kernelspec_wrapping_a_kernelspec(prefix: Path) -> None:
    destination = install_kernelspec(prefix=str(prefix), upstream=PYTHON3)

    assert destination == prefix / "share" / "jupyter" / "kernels" / "jumper-proxy"
    content = _kernel_json(destination)
    assert content["argv"] == [
        sys.executable,
        "-m",
        "jumper_proxy",
        "--upstream",
        "python3",
        "-f",
        "{connection_file}",
    ]
    assert content["interrupt_mode"] == "message"
    assert content["language"] == "python"
    assert content["display_name"] == "Python 3 (jumper-proxy)"
    assert content["metadata"] == {
        "jumper_proxy": {"upstream": {"kernel_name": "python3"}, "version": "0.1.0"},
        "debugger": True,  # as ipykernel's python3 kernelspec declares: JupyterLab's debugger
    }
    assert "env" not in content
    for logo in ("logo-32x32.png", "logo-64x64.png"):
        assert (destination / logo).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_install_wrapping_an_interpreter_with_env_and_display_name(prefix: Path) -> None:
    python = UpstreamSpec(python=sys.executable)

    destination = install_kernelspec(
        prefix=str(prefix),
        name="Mine",
        display_name="My env",
        upstream=python,
        env={"OMP_NUM_THREADS": "4"},
    )

    assert destination.name == "mine"
    content = _kernel_json(destination)
    assert content["argv"] == [
        sys.executable,
        "-m",
        "jumper_proxy",
        "--upstream-python",
        sys.executable,
        "-f",
        "{connection_file}",
    ]
    assert content["display_name"] == "My env"
    assert content["language"] == "python"
    assert content["env"] == {"OMP_NUM_THREADS": "4"}
    assert upstream_from_metadata(content["metadata"]) == python  # type: ignore[arg-type]


def test_default_display_name_for_an_interpreter_names_its_environment(prefix: Path) -> None:
    content = kernelspec.kernel_json(UpstreamSpec(python="/opt/envs/torch/bin/python"))

    assert content["display_name"] == "Python [torch] (jumper-proxy)"


def test_install_replaces_a_kernelspec_of_the_same_name(prefix: Path) -> None:
    install_kernelspec(prefix=str(prefix), upstream=PYTHON3, display_name="first")
    destination = install_kernelspec(prefix=str(prefix), upstream=PYTHON3, display_name="second")

    assert _kernel_json(destination)["display_name"] == "second"


def test_install_rejects_two_locations_and_bad_names(prefix: Path) -> None:
    with pytest.raises(ConfigurationError, match="Choose one location"):
        install_kernelspec(user=True, prefix=str(prefix), upstream=PYTHON3)
    with pytest.raises(ConfigurationError, match="Invalid kernelspec name 'a b'"):
        install_kernelspec(prefix=str(prefix), name="a b", upstream=PYTHON3)


def test_list_shows_only_jumper_proxy_kernelspecs(prefix: Path) -> None:
    install_kernelspec(prefix=str(prefix), name="jp-one", upstream=PYTHON3)
    install_kernelspec(
        prefix=str(prefix), name="jp-two", upstream=UpstreamSpec(python=sys.executable)
    )
    _foreign_kernelspec(prefix, "foreign")

    found = {spec.name: spec for spec in list_kernelspecs()}

    assert "foreign" not in found
    assert found["jp-one"].upstream == PYTHON3
    assert found["jp-one"].display_name == "Python 3 (jumper-proxy)"
    assert found["jp-one"].resource_dir == prefix / "share" / "jupyter" / "kernels" / "jp-one"
    assert found["jp-two"].upstream == UpstreamSpec(python=sys.executable)


def test_uninstall_removes_ours_and_refuses_others(prefix: Path) -> None:
    destination = install_kernelspec(prefix=str(prefix), upstream=PYTHON3)
    foreign = _foreign_kernelspec(prefix, "foreign")

    assert uninstall_kernelspec("jumper-proxy") == destination
    assert not destination.exists()
    with pytest.raises(ConfigurationError, match="No kernelspec named 'jumper-proxy'"):
        uninstall_kernelspec("jumper-proxy")
    with pytest.raises(ConfigurationError, match="'foreign' is not a jumper-proxy kernelspec"):
        uninstall_kernelspec("foreign")
    assert foreign.is_dir()


def test_resolve_defaults_to_python3() -> None:
    assert resolve_upstream(None, None) == PYTHON3


def test_resolve_unknown_kernelspec_names_the_available_ones(prefix: Path) -> None:
    install_kernelspec(prefix=str(prefix), upstream=PYTHON3)

    with pytest.raises(ConfigurationError) as caught:
        resolve_upstream("no-such-kernel", None)

    message = str(caught.value)
    assert message.startswith("No kernelspec named 'no-such-kernel' to wrap.")
    assert "python3" in message
    assert "jumper-proxy" not in message.split("Available kernelspecs:")[1]


def test_resolve_refuses_to_wrap_a_jumper_proxy_kernelspec(prefix: Path) -> None:
    install_kernelspec(prefix=str(prefix), name="jp", upstream=PYTHON3)

    with pytest.raises(ConfigurationError, match="'jp' is a jumper-proxy kernelspec"):
        resolve_upstream("jp", None)


def test_resolve_refuses_both_choices() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        resolve_upstream("python3", sys.executable)


def test_resolve_accepts_this_interpreter() -> None:
    assert resolve_upstream(None, sys.executable) == UpstreamSpec(python=sys.executable)


@pytest.fixture(scope="module")
def linked_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv whose ``bin/python`` is a symlink and which sees this environment's
    packages (ipykernel) only through a ``.pth`` file in its own site-packages."""
    root = tmp_path_factory.mktemp("linked") / "env"
    venv.create(root, with_pip=False, symlinks=True)
    (site_packages,) = root.glob("lib/python*/site-packages")
    (site_packages / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def test_resolve_keeps_symlinks(linked_env: Path) -> None:
    python = linked_env / "bin" / "python"
    assert python.is_symlink()

    assert resolve_upstream(None, str(python)) == UpstreamSpec(python=str(python))


def test_resolve_makes_a_relative_path_absolute(
    linked_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(linked_env)

    assert resolve_upstream(None, "bin/python") == UpstreamSpec(
        python=str(linked_env / "bin" / "python")
    )


def test_resolve_looks_a_bare_name_up_on_path(
    linked_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(linked_env / "bin"))

    assert resolve_upstream(None, "python") == UpstreamSpec(
        python=str(linked_env / "bin" / "python")
    )
    with pytest.raises(ConfigurationError, match="'nopython' is not on PATH"):
        resolve_upstream(None, "nopython")


def test_resolve_missing_interpreter(tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "python"

    with pytest.raises(ConfigurationError, match=re.escape(f"{missing} does not exist")):
        resolve_upstream(None, str(missing))


def test_resolve_file_that_is_not_executable(tmp_path: Path) -> None:
    plain = tmp_path / "python"
    plain.write_text("")

    with pytest.raises(ConfigurationError, match="is not an executable file"):
        resolve_upstream(None, str(plain))


def test_resolve_fake_interpreter_that_cannot_import_ipykernel(tmp_path: Path) -> None:
    fake = _write_script(tmp_path / "fake-python", "exit 1")

    with pytest.raises(ConfigurationError) as caught:
        resolve_upstream(None, str(fake))

    assert str(caught.value) == (
        f"Upstream Python {fake} cannot import ipykernel; "
        f"install it with: {fake} -m pip install ipykernel"
    )


def test_resolve_real_environment_without_ipykernel(tmp_path: Path) -> None:
    venv.create(tmp_path / "bare", with_pip=False, symlinks=True)
    python = tmp_path / "bare" / "bin" / "python"

    with pytest.raises(ConfigurationError, match=re.escape(f"{python} cannot import ipykernel")):
        resolve_upstream(None, str(python))


def test_resolve_fake_interpreter_that_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _write_script(tmp_path / "slow-python", "exec sleep 30")
    monkeypatch.setattr(kernelspec, "IMPORT_CHECK_TIMEOUT", 0.5)

    with pytest.raises(ConfigurationError, match=r"did not import ipykernel within 0\.5 s"):
        resolve_upstream(None, str(fake))


def test_upstream_for_notebook(prefix: Path) -> None:
    install_kernelspec(
        prefix=str(prefix), name="jp-python", upstream=UpstreamSpec(python=sys.executable)
    )

    assert upstream_for_notebook("jp-python") == UpstreamSpec(python=sys.executable)
    assert upstream_for_notebook("python3") == PYTHON3
    assert upstream_for_notebook("not-installed") == PYTHON3
    assert upstream_for_notebook(None) == PYTHON3


def test_upstream_from_metadata_ignores_what_it_does_not_understand() -> None:
    assert upstream_from_metadata({}) is None
    assert upstream_from_metadata({"jumper_proxy": {"upstream": "python3"}}) is None
    assert (
        upstream_from_metadata({"jumper_proxy": {"upstream": {"kernel_name": "a", "python": "b"}}})
        is None
    )


def test_kernel_argv_passes_debug() -> None:
    argv = kernel_argv(PYTHON3, debug=True)

    assert argv[:4] == [sys.executable, "-m", "jumper_proxy", "--debug"]


def test_the_debugger_is_declared_only_where_the_upstream_declares_it(
    prefix: Path, tmp_path: Path
) -> None:
    _foreign_kernelspec(prefix, "foreign")
    no_debugger = _write_script(tmp_path / "old-python", "exit 1")

    foreign = kernelspec.kernel_json(UpstreamSpec(kernel_name="foreign"))
    interpreter = kernelspec.kernel_json(UpstreamSpec(python=sys.executable))
    without = kernelspec.kernel_json(UpstreamSpec(python=str(no_debugger)))

    assert "debugger" not in foreign["metadata"]
    assert foreign["language"] == "x"
    assert interpreter["metadata"]["debugger"] is True  # what its ipykernel would write
    assert "debugger" not in without["metadata"]


def test_upstream_arguments_reach_the_argv_and_the_metadata(prefix: Path) -> None:
    memory = "--HistoryManager.hist_file=:memory:"
    upstream = resolve_upstream("python3", None, [memory, "--log-level=DEBUG"])

    destination = install_kernelspec(prefix=str(prefix), name="jp-args", upstream=upstream)

    content = _kernel_json(destination)
    assert content["argv"][3:7] == [
        "--upstream",
        "python3",
        f"--upstream-arg={memory}",
        "--upstream-arg=--log-level=DEBUG",
    ]
    assert upstream_from_metadata(content["metadata"]) == UpstreamSpec(  # type: ignore[arg-type]
        kernel_name="python3", args=(memory, "--log-level=DEBUG")
    )
    assert upstream_for_notebook("jp-args").args == (memory, "--log-level=DEBUG")
    assert (
        upstream_from_metadata({"jumper_proxy": {"upstream": {"python": "p", "args": [1]}}}) is None
    )


def test_which_upstreams_are_ipython(prefix: Path) -> None:
    _foreign_kernelspec(prefix, "foreign")

    assert is_ipython_upstream(PYTHON3)
    assert is_ipython_upstream(UpstreamSpec(python=sys.executable))
    assert not is_ipython_upstream(UpstreamSpec(kernel_name="foreign"))
    assert not is_ipython_upstream(UpstreamSpec(kernel_name="not-installed"))


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask of a typical admin shell (022), whatever the test runner's is."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("usual_umask")
def test_kernelspec_directories_are_readable_by_everyone(prefix: Path) -> None:
    destination = install_kernelspec(prefix=str(prefix), upstream=PYTHON3)

    assert stat.S_IMODE(destination.stat().st_mode) == 0o755
    for path in destination.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


RUNUSER = shutil.which("runuser")


def _python_for(user: str) -> str | None:
    """An interpreter ``user`` may run that loads this environment's packages: this one, or
    the system's of the same version (this one often lives in root's home)."""
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (os.path.realpath(sys.executable), system):
        check = subprocess.run(
            [str(RUNUSER), "-u", user, "--", python, "-c", "pass"], capture_output=True, check=False
        )
        if check.returncode == 0:
            return python
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or RUNUSER is None,
    reason="needs root and runuser to look at the kernelspec as another user",
)
@pytest.mark.usefixtures("usual_umask")
def test_a_prefix_install_is_visible_to_another_user() -> None:
    """What a JupyterHub admin does: install into a shared prefix as root; ``nobody`` must
    find the kernelspec with jupyter_client and read its files."""
    python = _python_for("nobody")
    if python is None:
        pytest.skip("no Python interpreter that the user nobody may run")
    shared = Path(tempfile.mkdtemp(prefix="jumper-proxy-shared-"))  # in /tmp, not pytest's 0700
    try:
        shared.chmod(0o755)
        install_kernelspec(prefix=str(shared), name="jp-shared", upstream=PYTHON3)
        looks = (
            "import json, sys\n"
            "from jupyter_client.kernelspec import KernelSpecManager\n"
            "manager = KernelSpecManager(ensure_native_kernel=False)\n"
            "spec = manager.get_kernel_spec('jp-shared')\n"
            "logos = [len(open(f'{spec.resource_dir}/{n}', 'rb').read()) for n in sys.argv[1:]]\n"
            "print(json.dumps([sorted(manager.find_kernel_specs()), spec.display_name, logos]))\n"
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(shared),
            "PYTHONPATH": os.pathsep.join(site.getsitepackages()),
            "JUPYTER_PATH": str(shared / "share" / "jupyter"),
            "JUPYTER_DATA_DIR": str(shared / "nobody-data"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONWARNINGS": "ignore",
        }
        seen = subprocess.run(
            [str(RUNUSER), "-u", "nobody", "--", python, "-c", looks, *kernelspec.LOGO_FILES],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        shutil.rmtree(shared)

    assert seen.returncode == 0, seen.stderr
    names, display_name, logos = json.loads(seen.stdout)
    assert "jp-shared" in names
    assert display_name == "Python 3 (jumper-proxy)"
    assert all(size > 100 for size in logos)
