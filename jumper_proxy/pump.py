"""Moving frames inside the event loop: every watched socket's messages go straight to its
handler from the loop's selector, with no future or task per message.

A zmq socket's file descriptor is edge-triggered and only says "something changed": a
readable socket is drained until it would block, and because a send on a socket can swallow
the edge of a message arriving on it, every send through :meth:`Pump.send` schedules one look
at the sockets sent on since the last look.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], None]

#: the delimiter between routing frames and a Jupyter message's frames
DELIM = b"<IDS|MSG>"
#: frames after the delimiter that are copied: signature, header, parent header, metadata
_HEAD = 4


def receive(sock: zmq.Socket[Any]) -> list[Any]:
    """One multipart message: routing frames, delimiter, signature, headers and metadata as
    ``bytes`` (small, and cheaper copied than wrapped), content and buffers as ``zmq.Frame``
    (a large output is never copied). Raises ``zmq.Again`` when none is waiting."""
    recv, more = sock.recv, sock.getsockopt
    parts: list[Any] = [recv(zmq.NOBLOCK)]
    left = _HEAD if parts[0] == DELIM else -1  # copied frames still to come after the delimiter
    while more(zmq.RCVMORE):
        if left == 0:
            parts.append(recv(zmq.NOBLOCK, copy=False))
            continue
        part = recv(zmq.NOBLOCK)
        parts.append(part)
        if left > 0:
            left -= 1
        elif part == DELIM:
            left = _HEAD
    return parts


class Pump:
    """Calls ``handler(frames)`` for every message on each watched socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._watched: dict[zmq.Socket[Any], Handler] = {}
        self._fds: dict[zmq.Socket[Any], int] = {}
        self._sent_on: set[zmq.Socket[Any]] = set()

    def watch(self, sock: zmq.Socket[Any], handler: Handler) -> None:
        fd = int(sock.getsockopt(zmq.FD))
        self._watched[sock] = handler
        self._fds[sock] = fd
        self.loop.add_reader(fd, self._drain, sock)
        self._schedule_sweep(sock)  # messages may already be waiting

    def unwatch(self, sock: zmq.Socket[Any]) -> None:
        fd = self._fds.pop(sock, None)
        self._watched.pop(sock, None)
        if fd is not None:
            self.loop.remove_reader(fd)

    def send(self, sock: zmq.Socket[Any], frames: list[Any]) -> None:
        """Send without blocking (a full queue drops, as PUB and ROUTER sockets do)."""
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("Dropped a message: the peer is not reading")
        if sock in self._watched:
            self._schedule_sweep(sock)

    def _drain(self, sock: zmq.Socket[Any]) -> None:
        while True:
            handler = self._watched.get(sock)
            if handler is None:
                return
            try:
                frames = receive(sock)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.error("Stopped reading a socket: %s", exc)
                self.unwatch(sock)
                return
            try:
                handler(frames)
            except Exception:  # one bad message must not stop the relay
                log.exception("Could not handle a message")

    def _schedule_sweep(self, sock: zmq.Socket[Any]) -> None:
        if not self._sent_on:
            self.loop.call_soon(self._sweep)
        self._sent_on.add(sock)

    def _sweep(self) -> None:
        socks, self._sent_on = self._sent_on, set()
        for sock in socks:
            if sock not in self._watched:
                continue
            try:
                readable = int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN
            except zmq.ZMQError:
                continue
            if readable:
                self._drain(sock)
