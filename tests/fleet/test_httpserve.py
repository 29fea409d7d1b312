"""The bounded HTTP server under hostile clients: oversize bodies, bad framing, slow clients, floods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from earshot.httpserve import HttpRequest, HttpResponse, HttpServer

seen: list[HttpRequest] = []


async def echo(request: HttpRequest) -> HttpResponse:
    seen.append(request)
    if request.target == "/boom":
        raise RuntimeError("handler bug")
    return HttpResponse.json(200, {"method": request.method, "length": len(request.body)})


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    seen.clear()
    async with HttpServer(echo, max_body=1000, max_connections=4, read_timeout_s=0.5) as srv:
        yield srv


async def exchange(server: HttpServer, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    return data


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


async def test_a_request_with_a_body_is_answered(server: HttpServer) -> None:
    data = await exchange(server, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert status(data) == 200
    assert data.endswith(b'{"method":"POST","length":5}')
    assert seen[0].body == b"hello"
    assert seen[0].headers["host"] == "a"


async def test_two_requests_on_one_connection(server: HttpServer) -> None:
    one = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
    two = b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    data = await exchange(server, one + two)
    assert data.count(b"HTTP/1.1 200") == 2
    assert [r.target for r in seen] == ["/a", "/b"]


async def test_an_oversize_body_is_refused_before_it_is_read(server: HttpServer) -> None:
    data = await exchange(server, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\nabc")
    assert status(data) == 413
    assert seen == []


async def test_an_oversize_chunked_body_is_refused(server: HttpServer) -> None:
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    data = await exchange(server, b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3)
    assert status(data) == 413
    assert seen == []


@pytest.mark.parametrize(
    "raw",
    [
        b"NONSENSE\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"GET /x HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n",
    ],
)
async def test_malformed_requests_get_a_4xx_and_never_reach_the_handler(server: HttpServer, raw: bytes) -> None:
    data = await exchange(server, raw)
    assert 400 <= status(data) < 500
    assert seen == []


async def test_a_client_that_never_finishes_is_cut_off(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5.0)  # closed after read_timeout_s, not held forever
    writer.close()
    assert b"200" not in data
    assert seen == []


async def test_more_connections_than_allowed_get_503(server: HttpServer) -> None:
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    data = await exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    for _, writer in held:
        writer.close()
    assert status(data) == 503


async def test_a_handler_bug_is_a_500_not_a_dropped_connection(server: HttpServer) -> None:
    data = await exchange(server, b"GET /boom HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert status(data) == 500
    assert b"handler bug" not in data
