"""Start-up, death, shutdown and restart: each test owns a fresh proxy kernel."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq
from conftest import PROXY_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from kernel_helpers import (
    collect,
    proxy_process,
    run,
    shell_reply,
    stdout,
    upstream_processes,
    wait_gone,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    yield km, kc
    kc.stop_channels()
    if km.has_kernel:
        km.shutdown_kernel(now=True)


def test_kernel_info_is_answered_while_the_upstream_boots() -> None:
    km = KernelManager(kernel_name=PROXY_KERNEL)
    km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        msg_id = kc.kernel_info()  # sent at once, before the upstream can be ready
        reply = shell_reply(kc, msg_id, timeout=60)
        assert reply["content"]["implementation"] == "jumper-proxy"
        assert run(kc, "print('ready')")[0]["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_os_exit_gives_an_error_reply_and_the_next_cell_works(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    run(kc, "x = 1")
    old = [p.pid for p in upstream_processes(km)]
    msg_id = kc.execute("import os; os._exit(3)")
    reply = shell_reply(kc, msg_id, timeout=30)["content"]
    assert reply["status"] == "error"
    assert reply["ename"] == "KernelDied"
    assert "exited with code 3" in reply["evalue"]
    errors = [m for m in collect(kc, msg_id) if m["msg_type"] == "error"]
    assert errors and "exited with code 3" in errors[0]["content"]["evalue"]
    reply, msgs = run(kc, "import os; print(os.getpid(), 'x' in globals())", timeout=60)
    assert reply["content"]["status"] == "ok"
    pid, has_x = stdout(msgs).split()
    assert int(pid) not in old
    assert has_x == "False"  # a fresh kernel


def test_a_signal_death_is_named(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    km, kc = kernel
    msg_id = kc.execute("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    reply = shell_reply(kc, msg_id, timeout=30)["content"]
    assert reply["status"] == "error"
    assert "SIGKILL" in reply["evalue"]
    assert run(kc, "1", timeout=60)[0]["content"]["status"] == "ok"


def test_shutdown_leaves_no_upstream_process(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    proxy = proxy_process(km)
    children = [p.pid for p in upstream_processes(km)]
    assert children
    started = time.monotonic()
    km.shutdown_kernel()
    assert time.monotonic() - started < 5, "the proxy did not exit by itself"
    assert not proxy.is_running() or proxy.status() == psutil.STATUS_ZOMBIE
    assert wait_gone(children) == []
    assert _runtime_dirs(proxy.pid) == []  # the private connection files are gone too


def test_a_sigkilled_proxy_leaves_no_upstream_process(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    children = [p.pid for p in upstream_processes(km)]
    assert children
    proxy_pid = proxy_process(km).pid
    assert _runtime_dirs(proxy_pid)
    os.kill(proxy_pid, signal.SIGKILL)
    assert wait_gone(children, timeout=10) == []
    # the killed proxy could not clean up; the next proxy that starts does:
    km2, kc2 = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    kc2.stop_channels()
    km2.shutdown_kernel(now=True)
    assert _runtime_dirs(proxy_pid) == []


def _runtime_dirs(proxy_pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"jumper-proxy-{proxy_pid}-*"))


def test_restart_gives_a_fresh_working_kernel(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    run(kc, "y = 2")
    old_children = [p.pid for p in upstream_processes(km)]
    km.restart_kernel()
    assert wait_gone(old_children) == []
    kc.wait_for_ready(timeout=60)
    reply, msgs = run(kc, "print('y' in globals())", timeout=60)
    assert stdout(msgs).strip() == "False"


def test_sigint_to_the_proxy_interrupts_the_cell(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    msg_id = kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.3)
    os.kill(proxy_process(km).pid, signal.SIGINT)
    reply = shell_reply(kc, msg_id, timeout=10)["content"]
    assert reply["ename"] == "KeyboardInterrupt"
    assert run(kc, "1")[0]["content"]["status"] == "ok"


def test_an_interpreter_without_kernelspec_is_wrapped(tmp_path: Path) -> None:
    """``--upstream-python``: the environment's ipykernel runs, under the absolute path given."""
    from jumper_proxy.config import UpstreamSpec
    from jumper_proxy.kernelspec import install_kernelspec

    install_kernelspec(
        prefix=str(tmp_path), name="jp-interp", upstream=UpstreamSpec(python=sys.executable)
    )
    km = KernelManager(kernel_name="jp-interp")
    km.kernel_spec_manager.kernel_dirs.insert(0, str(tmp_path / "share" / "jupyter" / "kernels"))
    km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        reply, msgs = run(kc, "import sys; print(sys.executable)")
        assert stdout(msgs).strip() == sys.executable
        # the client's heartbeat thread says "beating" only after its first round trip
        deadline = time.monotonic() + 10
        while not kc.hb_channel.is_beating() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kc.hb_channel.is_beating()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_the_heartbeat_answers_while_a_cell_runs(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    kc.execute("import time; time.sleep(3)")
    info = km.get_connection_info()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(f"{info['transport']}://{info['ip']}:{info['hb_port']}")
    try:
        for _ in range(3):
            sock.send(b"ping")
            assert sock.poll(1000), "no heartbeat answer within 1 s"
            assert sock.recv() == b"ping"
    finally:
        sock.close()
