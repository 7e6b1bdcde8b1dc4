"""Faults and hostile input: nothing may wedge the kernel. Each case sends what a broken or
hostile client (or an unlucky moment) sends, then checks that the next cell is answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import PROXY_KERNEL, SCOREP_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from jupyter_client.session import DELIM
from kernel_helpers import (
    proxy_process,
    run,
    shell_reply,
    stdout,
    upstream_processes,
    wait_gone,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    client = kernel[1]
    for channel in (client.shell_channel, client.iopub_channel):
        while channel.msg_ready():
            channel.get_msg(timeout=0.1)
    return client


def raw_request(kc: BlockingKernelClient, code: str) -> tuple[str, list[bytes]]:
    """An execute_request as the frames a client sends: its msg_id and the frames."""
    msg = kc.session.msg("execute_request", {"code": code, "silent": False, "stop_on_error": True})
    return msg["header"]["msg_id"], [bytes(f) for f in kc.session.serialize(msg)]


def signed(kc: BlockingKernelClient, parts: list[bytes]) -> list[bytes]:
    """``parts`` (delimiter, signature, header, parent, metadata, content) signed anew."""
    i = parts.index(DELIM)
    parts[i + 1] = kc.session.sign(parts[i + 2 : i + 6])
    return parts


def next_cell_answers(kc: BlockingKernelClient) -> None:
    """The next cell runs: the queue is not held by what came before (10 s is a hang, not a
    slow kernel: plain ipykernel answers within milliseconds)."""
    reply, msgs = run(kc, "print('next')", timeout=10)
    assert reply["content"]["status"] == "ok"
    assert stdout(msgs) == "next\n"


def test_a_replayed_request_is_dropped_and_later_cells_run(kc: BlockingKernelClient) -> None:
    msg_id, frames = raw_request(kc, "counter = globals().get('counter', 0) + 1")
    kc.shell_channel.socket.send_multipart(frames)
    kc.shell_channel.socket.send_multipart(frames)  # the same signed message again
    assert shell_reply(kc, msg_id, timeout=10)["content"]["status"] == "ok"
    next_cell_answers(kc)
    assert stdout(run(kc, "print(counter)")[1]) == "1\n"


def test_a_replayed_proxy_magic_is_answered_once(kc: BlockingKernelClient) -> None:
    msg_id, frames = raw_request(kc, "%%jumper_help")
    kc.shell_channel.socket.send_multipart(frames)
    kc.shell_channel.socket.send_multipart(frames)
    shell_reply(kc, msg_id, timeout=10)
    next_cell_answers(kc)
    assert not kc.shell_channel.msg_ready()  # no second reply to the replay


@pytest.mark.parametrize(
    "damage",
    ["deep metadata", "garbage metadata", "header without msg_id", "code not a string"],
)
def test_a_request_the_kernel_would_refuse_holds_nothing(
    kc: BlockingKernelClient, damage: str
) -> None:
    msg_id, frames = raw_request(kc, "harmed = True")
    i = frames.index(DELIM)
    if damage == "deep metadata":
        frames[i + 4] = b"[" * 10_000 + b"]" * 10_000
    elif damage == "garbage metadata":
        frames[i + 4] = b"\xff\xfe not json"
    elif damage == "header without msg_id":
        header = json.loads(frames[i + 2])
        del header["msg_id"]
        frames[i + 2] = json.dumps(header).encode()
    else:
        frames[i + 5] = json.dumps({"code": ["harmed = True"]}).encode()
    kc.shell_channel.socket.send_multipart(signed(kc, frames))
    next_cell_answers(kc)
    assert stdout(run(kc, "print('harmed' in globals())")[1]) == "False\n"


def test_a_lone_surrogate_in_an_error_holds_nothing(kc: BlockingKernelClient) -> None:
    code = "raise ValueError('bad file name: ' + b'\\xff'.decode('utf-8', 'surrogateescape'))"
    reply, msgs = run(kc, code, timeout=10)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ValueError"
    next_cell_answers(kc)


def test_an_interrupt_storm_interrupts_once_and_holds_nothing(kc: BlockingKernelClient) -> None:
    msg_id = kc.execute("import time; time.sleep(60)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.3)
    for _ in range(10):  # on the client's own session: the manager's msg_ids repeat the client's
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))
    reply = shell_reply(kc, msg_id, timeout=10)["content"]
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    next_cell_answers(kc)
    _, msgs = run(kc, "%%display_code_history")
    history = next(m for m in msgs if m["msg_type"] == "display_data")["content"]["data"]
    row = next(line for line in history["text/plain"].splitlines() if "time.sleep(60)" in line)
    assert " interrupted " in row  # the history says what happened to the cell


def test_unanswered_requests_do_not_grow_the_proxy(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    km, _ = kernel
    proxy = proxy_process(km)
    next_cell_answers(kc)
    before = proxy.memory_info().rss
    payload = "x" * (1 << 20)
    for _ in range(200):  # the kernel ignores unknown request types: no reply ever comes
        kc.shell_channel.send(kc.session.msg("unknown_request", {"payload": payload}))
    next_cell_answers(kc)
    grown = proxy.memory_info().rss - before
    assert grown < 40 << 20, f"the proxy grew by {grown / 2**20:.0f} MiB"


def test_a_death_during_a_scorep_cell_fails_it_and_imports_nothing() -> None:
    km, kc = start_new_kernel(kernel_name=SCOREP_KERNEL, startup_timeout=60)
    try:
        assert run(kc, "x = 0")[0]["content"]["status"] == "ok"
        msg_id = kc.execute(
            "%%execute_with_scorep\nx = 1\nimport time\nprint('started', flush=True)\n"
            "time.sleep(30)"
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and "started" in str(msg["content"]):
                break
        upstream = next(p for p in upstream_processes(km) if "ipykernel" in " ".join(p.cmdline()))
        children = [p.pid for p in upstream.children(recursive=True)]
        upstream.kill()
        reply = shell_reply(kc, msg_id, timeout=30)["content"]
        assert reply["status"] == "error" and reply["ename"] == "KernelDied"
        assert "SIGKILL" in reply["evalue"]
        assert wait_gone(children) == []  # the Score-P child was stopped
        # a fresh kernel, with nothing of the dead one's Score-P cell imported into it
        assert stdout(run(kc, "print('x' in globals())", timeout=30)[1]) == "False\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


SERVER = """\
import json, os, subprocess, sys, time
from jupyter_client.connect import write_connection_file
path, _ = write_connection_file({path!r}, ip="127.0.0.1", key=b"k3y")
env = dict(os.environ, JPY_PARENT_PID=str(os.getpid()))
proxy = subprocess.Popen(
    [sys.executable, "-m", "jumper_proxy", "--upstream", "python3", "-f", path], env=env
)
print(proxy.pid, flush=True)
time.sleep(600)
"""


def test_the_proxy_ends_with_a_killed_server(tmp_path: Path) -> None:
    """A killed Jupyter server (or JupyterHub's "Stop My Server") leaves no kernel behind."""
    script = SERVER.format(path=str(tmp_path / "kernel.json"))
    server = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        proxy = psutil.Process(int(server.stdout.readline()))
        upstream: list[Any] = []
        deadline = time.monotonic() + 60
        while not upstream and time.monotonic() < deadline:
            upstream = proxy.children(recursive=True)
            time.sleep(0.2)
        assert upstream, "the proxy started no kernel"
        time.sleep(2)  # let it settle: the kernel is up
        os.kill(server.pid, signal.SIGKILL)
        assert wait_gone([proxy.pid, *(p.pid for p in upstream)], timeout=15) == []
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
