"""The least a relaying kernel can do: the floor that jumper-proxy's relay is measured against.

A kernel process (``python min_relay.py CONNECTION_FILE``) that starts ``python3`` ipykernel
behind it with the frontend connection's key and relays shell, control, stdin and IOPub both
ways as the proxy does: frames received, split and their headers read, and sent on unchanged
with the proxy's own functions (``jumper_proxy.pump``, ``jumper_proxy.wire``), in one blocking
poll loop: no scheduler, no
monitor, no magics, no event loop. Whatever a Python relay in its own process costs per hop on
a machine, this costs too; only what the proxy adds beyond it is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from kernels import on_jupyter_path

from jumper_proxy import wire
from jumper_proxy.errors import WireError
from jumper_proxy.frontend import Heartbeat, _url, read_connection_file
from jumper_proxy.pump import readable, receive, send

MIN_RELAY_KERNEL = "jumper-min-relay-bench"


def relay(connection_file: str) -> None:
    info = read_connection_file(Path(connection_file))
    sockets = tempfile.mkdtemp(prefix="jumper-min-relay-")  # private, not the working directory
    upstream = KernelManager(
        kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel")
    )
    upstream.session.signature_scheme = info["signature_scheme"]
    upstream.session.key = info["key"].encode()  # frames pass as they came
    upstream.start_kernel()
    up = upstream.get_connection_info()
    # a frontend's interrupt (and jupyter_client's before every shutdown) is the kernel's
    pid = upstream.provisioner.process.pid  # type: ignore[union-attr]

    def interrupt(_signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGINT)

    signal.signal(signal.SIGINT, interrupt)
    ctx: zmq.Context[Any] = zmq.Context()

    def front(kind: int, port: int) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(kind)
        sock.bind(_url(info, port))
        return sock

    def back(kind: int, port: int) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = ctx.socket(kind)
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"ipc://{up['ip']}-{port}")
        return sock

    Heartbeat(_url(info, info["hb_port"])).start()
    pairs = [
        (front(zmq.ROUTER, info[f"{name}_port"]), back(zmq.DEALER, up[f"{name}_port"]))
        for name in ("shell", "control", "stdin")
    ]
    pairs.append((front(zmq.PUB, info["iopub_port"]), back(zmq.SUB, up["iopub_port"])))
    other = {a: b for pair in pairs for a, b in (pair, pair[::-1])}
    frontend = {f for f, _ in pairs}
    poller = zmq.Poller()
    for sock in other:
        if sock.type != zmq.PUB:
            poller.register(sock, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            while readable(sock):
                frames = receive(sock)
                try:
                    msg = wire.split(frames)  # the headers, as the proxy reads them
                except WireError:
                    continue
                if sock in frontend and msg.msg_type == "shutdown_request":
                    upstream.shutdown_kernel(now=True)
                    shutil.rmtree(sockets, ignore_errors=True)
                    os._exit(0)
                send(other[sock], msg.to_wire())


@contextlib.contextmanager
def min_relay_kernelspec() -> Iterator[str]:
    """A temporary kernelspec for the minimal relay; JUPYTER_PATH points at it meanwhile."""
    with tempfile.TemporaryDirectory(prefix="jumper-min-relay-") as prefix:
        spec_dir = Path(prefix) / "kernels" / MIN_RELAY_KERNEL
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "{connection_file}"]
        spec = {"argv": argv, "display_name": "minimal relay", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        with on_jupyter_path(prefix):
            assert MIN_RELAY_KERNEL in KernelSpecManager().find_kernel_specs()
            yield MIN_RELAY_KERNEL


if __name__ == "__main__":
    relay(sys.argv[1])
