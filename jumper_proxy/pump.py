"""Moving frames inside the event loop: every watched socket's messages go straight to its
handler from the loop's selector, with no future or task per message.

A zmq socket's file descriptor is edge-triggered and only says "something changed": a
readable socket is drained until it has no message left, and because a send on a socket can
swallow the edge of a message arriving on it, :meth:`Pump.send` looks at the socket it sent on
right after the send and drains it soon if a message is waiting.

This is the relay's hot path, so frames are sent and received with pyzmq's own socket methods
(``zmq.backend.Socket``) and plain integer flags: the convenience layer above them builds a
flag enum for every frame, which costs more than the frame's send.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq
from zmq.backend import Socket as _RawSocket

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], None]

#: the delimiter between routing frames and a Jupyter message's frames
DELIM = b"<IDS|MSG>"
#: frames after the delimiter that are copied: signature, header, parent header, metadata
_HEAD = 4

_recv, _send, _get = _RawSocket.recv, _RawSocket.send, _RawSocket.get
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether a whole message waits on ``sock`` (zmq delivers multipart messages at once)."""
    return bool(int(_get(sock, _EVENTS)) & _POLLIN)


def receive(sock: zmq.Socket[Any]) -> list[Any]:
    """One multipart message: routing frames, delimiter, signature, headers and metadata as
    ``bytes`` (small, and cheaper copied than wrapped), content and buffers as ``zmq.Frame``
    (a large output is never copied). Raises ``zmq.Again`` when none is waiting."""
    parts: list[Any] = [_recv(sock, _NOBLOCK)]
    left = _HEAD if parts[0] == DELIM else -1  # copied frames still to come after the delimiter
    while _get(sock, _RCVMORE):
        if left == 0:
            parts.append(_recv(sock, _NOBLOCK, copy=False))
            continue
        part = _recv(sock, _NOBLOCK)
        parts.append(part)
        if left > 0:
            left -= 1
        elif part == DELIM:
            left = _HEAD
    return parts


def send(sock: zmq.Socket[Any], frames: list[Any]) -> None:
    """Send a multipart message without blocking: ``bytes`` frames copied into it (cheaper
    than wrapping each), ``zmq.Frame`` ones as they are, uncopied. Raises ``zmq.Again`` when
    the socket cannot take it (a whole message is refused or taken: zmq checks its queue
    limit at the first frame)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, _MORE if i < last else _NOBLOCK)


class Pump:
    """Calls ``handler(frames)`` for every message on each watched socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._watched: dict[zmq.Socket[Any], Handler] = {}
        self._fds: dict[zmq.Socket[Any], int] = {}

    def watch(self, sock: zmq.Socket[Any], handler: Handler) -> None:
        fd = int(sock.getsockopt(zmq.FD))
        self._watched[sock] = handler
        self._fds[sock] = fd
        self.loop.add_reader(fd, self._drain, sock)
        self.loop.call_soon(self._drain, sock)  # messages may already be waiting

    def unwatch(self, sock: zmq.Socket[Any]) -> None:
        fd = self._fds.pop(sock, None)
        self._watched.pop(sock, None)
        if fd is not None:
            self.loop.remove_reader(fd)

    def send(self, sock: zmq.Socket[Any], frames: list[Any]) -> None:
        """Send without blocking (a full queue drops, as PUB and ROUTER sockets do)."""
        try:
            send(sock, frames)
        except zmq.Again:
            log.warning("Dropped a message: the peer is not reading")
        if sock in self._watched and readable(sock):  # the send took the arrival's signal
            self.loop.call_soon(self._drain, sock)

    def _drain(self, sock: zmq.Socket[Any]) -> None:
        while True:
            handler = self._watched.get(sock)
            if handler is None:
                return
            try:
                if not readable(sock):
                    return
                frames = receive(sock)
            except zmq.ZMQError as exc:
                log.error("Stopped reading a socket: %s", exc)
                self.unwatch(sock)
                return
            try:
                handler(frames)
            except Exception:  # one bad message must not stop the relay
                log.exception("Could not handle a message")
