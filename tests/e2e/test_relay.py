"""The relay with real kernels: one proxy kernel shared by the tests in this module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from conftest import PROXY_KERNEL
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel
from jupyter_client.session import Session
from kernel_helpers import collect, proxy_process, run, shell_reply, stdout

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    km, kc = start_new_kernel(kernel_name=PROXY_KERNEL, startup_timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


@pytest.fixture
def kc(kernel: tuple[KernelManager, BlockingKernelClient]) -> BlockingKernelClient:
    client = kernel[1]
    _drain(client)
    return client


def _drain(kc: BlockingKernelClient) -> None:
    for channel in (kc.shell_channel, kc.iopub_channel, kc.stdin_channel):
        while channel.msg_ready():
            channel.get_msg(timeout=0.1)


def _second_client(km: KernelManager) -> BlockingKernelClient:
    """A second frontend with its own session (and so its own routing identity)."""
    client = BlockingKernelClient()
    client.load_connection_info(km.get_connection_info())
    client.session = Session(key=km.session.key, signature_scheme=km.session.signature_scheme)
    client.start_channels()
    client.wait_for_ready(timeout=30)
    return client


def test_user_code_runs_in_another_process(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    km, _ = kernel
    reply, msgs = run(kc, "import os; print(os.getpid(), os.getppid())")
    pid, ppid = map(int, stdout(msgs).split())
    proxy = proxy_process(km)
    assert pid != proxy.pid
    assert ppid == proxy.pid


def test_kernel_info_names_the_proxy_and_keeps_language(kc: BlockingKernelClient) -> None:
    msg_id = kc.kernel_info()
    content = shell_reply(kc, msg_id)["content"]
    assert content["implementation"] == "jumper-proxy"
    assert content["language_info"]["name"] == "python"
    assert content["status"] == "ok"


def test_input_round_trip(kc: BlockingKernelClient) -> None:
    msg_id = kc.execute("answer = input('your name? ')\nprint('hello', answer)", allow_stdin=True)
    request = kc.get_stdin_msg(timeout=10)
    assert request["msg_type"] == "input_request"
    assert request["content"]["prompt"] == "your name? "
    assert request["parent_header"]["msg_id"] == msg_id
    kc.input("Ada")
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    assert "hello Ada" in stdout(collect(kc, msg_id))


def test_two_clients_get_their_own_replies_and_input_requests(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    other = _second_client(kernel[0])
    try:
        first = kc.execute("a = input('first? ')", allow_stdin=True)
        request = kc.get_stdin_msg(timeout=10)
        assert request["content"]["prompt"] == "first? "
        # sent only now: requests of two clients arriving together have no defined order
        second = other.execute("b = input('second? ')", allow_stdin=True)
        assert other.stdin_channel.socket.poll(300) == 0, "asked the wrong client for input"
        kc.input("one")
        assert shell_reply(kc, first)["content"]["status"] == "ok"
        request = other.get_stdin_msg(timeout=10)
        assert request["content"]["prompt"] == "second? "
        other.input("two")
        assert shell_reply(other, second)["content"]["status"] == "ok"
        assert not kc.shell_channel.msg_ready(), "a reply for the other client reached this one"
        reply, msgs = run(other, "print(a, b)")
        assert stdout(msgs).strip() == "one two"
    finally:
        other.stop_channels()


def test_comm_with_binary_buffers_arrives_byte_identical(kc: BlockingKernelClient) -> None:
    setup = (
        "from comm import get_comm_manager\n"
        "def _echo_target(comm, open_msg):\n"
        "    @comm.on_msg\n"
        "    def _echo(msg):\n"
        "        comm.send({'sizes': [len(b) for b in msg['buffers']]}, buffers=msg['buffers'])\n"
        "get_comm_manager().register_target('echo', _echo_target)\n"
    )
    reply, _ = run(kc, setup)
    assert reply["content"]["status"] == "ok"
    payload = [bytes(range(256)) * 4096, os.urandom(100_000), b""]
    comm_id = "comm-test-1"
    kc.shell_channel.send(
        kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "echo", "data": {}})
    )
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {"x": 1}})
    kc.session.send(kc.shell_channel.socket, msg, buffers=payload)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        echo = kc.get_iopub_msg(timeout=10)
        if echo["msg_type"] == "comm_msg" and echo["content"]["comm_id"] == comm_id:
            break
    else:
        pytest.fail("no echo")
    assert echo["content"]["data"]["sizes"] == [len(b) for b in payload]
    assert [bytes(b) for b in echo["buffers"]] == payload


def test_queued_cell_after_an_error_is_aborted(kc: BlockingKernelClient) -> None:
    failing = kc.execute("import time; time.sleep(0.3); raise ValueError('boom')")
    queued = kc.execute("print('must not run')")
    assert shell_reply(kc, failing)["content"]["status"] == "error"
    assert shell_reply(kc, queued)["content"]["status"] == "aborted"
    assert "must not run" not in stdout(collect(kc, queued))
    assert run(kc, "1")[0]["content"]["status"] == "ok"


def test_queued_magic_after_an_error_is_aborted(kc: BlockingKernelClient) -> None:
    failing = kc.execute("import time; time.sleep(0.3); raise ValueError('boom')")
    magic = kc.execute("%%jumper_help")
    after = kc.execute("print('after')")
    assert shell_reply(kc, failing)["content"]["status"] == "error"
    assert shell_reply(kc, magic)["content"]["status"] == "aborted"
    assert shell_reply(kc, after)["content"]["status"] == "aborted"
    assert run(kc, "1")[0]["content"]["status"] == "ok"


def test_message_signed_with_a_wrong_key_is_ignored(kc: BlockingKernelClient) -> None:
    intruder = Session(key=b"not-the-key", signature_scheme=kc.session.signature_scheme)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(kc.shell_channel.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    try:
        bad = intruder.msg("execute_request", {"code": "harmed = True", "silent": False})
        intruder.send(sock, bad)
        assert sock.poll(1000) == 0, "the proxy answered a badly signed message"
    finally:
        sock.close()
    reply, msgs = run(kc, "print('harmed' in globals())")
    assert stdout(msgs).strip() == "False"


def test_unknown_message_type_is_relayed(kc: BlockingKernelClient) -> None:
    msg = kc.session.msg("nonstandard_request", {"x": 1})
    kc.shell_channel.send(msg)
    states = [
        m["content"]["execution_state"]
        for m in collect(kc, msg["header"]["msg_id"], 10)
        if m["msg_type"] == "status"
    ]
    assert states == ["busy", "idle"]  # the upstream saw it: it published status for it


def test_proxy_magic_has_the_full_envelope_and_counts(kc: BlockingKernelClient) -> None:
    before, _ = run(kc, "1")
    msg_id = kc.execute("%%jumper_help")
    reply = shell_reply(kc, msg_id)["content"]
    msgs = collect(kc, msg_id)
    kinds = [m["msg_type"] for m in msgs]
    assert kinds[0] == "status" and msgs[0]["content"]["execution_state"] == "busy"
    assert kinds[1] == "execute_input"
    assert "stream" in kinds
    assert kinds[-1] == "status"
    assert "%%jumper_help" in stdout(msgs)
    count = before["content"]["execution_count"]
    assert reply == {
        "status": "ok",
        "execution_count": count + 1,
        "user_expressions": {},
        "payload": [],
    }
    after, _ = run(kc, "2")
    assert after["content"]["execution_count"] == count + 2


def test_ipython_cell_magics_go_to_the_kernel(kc: BlockingKernelClient) -> None:
    reply, msgs = run(kc, "%%capture captured\nprint('hidden')")
    assert reply["content"]["status"] == "ok"
    reply, msgs = run(kc, "print(captured.stdout.strip())")
    assert stdout(msgs).strip() == "hidden"


def test_interrupt_of_a_running_cell(
    kernel: tuple[KernelManager, BlockingKernelClient], kc: BlockingKernelClient
) -> None:
    km, _ = kernel
    msg_id = kc.execute("import time\nfor _ in range(600): time.sleep(0.1)")
    _wait_busy(kc, msg_id)
    started = time.monotonic()
    km.interrupt_kernel()
    reply = shell_reply(kc, msg_id, timeout=10)["content"]
    assert time.monotonic() - started < 5
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    assert run(kc, "1+1")[0]["content"]["status"] == "ok"


def _wait_busy(kc: BlockingKernelClient, msg_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msg: dict[str, Any] = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            time.sleep(0.2)
            return
    pytest.fail("cell never started")


def test_completion_knows_the_proxy_magics_and_ipythons(kc: BlockingKernelClient) -> None:
    msg_id = kc.complete("%%", 2)
    matches = shell_reply(kc, msg_id)["content"]["matches"]
    assert "%%jumper_help" in matches
    assert "%%time" in matches  # the upstream's own completions are kept
    msg_id = kc.complete("%%jumper_h", 10)
    content = shell_reply(kc, msg_id)["content"]
    assert content["matches"] == ["%%jumper_help"]
    assert content["cursor_start"] == 0


def test_inspection_of_a_proxy_magic(kc: BlockingKernelClient) -> None:
    msg_id = kc.inspect("%%jumper_help", 4)
    content = shell_reply(kc, msg_id)["content"]
    assert content["found"] is True
    assert "list the proxy's magics" in content["data"]["text/plain"]
    msg_id = kc.inspect("len", 3)
    assert shell_reply(kc, msg_id)["content"]["found"] is True  # ordinary names go upstream
