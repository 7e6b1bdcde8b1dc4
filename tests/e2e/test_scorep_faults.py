"""What real Score-P installations get wrong, and what a killed proxy leaves behind, through the
proxy with real kernels: each is one clear line on the cell, the kernel's state stays as it
was, and nothing of a dead proxy outlives the next one's start."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import NO_SCOREP_CONFIG_KERNEL, SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from kernel_helpers import ok, proxy_process, stdout, value, wait_gone
from scorep_helpers import (
    experiment_of,
    failed,
    scorep_cell,
    setting,
    shm_segments,
    started,
    stderr,
    wait_for_output,
)

pytestmark = pytest.mark.e2e
real_scorep = pytest.mark.real_scorep


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingKernelClient, Path]]:
    cwd = tmp_path_factory.mktemp("faults-cwd")
    with started(SCOREP_KERNEL, cwd) as (_, kc):
        yield kc, cwd


@pytest.fixture
def kc(kernel: tuple[BlockingKernelClient, Path]) -> BlockingKernelClient:
    return kernel[0]


TRACING_OFF = "%%scorep_env\nSCOREP_ENABLE_TRACING=false\nSCOREP_TOTAL_MEMORY=16000k"
NO_ARGUMENTS = "%%scorep_python_binding_arguments"


def one_line(text: str) -> bool:
    return "\n" not in text.strip()


def test_missing_scorep_is_one_clear_line(no_scorep_kernel: str) -> None:
    with started(no_scorep_kernel) as (_, kc):
        ok(kc, "x = 1")
        assert value(kc, "__import__('importlib.util').util.find_spec('scorep') is None")
        error, _ = failed(kc, "%%execute_with_scorep\nx = 2")
        assert "pip install scorep" in error["evalue"] and one_line(error["evalue"])
        assert value(kc, "x") == 1


@real_scorep
def test_scorep_config_not_on_path_is_the_module_load_case() -> None:
    with started(NO_SCOREP_CONFIG_KERNEL) as (_, kc):
        ok(kc, "x = 1")
        assert value(kc, "__import__('importlib.util').util.find_spec('scorep') is not None")
        error, _ = failed(kc, "%%execute_with_scorep\nx = 2")
        assert "scorep-config is not on the kernel's PATH" in error["evalue"]
        assert "module load" in error["evalue"] and one_line(error["evalue"])
        assert value(kc, "x") == 1


@real_scorep
def test_trace_buffer_flushes_are_one_note(kc: BlockingKernelClient, tmp_path: Path) -> None:
    with setting(
        kc,
        "%%scorep_env\nSCOREP_ENABLE_TRACING=true\nSCOREP_TOTAL_MEMORY=3M\n"
        f"SCOREP_EXPERIMENT_DIRECTORY={tmp_path / 'flush'}",
        f"{TRACING_OFF}\nSCOREP_EXPERIMENT_DIRECTORY=",
    ):
        ok(kc, "def tiny():\n    pass")
        _, msgs = scorep_cell(kc, "for _ in range(200_000):\n    tiny()\nprint('done')")
        warnings = stderr(msgs)
        assert "[Score-P]" not in warnings  # Score-P's own repeated lines are folded
        notes = [line for line in warnings.splitlines() if "trace buffer" in line]
        assert len(notes) == 1 and "SCOREP_TOTAL_MEMORY (now 3M)" in notes[0]
        assert "done" in stdout(msgs)


@real_scorep
def test_running_out_of_measurement_memory_is_named(kc: BlockingKernelClient) -> None:
    with setting(
        kc, "%%scorep_env\nSCOREP_ENABLE_TRACING=true\nSCOREP_TOTAL_MEMORY=500K", TRACING_OFF
    ):
        ok(kc, "kept = 1\ndef tiny():\n    pass")
        error, _ = failed(
            kc, "%%execute_with_scorep\nkept = 2\nfor _ in range(200_000):\n    tiny()"
        )
        assert "ran out of its measurement memory" in error["evalue"]
        assert "SCOREP_TOTAL_MEMORY" in error["evalue"] and one_line(error["evalue"])
        assert value(kc, "kept") == 1


@real_scorep
def test_a_reused_experiment_directory_is_said(
    kernel: tuple[BlockingKernelClient, Path], kc: BlockingKernelClient
) -> None:
    cwd = kernel[1]
    back = "%%scorep_env\nSCOREP_EXPERIMENT_DIRECTORY=\nSCOREP_OVERWRITE_EXPERIMENT_DIRECTORY=true"
    with setting(kc, "%%scorep_env\nSCOREP_EXPERIMENT_DIRECTORY=reused", back):
        _, first = scorep_cell(kc, "a = 1")
        assert experiment_of(first) == cwd / "reused" and "used before" not in stderr(first)
        _, second = scorep_cell(kc, "a = 2")
        assert experiment_of(second) == cwd / "reused"
        notes = [line for line in stderr(second).splitlines() if "used before" in line]
        assert len(notes) == 1
        moved = [p for p in cwd.iterdir() if p.name.startswith("reused-")]
        assert len(moved) == 1 and str(moved[0]) in notes[0]
        assert (moved[0] / "profile.cubex").is_file()

        ok(kc, "%%scorep_env\nSCOREP_OVERWRITE_EXPERIMENT_DIRECTORY=false")
        error, _ = failed(kc, "%%execute_with_scorep\na = 3")
        assert "exists and SCOREP_OVERWRITE_EXPERIMENT_DIRECTORY is false" in error["evalue"]
        assert one_line(error["evalue"]) and value(kc, "a") == 2


@real_scorep
def test_an_unusable_tmpdir_does_not_stop_the_bindings(kc: BlockingKernelClient) -> None:
    missing = "/nonexistent/jumper-tmp"
    with setting(
        kc, f"%%scorep_env\nTMPDIR={missing}", f"%%scorep_env\nTMPDIR={tempfile.gettempdir()}"
    ):
        for args in ("", "--verbose"):  # the prepared start, and the bindings' own start
            with setting(kc, f"%%scorep_python_binding_arguments {args}", NO_ARGUMENTS):
                _, msgs = scorep_cell(kc, "import os\nprint('TMPDIR', os.environ['TMPDIR'])")
            assert f"TMPDIR {missing}" in stdout(msgs)
            assert (experiment_of(msgs) / "profile.cubex").is_file()


@real_scorep
def test_threads_without_thread_support_are_named(kc: BlockingKernelClient) -> None:
    ok(
        kc,
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\ndef spin():\n    fib(22)",
    )
    error, _ = failed(
        kc,
        "%%execute_with_scorep\nimport threading\n"
        "ts = [threading.Thread(target=spin) for _ in range(2)]\n"
        "[t.start() for t in ts]\nspin()\n[t.join() for t in ts]",
    )
    assert "--thread=pthread" in error["evalue"] and one_line(error["evalue"])
    with setting(kc, "%%scorep_python_binding_arguments --thread=pthread", NO_ARGUMENTS):
        scorep_cell(
            kc, "import threading\nt = threading.Thread(target=spin)\nt.start()\nspin()\nt.join()"
        )


@real_scorep
def test_binding_arguments_scorep_config_rejects_are_named(kc: BlockingKernelClient) -> None:
    with setting(kc, "%%scorep_python_binding_arguments --thread=nonsense", NO_ARGUMENTS):
        error, _ = failed(kc, "%%execute_with_scorep\nb = 1")
    assert "scorep-config rejects the binding arguments" in error["evalue"]
    assert "--thread=nonsense" in error["evalue"] and one_line(error["evalue"])


@pytest.fixture
def noexec_tmp() -> Iterator[Path]:
    """A tmpfs mounted noexec (needs root and a kernel that lets us mount), at a short path:
    the proxy's sockets go there too, and a socket's path has at most 107 bytes."""
    where = Path(tempfile.mkdtemp(prefix="jpnx-", dir="/tmp"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "noexec,size=64m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a noexec tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


@real_scorep
def test_a_noexec_temporary_directory_is_named(noexec_tmp: Path) -> None:
    from jumper_proxy.config import UpstreamSpec
    from jumper_proxy.kernelspec import install_kernelspec

    prefix = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]).parent.parent
    spec = Path(prefix, "share", "jupyter", "kernels", SCOREP_KERNEL, "kernel.json")
    env = json.loads(spec.read_text())["env"]
    install_kernelspec(
        prefix=str(prefix),
        name="jumper-proxy-noexec-test",
        upstream=UpstreamSpec(kernel_name="python3"),
        env={**env, "TMPDIR": str(noexec_tmp)},
    )
    with started("jumper-proxy-noexec-test") as (_, kc):
        error, _ = failed(kc, "%%execute_with_scorep\nc = 1")
    assert "cannot load it" in error["evalue"] and "TMPDIR" in error["evalue"]
    assert one_line(error["evalue"])


@real_scorep
def test_the_init_library_is_prepared_once_and_reused(kc: BlockingKernelClient) -> None:
    show = "import os\nprint('LIBS', os.environ.get('LD_LIBRARY_PATH', '').split(':')[0])"
    first = stdout(scorep_cell(kc, show)[1])
    second = stdout(scorep_cell(kc, show)[1])
    lib = next(line.split()[1] for line in first.splitlines() if line.startswith("LIBS"))
    assert f"LIBS {lib}" in second and "/init-" in lib and Path(lib).is_dir()
    # a setting that changes the library clears the prepared one
    with setting(kc, "%%scorep_python_binding_arguments --thread=pthread", NO_ARGUMENTS):
        assert not Path(lib).exists()
        third = stdout(scorep_cell(kc, show)[1])
        assert "/init-" in third and f"LIBS {lib}\n" not in third
    # an option only the bindings' first stage knows: their own start, in the cell's dir
    with setting(kc, "%%scorep_python_binding_arguments --verbose", NO_ARGUMENTS):
        _, own = scorep_cell(kc, show)
    assert "Score-P config" in stderr(own) and "/cell-" in stdout(own)


def _children_running(proxy: psutil.Process, needle: str) -> list[psutil.Process]:
    found = []
    for proc in proxy.children(recursive=True):
        try:
            if any(needle in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _owned(proxy: int, persist: Path) -> list[Path]:
    tmp = Path(tempfile.gettempdir())
    return [
        *tmp.glob(f"jumper-scorep-{proxy}-*"),
        *persist.glob(f"jumper-handover-{proxy}-*"),
        *(Path("/dev/shm") / name for name in shm_segments(proxy)),
    ]


@real_scorep
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_sigkill_of_the_proxy_ends_the_child_and_a_later_proxy_sweeps(
    mode: str, tmp_path: Path
) -> None:
    persist = tmp_path / "persist"
    with started(SCOREP_KERNEL, tmp_path) as (km, kc):
        proxy = proxy_process(km)
        ok(kc, f"%%marshalling_settings\nMODE={mode}\nSCOREP_KERNEL_PERSISTENCE_DIR={persist}")
        ok(kc, "import numpy as np\nbig = np.ones(4 << 20)")
        msg_id = kc.execute(
            "%%execute_with_scorep\nprint('started', flush=True)\nimport time\ntime.sleep(120)"
        )
        wait_for_output(kc, msg_id, "started")
        children = _children_running(proxy, "runner.py")
        assert len(children) == 1
        left = _owned(proxy.pid, persist)
        kinds = {p.name.split("-")[1] if p.name.startswith("jumper-") else "shm" for p in left}
        assert kinds == ({"scorep", "shm"} if mode == "memory" else {"scorep", "handover"})
        os.kill(proxy.pid, signal.SIGKILL)
        assert wait_gone([children[0].pid]) == []  # the child did not outlive the proxy
    # a proxy killed outright cannot clean up; what it left carries its pid (checked above),
    # so the next proxy of this user recognises it (any proxy of the user may be the first)

    with started(SCOREP_KERNEL, tmp_path) as (_, kc):
        assert [p for p in left if not p.is_relative_to(persist) and p.exists()] == []
        ok(kc, f"%%marshalling_settings\nMODE=disk\nSCOREP_KERNEL_PERSISTENCE_DIR={persist}")
        scorep_cell(kc, "after = 1")
        assert [p for p in left if p.exists()] == []
    shutil.rmtree(persist, ignore_errors=True)
