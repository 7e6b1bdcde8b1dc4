"""The least a relaying kernel can do: the floor that jumper-proxy's relay is measured against.

A kernel process (``python min_relay.py CONNECTION_FILE``) that starts ``python3`` ipykernel
behind it and relays shell, control, stdin and IOPub both ways with the same verify and
re-sign functions as the proxy (``jumper_proxy.relay``), in one blocking poll loop: no
scheduler, no monitor, no magics, no event loop. Whatever a Python relay in its own process
costs per hop on a machine, this costs too; only what the proxy adds beyond it is its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from kernels import on_jupyter_path

from jumper_proxy.relay import (
    Heartbeat,
    _url,
    forward_frames,
    parse_frames,
    read_connection_file,
    session_for,
)

MIN_RELAY_KERNEL = "jumper-min-relay-bench"


def relay(connection_file: str) -> None:
    info = read_connection_file(Path(connection_file))
    front_session = session_for(info)
    upstream = KernelManager(kernel_name="python3", transport="ipc")
    upstream.start_kernel()
    up_session = upstream.session
    up = upstream.get_connection_info()
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
    pairs = {
        "shell": (front(zmq.ROUTER, info["shell_port"]), back(zmq.DEALER, up["shell_port"])),
        "control": (
            front(zmq.ROUTER, info["control_port"]),
            back(zmq.DEALER, up["control_port"]),
        ),
        "stdin": (front(zmq.ROUTER, info["stdin_port"]), back(zmq.DEALER, up["stdin_port"])),
    }
    iopub_out, iopub_in = front(zmq.PUB, info["iopub_port"]), back(zmq.SUB, up["iopub_port"])
    # frontend socket -> upstream socket and back, and the routing identity last seen
    to_upstream = {f: b for f, b in pairs.values()}
    to_frontend = {b: f for f, b in pairs.values()}
    to_frontend[iopub_in] = iopub_out
    idents: dict[zmq.Socket[Any], list[bytes]] = {}
    poller = zmq.Poller()
    for sock in [*to_upstream, *to_frontend]:
        poller.register(sock, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                if sock in to_upstream:
                    msg = parse_frames(frames, front_session, up_session)
                    if msg is None:
                        continue
                    idents[sock] = msg.idents
                    if msg.msg_type == "shutdown_request":
                        upstream.shutdown_kernel(now=True)
                        os._exit(0)
                    out = forward_frames(msg, up_session, [])
                    to_upstream[sock].send_multipart(out, copy=False)
                else:
                    msg = parse_frames(frames, up_session, front_session)
                    if msg is None:
                        continue
                    target = to_frontend[sock]
                    ids = msg.idents if sock is iopub_in else idents.get(target, [])
                    target.send_multipart(forward_frames(msg, front_session, ids), copy=False)


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
