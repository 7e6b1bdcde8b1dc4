"""The frontend side of the wire: binding from the connection file, receiving and verifying
messages, re-signing and forwarding them, the heartbeat and the IOPub welcome.

Framing and signing are ``jupyter_client.session.Session``'s: a received message is verified
with ``deserialize(content=False)`` (content and buffers stay raw bytes/frames) and forwarded
with ``send_raw``, which signs it with the other side's key. Only this module binds frontend
sockets; it knows nothing of what a message means beyond its header.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from hmac import compare_digest
from pathlib import Path
from typing import Any, TypedDict

import zmq
from jupyter_client.session import DELIM, Session

from jumper_proxy.errors import ConfigurationError
from jumper_proxy.pump import Handler, Pump

log = logging.getLogger(__name__)


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
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Malformed connection file {path}: {exc}") from exc


def session_for(info: ConnectionInfo) -> Session:
    """The Session that verifies and signs with the frontend's key."""
    return Session(
        key=info["key"].encode(), signature_scheme=info["signature_scheme"], username="kernel"
    )


@dataclass
class Message:
    """A verified message kept close to the wire.

    ``frames`` is ``[header, parent_header, metadata, content, *buffers]`` exactly as received
    (the signature removed), so forwarding it changes nothing but the signature. ``idents`` are
    the routing frames in front of the delimiter (the topic for IOPub messages).
    """

    idents: list[bytes]
    frames: list[Any]
    header: dict[str, Any]
    parent_header: dict[str, Any]
    _content: dict[str, Any] | None = field(default=None, repr=False)
    #: a signature already made for the other side's session (large messages)
    presigned: tuple[Session, bytes] | None = field(default=None, repr=False)

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def parent_msg_id(self) -> str | None:
        value = self.parent_header.get("msg_id")
        return str(value) if value is not None else None

    def content(self) -> dict[str, Any]:
        """The content, parsed on first use (relayed messages never need it)."""
        if self._content is None:
            raw = self.frames[3]
            self._content = json.loads(raw.bytes if isinstance(raw, zmq.Frame) else raw)
        return self._content

    def set_content(self, content: dict[str, Any], session: Session) -> None:
        """Replace the content (the message must then be signed anew)."""
        self._content = content
        self.frames[3] = session.pack(content)
        self.presigned = None

    def as_parent(self) -> dict[str, Any]:
        """The header to put as ``parent_header`` of messages answering this one."""
        return self.header


def parse_frames(
    frames: list[Any], session: Session, resign_for: Session | None = None
) -> Message | None:
    """Verify and split raw frames; ``None`` (and a log line) for a bad or unsigned message.

    Only the header and parent header are decoded; content, metadata and buffers stay the
    frames they arrived as, so relaying a large output copies nothing. The signature is
    checked with ``session.sign`` over the same four frames the sender signed. For a large
    message headed for ``resign_for``'s side, its new signature is computed at the same time
    in a second thread (hashing releases the GIL), so verifying and re-signing cost one pass.
    """
    try:
        idents, raw_list = session.feed_identities(frames, copy=False)
        msg_list: list[zmq.Frame] = list(raw_list)  # type: ignore[arg-type]
        if len(msg_list) < 5:
            raise ValueError(f"a message needs at least 5 frames, got {len(msg_list)}")
        parts = msg_list[1:5]
        presigned = None
        if resign_for is not None and _size(parts) >= LARGE_MESSAGE:
            presigned = (resign_for, _pool().submit(_sign, resign_for, parts))
        if session.auth is not None:
            signature = msg_list[0].bytes
            if not signature:
                raise ValueError("unsigned message")
            if not compare_digest(signature, _sign(session, parts)):
                raise ValueError("invalid signature")
        header = json.loads(parts[0].bytes)
        parent = json.loads(parts[1].bytes)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        log.warning("Dropped a message that failed verification: %s", str(exc)[:120])
        return None
    msg = Message(
        idents=list(idents), frames=list(msg_list[1:]), header=header, parent_header=parent
    )
    if presigned is not None:
        msg.presigned = (presigned[0], presigned[1].result())
    return msg


#: Messages larger than this are signed in two threads at once (hashlib releases the GIL).
LARGE_MESSAGE = 1 << 20
_hash_pool: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _hash_pool
    if _hash_pool is None:
        _hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sign")
    return _hash_pool


def _sign(session: Session, parts: list[Any]) -> bytes:
    signature: bytes = session.sign(parts)
    return signature


def _size(frames: list[Any]) -> int:
    return sum(len(f) for f in frames)


def forward_frames(msg: Message, session: Session, idents: list[bytes] | None = None) -> list[Any]:
    """``msg``'s frames as they go out: unchanged but for a signature with ``session``'s key."""
    frames: list[Any] = list(msg.idents if idents is None else idents)
    frames.append(DELIM)
    if msg.presigned is not None and msg.presigned[0] is session:
        frames.append(msg.presigned[1])
    else:
        frames.append(_sign(session, msg.frames[:4]))
    frames.extend(msg.frames)
    return frames


def new_frames(
    session: Session,
    msg_type: str,
    content: dict[str, Any],
    parent: dict[str, Any] | None,
    idents: list[bytes] | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, list[Any]]:
    """A message of the proxy's own, serialized and signed: its msg_id and its frames."""
    msg = session.msg(msg_type, content, parent=parent, metadata=metadata)
    return msg["header"]["msg_id"], session.serialize(msg, ident=idents)


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

    def __init__(self, info: ConnectionInfo, context: zmq.Context[Any], pump: Pump) -> None:
        self.info = info
        self.session = session_for(info)
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

        self.shell = bind(zmq.ROUTER, info["shell_port"])
        self.control = bind(zmq.ROUTER, info["control_port"])
        self.stdin = bind(zmq.ROUTER, info["stdin_port"])
        self.iopub = bind(zmq.XPUB, info["iopub_port"])
        self.heartbeat = Heartbeat(_url(info, info["hb_port"]))

    def send(self, sock: zmq.Socket[Any], msg: Message, idents: list[bytes] | None = None) -> None:
        """Relay ``msg`` (from the upstream) to the frontend, signed with the frontend key."""
        self.pump.send(sock, forward_frames(msg, self.session, idents))

    def send_new(
        self,
        sock: zmq.Socket[Any],
        msg_type: str,
        content: dict[str, Any],
        parent: dict[str, Any] | None,
        idents: list[bytes] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Send a message of the proxy's own."""
        self.pump.send(
            sock, new_frames(self.session, msg_type, content, parent, idents, metadata)[1]
        )

    def publish(
        self, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None
    ) -> None:
        """Publish a message of the proxy's own on IOPub."""
        topic = [f"kernel.jumper-proxy.{msg_type}".encode()]
        self.send_new(self.iopub, msg_type, content, parent, topic)

    def welcome(self, frames: list[Any]) -> None:
        """Answer an XPUB subscription event with an ``iopub_welcome`` (protocol 5.4+)."""
        frame = frames[0].bytes if frames else b""
        if not frame or frame[0] != 1:
            return
        topic = frame[1:]
        try:
            subscription = topic.decode()
        except UnicodeDecodeError:
            return
        self.send_new(
            self.iopub,
            "iopub_welcome",
            {"subscription": subscription},
            None,
            [topic] if topic else None,
        )

    def watch(self, handlers: dict[str, Handler]) -> None:
        """Start reading: ``handlers`` maps shell/control/stdin to a handler of raw frames."""
        self.pump.watch(self.shell, handlers["shell"])
        self.pump.watch(self.control, handlers["control"])
        self.pump.watch(self.stdin, handlers["stdin"])
        self.pump.watch(self.iopub, self.welcome)

    def close(self) -> None:
        for sock in (self.shell, self.control, self.stdin, self.iopub):
            self.pump.unwatch(sock)
            sock.close(linger=200)
        self.heartbeat.stop()
