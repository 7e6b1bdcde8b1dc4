"""The pump on real zmq sockets in one process (inproc): every message reaches its handler,
also those whose readability edge a send on the same socket swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from jumper_proxy.pump import Pump


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://pump-test")
    b.connect("inproc://pump-test")
    yield a, b
    a.close(linger=0)
    b.close(linger=0)
    ctx.term()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.001)


def test_every_message_reaches_the_handler_in_order(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    a, b = pair
    got: list[bytes] = []

    async def main() -> None:
        pump = Pump(asyncio.get_running_loop())
        for n in range(3):  # waiting before the socket is watched
            b.send_multipart([b"early", str(n).encode()])
        pump.watch(a, lambda frames: got.append(bytes(frames[1])))
        for n in range(3, 200):
            b.send_multipart([b"late", str(n).encode()])
        await _until(lambda: len(got) == 200)

    asyncio.run(main())
    assert got == [str(n).encode() for n in range(200)]


def test_a_send_on_the_socket_does_not_lose_a_message_arriving_on_it(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    a, b = pair
    got: list[bytes] = []

    async def main() -> None:
        pump = Pump(asyncio.get_running_loop())
        pump.watch(a, lambda frames: got.append(bytes(frames[0])))
        for n in range(50):
            b.send(str(n).encode())  # it arrives on a, and a's descriptor says so ...
            pump.send(a, [b"out"])  # ... until this send on a consumes that signal
            assert b.recv() == b"out"
            await _until(lambda n=n: len(got) > n)

    asyncio.run(main())
    assert got == [str(n).encode() for n in range(50)]


def test_a_failing_handler_does_not_stop_the_socket(
    pair: tuple[zmq.Socket[Any], zmq.Socket[Any]],
) -> None:
    a, b = pair
    got: list[bytes] = []

    def handle(frames: list[Any]) -> None:
        if bytes(frames[0]) == b"bad":
            raise ValueError("a bad message")
        got.append(bytes(frames[0]))

    async def main() -> None:
        pump = Pump(asyncio.get_running_loop())
        pump.watch(a, handle)
        for part in (b"one", b"bad", b"two"):
            b.send(part)
        await _until(lambda: len(got) == 2)

    asyncio.run(main())
    assert got == [b"one", b"two"]
