"""tests/support/proxy.py: each fault mode proven against a real echo server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.support.proxy import FaultProxy


@dataclass
class Echo:
    """A loopback echo server that counts what it received."""

    port: int = 0
    received: int = 0
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    state = Echo()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        try:
            while data := await reader.read(65536):
                state.received += len(data)
                writer.write(data)
                await writer.drain()
            await _close(writer)
        except OSError:
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for w in state.writers:
            w.transport.abort()
        await server.wait_closed()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


async def _open(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), 10)


async def test_pass_through_and_counters(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await _open(proxy)
    payload = bytes(range(256)) * 1000
    assert await _roundtrip(reader, writer, payload) == payload
    assert proxy.bytes_up == len(payload)
    assert proxy.bytes_down == len(payload)
    assert proxy.connections == 1
    assert proxy.active == 1
    writer.write_eof()  # half-close passes through: the echo server closes, so does the proxy
    assert await reader.read() == b""
    await proxy.wait_until(lambda p: p.active == 0)
    await _close(writer)
    assert echo.received == len(payload)


async def test_delay_adds_one_way_latency_each_way(proxy: FaultProxy) -> None:
    reader, writer = await _open(proxy)
    assert await _roundtrip(reader, writer, b"warm") == b"warm"
    proxy.set_delay(0.15)
    start = time.monotonic()
    assert await _roundtrip(reader, writer, b"ping") == b"ping"
    assert time.monotonic() - start >= 0.3  # a lower bound only: 2 x 150 ms
    proxy.set_delay(0.2, 0.0)
    start = time.monotonic()
    assert await _roundtrip(reader, writer, b"pong") == b"pong"
    assert time.monotonic() - start >= 0.2
    await _close(writer)


async def test_delay_keeps_order_of_pipelined_writes(proxy: FaultProxy) -> None:
    proxy.set_delay(0.05)
    reader, writer = await _open(proxy)
    for i in range(50):
        writer.write(f"{i:03d}".encode())
        await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(150), 10)
    assert data == b"".join(f"{i:03d}".encode() for i in range(50))
    await _close(writer)


async def test_cut_closes_every_connection(proxy: FaultProxy) -> None:
    pairs = [await _open(proxy) for _ in range(3)]
    for reader, writer in pairs:
        assert await _roundtrip(reader, writer, b"hi") == b"hi"
    assert proxy.active == 3
    proxy.cut()
    for reader, writer in pairs:
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        await _close(writer)
    await proxy.wait_until(lambda p: p.active == 0)
    reader, writer = await _open(proxy)  # new connections still work after a cut
    assert await _roundtrip(reader, writer, b"again") == b"again"
    await _close(writer)


async def test_blackhole_is_half_open(proxy: FaultProxy, echo: Echo) -> None:
    reader, writer = await _open(proxy)
    assert await _roundtrip(reader, writer, b"before") == b"before"
    proxy.blackhole()
    writer.write(b"lost in the void")
    await writer.drain()
    await proxy.wait_until(lambda p: p.bytes_dropped == len(b"lost in the void"))
    assert echo.received == len(b"before")
    # The socket is still open: no EOF, no reset, just nothing.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.2)
    assert not reader.at_eof()
    assert proxy.active == 1
    await _close(writer)


async def test_blackhole_stalls_new_connections(proxy: FaultProxy, echo: Echo) -> None:
    proxy.blackhole()
    reader, writer = await _open(proxy)  # TCP accepts, but the target never sees it
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    await proxy.wait_until(lambda p: p.bytes_dropped == 18)
    assert echo.connections == 0
    assert proxy.connections == 1
    proxy.cut()
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(reader.readexactly(1), 10)
    await _close(writer)


async def test_throttle_caps_the_rate(proxy: FaultProxy) -> None:
    reader, writer = await _open(proxy)
    proxy.throttle(20_000)
    payload = b"x" * 8000
    start = time.monotonic()
    assert await _roundtrip(reader, writer, payload) == payload
    # each direction at most 20 kB/s after a burst of one 20 ms slice (400 bytes)
    assert time.monotonic() - start >= (8000 - 400) / 20_000
    proxy.throttle(None)
    await _close(writer)


async def test_refuse_close_accepts_and_closes(proxy: FaultProxy, echo: Echo) -> None:
    await proxy.refuse("close")
    reader, writer = await _open(proxy)
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        await asyncio.wait_for(reader.readexactly(1), 10)
    await _close(writer)
    assert proxy.refused == 1
    assert echo.connections == 0


async def test_refuse_stop_then_restore_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    await proxy.refuse("stop")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await proxy.restore()
    assert proxy.port == port
    reader, writer = await _open(proxy)
    assert await _roundtrip(reader, writer, b"back") == b"back"
    await _close(writer)


async def test_target_down_closes_the_client() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with FaultProxy("127.0.0.1", port) as proxy:
        reader, writer = await _open(proxy)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        await _close(writer)
        await proxy.wait_until(lambda p: p.active == 0)


async def test_restore_clears_every_fault(proxy: FaultProxy) -> None:
    proxy.set_delay(5.0)
    proxy.throttle(1)
    proxy.blackhole()
    await proxy.refuse("close")
    await proxy.restore()
    reader, writer = await _open(proxy)
    assert await _roundtrip(reader, writer, b"clean") == b"clean"
    await _close(writer)
