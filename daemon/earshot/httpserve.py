"""A small, bounded HTTP/1.1 server: asyncio for the sockets, h11's state machine for the protocol.

Used where earshot answers HTTP requests with bodies: the token service (devices ask it for
ephemeral Realtime secrets) and the emulator's ``POST /v1/realtime/client_secrets``. h11 parses
what a hostile client sends (request smuggling, bad framing, oversize heads); this module only
bounds it: the head (16 KiB), the body (``max_body`` bytes, refused with 413 before it is read),
the time a client may take to send a request (``read_timeout_s``) and the connections open at once
(``max_connections``; more get 503 and are closed). TLS, with optional client certificates, is the
``ssl`` context's; the peer certificate's common name is handed to the handler.

The handler is an async function from :class:`HttpRequest` to :class:`HttpResponse`; an exception
in it is a 500 with no detail (and a logged traceback), never a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11

__all__ = ["HttpRequest", "HttpResponse", "HttpServer"]

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request, whole: its head, its body and who sent it."""

    method: str
    target: str
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes
    peer: str
    cert_cn: str | None = None
    """The verified client certificate's common name (TLS with client certificates only)."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the handler answers."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def json(cls, status: int, doc: Any, *headers: tuple[str, str]) -> HttpResponse:
        """A JSON body."""
        return cls(status, json.dumps(doc, separators=(",", ":")).encode(), headers=headers)

    @classmethod
    def error(cls, status: int, message: str, *headers: tuple[str, str]) -> HttpResponse:
        """The OpenAI error shape: ``{"error": {"message", "type"}}``."""
        return cls.json(status, {"error": {"message": message, "type": "invalid_request_error"}}, *headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _Refused(Exception):
    """The request is answered with an error before the handler sees it."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


class HttpServer:
    """Serve ``handler`` on ``host:port`` (0 picks a free port) until :meth:`aclose`."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: _ssl.SSLContext | None = None,
        max_body: int = 64 * 1024,
        max_connections: int = 256,
        read_timeout_s: float = 10.0,
        name: str = "http",
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._ssl = ssl
        self._max_body = max_body
        self._max_connections = max_connections
        self._read_timeout_s = read_timeout_s
        self._name = name
        self._open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """``http(s)://host:port`` (after :meth:`start`)."""
        scheme = "https" if self._ssl is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and listen."""
        tls: dict[str, Any] = {}
        if self._ssl is not None:
            tls = {"ssl": self._ssl, "ssl_handshake_timeout": self._read_timeout_s}
        self._server = await asyncio.start_server(self._accept, self._host, self._port, **tls)

    async def aclose(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open += 1
        try:
            if self._open > self._max_connections:
                await self._send_alone(writer, HttpResponse.error(503, "too many connections"))
            else:
                await self._serve(reader, writer)
        except (ConnectionError, _ssl.SSLError, TimeoutError):
            pass
        except Exception:  # a bug here must cost one connection, never the server
            logger.exception("%s: a connection failed", self._name)
        finally:
            self._open -= 1
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, _ssl.SSLError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _send_alone(self, writer: asyncio.StreamWriter, response: HttpResponse) -> None:
        """Answer without reading the request (over the connection limit).

        h11 sends a response only after a request: it is given a minimal one to get there.
        """
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        writer.write(_serialize(conn, response, close=True))
        await asyncio.wait_for(writer.drain(), self._read_timeout_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if isinstance(peer_info, tuple) else "?"
        cert_cn = _common_name(writer.get_extra_info("peercert"))
        while True:
            try:
                request = await asyncio.wait_for(self._read_request(conn, reader, peer, cert_cn), self._read_timeout_s)
            except _Refused as refused:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    writer.write(_serialize(conn, refused.response, close=True))
                    await asyncio.wait_for(writer.drain(), self._read_timeout_s)
                return
            if request is None:
                return
            try:
                response = await self._handler(request)
            except Exception:
                logger.exception("%s: the handler failed on %s %s", self._name, request.method, request.target)
                response = HttpResponse.error(500, "internal error")
            writer.write(_serialize(conn, response, close=False))
            await asyncio.wait_for(writer.drain(), self._read_timeout_s)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, peer: str, cert_cn: str | None
    ) -> HttpRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(HttpResponse.error(exc.error_status_hint, "malformed request")) from None
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data and head is None and conn.their_state is h11.IDLE:
                    return None  # the client closed between requests
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                head = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self._max_body:
                    raise _Refused(HttpResponse.error(413, f"the body is larger than {self._max_body} bytes"))
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    raise _Refused(HttpResponse.error(413, f"the body is larger than {self._max_body} bytes"))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
                return HttpRequest(
                    method=head.method.decode("ascii", "replace"),
                    target=head.target.decode("ascii", "replace"),
                    headers=headers,
                    body=bytes(body),
                    peer=peer,
                    cert_cn=cert_cn,
                )


def _serialize(conn: h11.Connection, response: HttpResponse, *, close: bool) -> bytes:
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Cache-Control", "no-store"),
        *response.headers,
    ]
    if close:
        headers.append(("Connection", "close"))
    out = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    out += conn.send(h11.Data(data=response.body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out


def _common_name(cert: Any) -> str | None:
    """The subject's commonName of a verified peer certificate (``SSLSocket.getpeercert()``)."""
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                return value
    return None
