"""The frontend side of the wire: the connection file, the five sockets bound exactly as it asks,
the heartbeat, and the IOPub welcome.

Only this module binds frontend sockets. It sends frames (relayed as they came, or messages of
the proxy's own signed with the connection's key) and hands what it receives to the handlers it
is given; it knows nothing of what a message means.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, TypedDict

import zmq
from jupyter_client.session import Session

from jumper_proxy import wire
from jumper_proxy.errors import ConfigurationError
from jumper_proxy.pump import Handler, Pump

log = logging.getLogger(__name__)

#: the topic of the proxy's own IOPub messages
IOPUB_TOPIC = "kernel.jumper-proxy."


class ConnectionInfo(TypedDict):
    """The fields of a Jupyter connection file that the proxy uses."""

    transport: str
    ip: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str
    signature_scheme: str


def read_connection_file(path: Path) -> ConnectionInfo:
    """Read and check a connection file; a missing or malformed file is a ConfigurationError."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(f"Connection file not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read connection file {path}: {exc}") from exc
    try:
        return ConnectionInfo(
            transport=str(raw.get("transport", "tcp")),
            ip=str(raw.get("ip", "127.0.0.1")),
            shell_port=int(raw.get("shell_port", 0)),
            iopub_port=int(raw.get("iopub_port", 0)),
            stdin_port=int(raw.get("stdin_port", 0)),
            control_port=int(raw.get("control_port", 0)),
            hb_port=int(raw.get("hb_port", 0)),
            key=str(raw.get("key", "")),
            signature_scheme=str(raw.get("signature_scheme", "hmac-sha256")),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(f"Malformed connection file {path}: {exc}") from exc


def session_for(info: ConnectionInfo) -> Session:
    """The Session that verifies and signs with the connection's key, on both sides."""
    return Session(
        key=info["key"].encode(), signature_scheme=info["signature_scheme"], username="kernel"
    )


class Heartbeat(threading.Thread):
    """Echoes heartbeat pings for as long as the proxy process lives.

    A thread with its own context so that a busy event loop never delays an answer.
    """

    def __init__(self, url: str) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(url)

    def run(self) -> None:
        try:
            zmq.proxy(self.socket, self.socket)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError as exc:
            log.error("Heartbeat stopped: %s", exc)
        finally:
            self.socket.close(linger=0)

    def stop(self) -> None:
        self.context.term()


def _url(info: ConnectionInfo, port: int) -> str:
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


class Frontend:
    """The five frontend sockets, bound exactly as the connection file asks."""

    def __init__(
        self, info: ConnectionInfo, context: zmq.Context[Any], pump: Pump, session: Session
    ) -> None:
        self.info = info
        self.session = session
        self.pump = pump

        def bind(kind: int, port: int) -> zmq.Socket[Any]:
            sock: zmq.Socket[Any] = context.socket(kind)
            sock.linger = 1000
            if kind == zmq.ROUTER:
                sock.router_handover = 1
            if kind == zmq.XPUB:
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscriber gets its welcome
            try:
                sock.bind(_url(info, port))
            except zmq.ZMQError as exc:
                sock.close(linger=0)
                raise ConfigurationError(f"Cannot bind {_url(info, port)}: {exc.strerror}") from exc
            return sock

        self.sockets: dict[str, zmq.Socket[Any]] = {
            "shell": bind(zmq.ROUTER, info["shell_port"]),
            "control": bind(zmq.ROUTER, info["control_port"]),
            "stdin": bind(zmq.ROUTER, info["stdin_port"]),
            "iopub": bind(zmq.XPUB, info["iopub_port"]),
        }
        self.heartbeat = Heartbeat(_url(info, info["hb_port"]))

    def send(self, channel: str, frames: list[Any]) -> None:
        """Send frames as they are (a relayed message, or one already serialized)."""
        self.pump.send(self.sockets[channel], frames)

    def send_new(
        self,
        channel: str,
        out: wire.Outgoing,
        parent: dict[str, Any] | None,
        idents: list[bytes] | None = None,
    ) -> None:
        """Send a message of the proxy's own, signed with the connection's key."""
        if channel == "iopub" and idents is None:
            idents = [f"{IOPUB_TOPIC}{out.msg_type}".encode()]
        self.send(channel, wire.serialize(self.session, out, parent, idents)[1])

    def welcome(self, frames: list[Any]) -> None:
        """Answer an XPUB subscription event with an ``iopub_welcome`` (protocol 5.4+)."""
        frame = bytes(frames[0]) if frames else b""
        if not frame or frame[0] != 1:
            return
        topic = frame[1:]
        try:
            subscription = topic.decode()
        except UnicodeDecodeError:
            return
        out = wire.Outgoing("iopub_welcome", {"subscription": subscription})
        self.send_new("iopub", out, None, [topic] if topic else [])

    def watch(self, handlers: dict[str, Handler]) -> None:
        """Start reading: ``handlers`` maps shell/control/stdin to a handler of raw frames."""
        for channel in ("shell", "control", "stdin"):
            self.pump.watch(self.sockets[channel], handlers[channel])
        self.pump.watch(self.sockets["iopub"], self.welcome)

    def close(self) -> None:
        for sock in self.sockets.values():
            self.pump.unwatch(sock)
            sock.close(linger=200)
        self.heartbeat.stop()


__all__ = ["ConnectionInfo", "Frontend", "Heartbeat", "read_connection_file", "session_for"]
