"""The package as users get it: a wheel built from the project's files, installed into a fresh
virtual environment away from the checkout, must install kernelspecs with their logos."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from jumper_proxy.kernelspec import LOGO_FILES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RESOURCES = "jumper_proxy/resources"


def project_files() -> list[str]:
    """The files a commit of the checkout would hold (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def isolated_env() -> dict[str, str]:
    """The environment without anything that would make the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER"))}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.mark.skipif(shutil.which("git") is None, reason="git lists the project's files")
def test_a_wheel_installed_elsewhere_ships_the_logos(tmp_path: Path) -> None:
    source = tmp_path / "source"
    for name in project_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
            str(source),
        ],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        check=True,
        timeout=110,
    )
    (wheel,) = dist.glob("jumper_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    assert {f"{RESOURCES}/{logo}" for logo in LOGO_FILES} <= shipped

    # A fresh environment; its dependencies are this one's, seen through a .pth file (which
    # adds directories only: this environment's editable install of the checkout stays out).
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False, symlinks=True)
    (site_packages,) = env_dir.glob("lib/python*/site-packages")
    (site_packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = env_dir / "bin" / "python"
    subprocess.run(
        [*pip, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        check=True,
        timeout=110,
    )
    shutil.rmtree(source)  # nothing may come from a source tree

    where = subprocess.run(
        [str(python), "-c", "import jumper_proxy; print(jumper_proxy.__file__)"],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(site_packages), where
    prefix = tmp_path / "prefix"
    installed = subprocess.run(
        [str(env_dir / "bin" / "jumper-proxy"), "install", "--prefix", str(prefix), "--name", "jp"],
        cwd=tmp_path,
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert installed.returncode == 0, installed.stderr
    kernel_dir = prefix / "share" / "jupyter" / "kernels" / "jp"
    for logo in LOGO_FILES:
        assert (kernel_dir / logo).read_bytes() == (ROOT / RESOURCES / logo).read_bytes()
