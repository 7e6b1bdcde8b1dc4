"""Messages as they cross the proxy: splitting frames, checking what the proxy acts on, and one
builder per protocol shape the proxy sends itself.

A :class:`Message` keeps the frames it arrived as (``[signature, header, parent_header,
metadata, content, *buffers]``) and decodes only the two headers, so forwarding it sends those
same frames, signature included: the upstream shares the frontend connection's key, and each
end checks the signatures it receives, as it does anyway. JSON is decoded as jupyter_client
decodes it (UTF-8 with ``errors="replace"``), so a lone surrogate in a reply cannot stop the
proxy.

The proxy checks the messages it acts on itself (:class:`Verifier`): the signature, a bounded
history of accepted signatures (a replayed message is dropped, as jupyter_client drops it), and
everything the kernel would refuse silently (missing ``msg_id``, undecodable or too deeply nested
JSON, content or metadata that is not an object).

Messages of the proxy's own are made from an :class:`Outgoing` (type, content, metadata) by the
builders below and signed with ``Session.serialize``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from hmac import compare_digest
from typing import Any

import zmq
from jupyter_client.session import DELIM, Session

from jumper_proxy.errors import WireError

#: accepted signatures remembered to drop replays (jupyter_client keeps 2**16 too)
SIGNATURE_HISTORY = 1 << 16


def _raw(frame: Any) -> bytes:
    return frame.bytes if isinstance(frame, zmq.Frame) else bytes(frame)


def decode_json(frame: Any, what: str) -> Any:
    """A frame's JSON, decoded as jupyter_client decodes it; WireError when it cannot be."""
    try:
        return json.loads(_raw(frame).decode("utf-8", "replace"))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"{what} is not valid JSON ({type(exc).__name__})") from None


def decode_object(frame: Any, what: str) -> dict[str, Any]:
    value = decode_json(frame, what)
    if not isinstance(value, dict):
        raise WireError(f"{what} is not a JSON object")
    return value


@dataclass(eq=False)
class Message:
    """A message close to the wire.

    ``idents`` are the routing frames before the delimiter (the topic for IOPub messages);
    ``frames`` are ``[signature, header, parent_header, metadata, content, *buffers]`` exactly
    as received.
    """

    idents: list[bytes]
    frames: list[Any]
    header: dict[str, Any]
    parent_header: dict[str, Any]
    _content: dict[str, Any] | None = field(default=None, repr=False)

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

    @property
    def signature(self) -> bytes:
        return _raw(self.frames[0])

    def content(self) -> dict[str, Any]:
        """The content, decoded on first use (relayed messages never need it)."""
        if self._content is None:
            self._content = decode_object(self.frames[4], "content")
        return self._content

    def metadata(self) -> dict[str, Any]:
        return decode_object(self.frames[3], "metadata")

    def set_content(self, content: dict[str, Any], session: Session) -> None:
        """Replace the content and sign the message anew with ``session``'s key."""
        self._content = content
        self.frames[4] = session.pack(content)
        self.frames[0] = session.sign(self.frames[1:5])

    def as_parent(self) -> dict[str, Any]:
        """The header to put as ``parent_header`` of messages answering this one."""
        return self.header

    def to_wire(self, idents: list[bytes] | None = None) -> list[Any]:
        """The frames to send: ``idents`` (default: the ones it came with), the delimiter, and
        the message's own frames, unchanged."""
        return [*(self.idents if idents is None else idents), DELIM, *self.frames]


def split(frames: list[Any]) -> Message:
    """Routing frames and message frames apart, the two headers decoded; WireError if the
    frames are not a message."""
    i = next((n for n, f in enumerate(frames) if len(f) == len(DELIM) and _raw(f) == DELIM), None)
    if i is None:
        raise WireError("no delimiter")
    body = list(frames[i + 1 :])
    if len(body) < 5:
        raise WireError(f"a message needs at least 5 frames, got {len(body)}")
    return Message(
        idents=[_raw(f) for f in frames[:i]],
        frames=body,
        header=decode_object(body[1], "header"),
        parent_header=decode_object(body[2], "parent header"),
    )


class SignatureHistory:
    """The last ``size`` accepted signatures, oldest forgotten first."""

    def __init__(self, size: int = SIGNATURE_HISTORY) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, signature: object) -> bool:
        return signature in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, signature: bytes) -> None:
        self._seen[signature] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


class Verifier:
    """Checks a frontend message before the proxy acts on it."""

    def __init__(self, session: Session, history: SignatureHistory | None = None) -> None:
        self.session = session
        self.history = history if history is not None else SignatureHistory()

    def check(self, msg: Message) -> None:
        """Raise WireError (saying why) unless ``msg`` is authentic, new, and well formed."""
        if self.session.auth is not None:
            signature = msg.signature
            if not signature:
                raise WireError("unsigned message")
            if not compare_digest(signature, self.session.sign(msg.frames[1:5])):
                raise WireError("invalid signature")
            if signature in self.history:
                raise WireError("replayed message (its signature was seen before)")
        for key in ("msg_id", "msg_type"):
            if not isinstance(msg.header.get(key), str) or not msg.header[key]:
                raise WireError(f"header without {key}")
        msg.metadata()
        msg.content()
        if self.session.auth is not None:
            self.history.add(msg.signature)


@dataclass(frozen=True)
class Outgoing:
    """A message of the proxy's own before it is signed: its type, content and metadata."""

    msg_type: str
    content: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def serialize(
    session: Session,
    out: Outgoing,
    parent: dict[str, Any] | None,
    idents: list[bytes] | None = None,
) -> tuple[str, list[Any]]:
    """``out`` as signed frames (behind ``idents``): its msg_id and the frames."""
    msg = session.msg(out.msg_type, out.content, parent=parent, metadata=out.metadata)
    return msg["header"]["msg_id"], session.serialize(msg, ident=idents)


# ---- the protocol's shapes ------------------------------------------------------------------


def status(state: str) -> Outgoing:
    return Outgoing("status", {"execution_state": state})


def execute_input(code: str, count: int | None) -> Outgoing:
    return Outgoing("execute_input", {"code": code, "execution_count": count})


def stream(name: str, text: str) -> Outgoing:
    return Outgoing("stream", {"name": name, "text": text})


def display(
    data: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    display_id: str | None = None,
    update: bool = False,
) -> Outgoing:
    transient: dict[str, Any] = {"display_id": display_id} if display_id is not None else {}
    content = {"data": data, "metadata": metadata or {}, "transient": transient}
    return Outgoing("update_display_data" if update else "display_data", content)


def error(ename: str, evalue: str, traceback: list[str] | None = None) -> Outgoing:
    """The IOPub ``error`` output."""
    tb = traceback or [f"{ename}: {evalue}"]
    return Outgoing("error", {"ename": ename, "evalue": evalue, "traceback": tb})


def reply_type(request_type: str) -> str:
    """``execute_request`` → ``execute_reply``."""
    return request_type.rsplit("_", 1)[0] + "_reply"


def execute_ok(count: int | None) -> Outgoing:
    content: dict[str, Any] = {
        "status": "ok",
        "execution_count": count,
        "user_expressions": {},
        "payload": [],
    }
    return Outgoing("execute_reply", content, {"status": "ok"})


def error_reply(
    request_type: str,
    ename: str,
    evalue: str,
    traceback: list[str] | None = None,
    count: int | None = None,
) -> Outgoing:
    """An error reply to a request of ``request_type``."""
    content: dict[str, Any] = {
        "status": "error",
        "ename": ename,
        "evalue": evalue,
        "traceback": traceback or [f"{ename}: {evalue}"],
    }
    if request_type == "execute_request":
        content.update(execution_count=count, user_expressions={}, payload=[])
    return Outgoing(reply_type(request_type), content, {"status": "error"})


def aborted(request_type: str) -> Outgoing:
    return Outgoing(reply_type(request_type), {"status": "aborted"}, {"status": "aborted"})


def reply(request_type: str, content: dict[str, Any]) -> Outgoing:
    return Outgoing(reply_type(request_type), content)


__all__ = [
    "DELIM",
    "Message",
    "Outgoing",
    "SignatureHistory",
    "Verifier",
    "aborted",
    "decode_json",
    "display",
    "error",
    "error_reply",
    "execute_input",
    "execute_ok",
    "reply",
    "serialize",
    "split",
    "status",
    "stream",
]
