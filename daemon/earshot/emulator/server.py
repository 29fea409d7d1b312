"""The emulator's shell: a WebSocket server that runs one :class:`~earshot.emulator.protocol.ServerSession` per client.

The protocol is decided in :mod:`earshot.emulator.protocol` (sans I/O). Here: the handshake and its
faults (stall, refuse, auth), the socket (sending each message at its due time, fragmenting
oversize ones, dropping or half-opening the connection on a fault), the timer that calls the core at
its deadline, and the speech engine for replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
import urllib.parse
import wave
from collections.abc import Callable, Iterator
from http import HTTPStatus
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from earshot.emulator import schema, tts, voice
from earshot.emulator.options import FATAL_CODES, EmulatorOptions, SessionRecord, Violation
from earshot.emulator.protocol import ServerSession, VoiceRequest
from earshot.emulator.secrets import PATH as SECRETS_PATH
from earshot.emulator.secrets import ClientSecrets
from earshot.emulator.wire import HUGE_MESSAGE_BYTES, PATH, Out, default_session
from earshot.httpserve import HttpServer

__all__ = ["HUGE_MESSAGE_BYTES", "PATH", "Emulator", "default_session"]

logger = logging.getLogger(__name__)

_FRAGMENT_CHARS = 1024 * 1024


def _fragments(head: str, size: int) -> Iterator[str]:
    """``head``, then base64-looking filler in 1 MiB pieces, then the closing quote: ``size`` characters."""
    yield head
    left = size - len(head) - 2
    filler = "A" * _FRAGMENT_CHARS
    while left > 0:
        yield filler[: min(left, _FRAGMENT_CHARS)]
        left -= _FRAGMENT_CHARS
    yield '"}'


class _Connection:
    """One client connection: the socket, the timer and the voices around its :class:`ServerSession`."""

    def __init__(
        self, emulator: Emulator, ws: ServerConnection, record: SessionRecord, *, beta: bool, key: str
    ) -> None:
        self.emu = emulator
        self.ws = ws
        self.record = record
        self.core = ServerSession(
            emulator.options,
            record,
            now_wall=time.time(),
            add_violation=lambda direction, problem, event: emulator.add_violation(
                record.index, direction, problem, event
            ),
            take_budget=lambda fault, times: emulator.take_budget(fault, times, record.index),
        )
        self._beta, self._key = beta, key
        self.outgoing: asyncio.Queue[Out] = asyncio.Queue()
        self.silent = False  # half-open: nothing more is read or sent
        self.dropped = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the core deadline the timer is set for
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the core's outputs -----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Queue what the core wants sent, start the voices it asked for, set the timer for its deadline."""
        for out in self.core.outputs():
            self.outgoing.put_nowait(out)
        for request in self.core.voice_requests():
            task = asyncio.ensure_future(self._speak(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        deadline = self.core.next_deadline()
        if deadline != self._timer_at:  # most messages leave the deadline where it was
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if deadline is not None:
                self._timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), self._tick)
            self._timer_at = deadline
        self.emu.notify()

    def _tick(self) -> None:
        self._timer, self._timer_at = None, None
        self.core.tick(time.monotonic())
        self._flush()

    def _catch_up(self) -> float:
        """The time for an input from outside the core's own schedule (its due work is done first)."""
        now = time.monotonic()
        self.core.tick(now)
        return now

    async def _speak(self, request: VoiceRequest) -> None:
        try:
            pcm: NDArray[np.int16] = await tts.speak(request.text, request.engine)
        except (OSError, ValueError, EOFError, wave.Error) as exc:  # an engine that cannot start, a broken WAV
            logger.warning("speaking failed (%s): replying with a tone", exc)
            pcm = voice.tone(request.text)
        self.core.voice_ready(request.response_id, pcm, time.monotonic())
        self._flush()

    async def sender(self) -> None:
        """Send queued messages in order, each no earlier than its due time; apply the per-event faults."""
        while True:
            out = await self.outgoing.get()
            delay = out.due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.silent or self.dropped:
                continue
            if out.close is not None:
                await self.ws.close(*out.close)
                return
            assert out.text is not None
            try:
                await self.ws.send(_fragments(out.text, out.size) if out.size else out.text)
            except ConnectionClosed:
                return
            if out.raw:
                continue
            action = self.core.sent(out.kind, time.monotonic())
            if action == "drop":
                self.drop()
            elif action == "half_open":
                self.half_open()
            self._flush()

    # --- faults from outside ----------------------------------------------------------------------------------

    def send_error(self, code: str, message: str | None = None, *, close: bool | None = None) -> None:
        self._catch_up()
        self.core.injected.discard("error")
        self.core.error(message or f"Emulated error: {code}", code=code)
        if close if close is not None else code in FATAL_CODES:
            self.core.close_after_sent(1008, code)
        self._flush()

    def inject(self, action: Callable[[], None]) -> None:
        """Run a fault injection of the core (``send_raw``, ``send_huge``, ``send_oversize``) now."""
        self._catch_up()
        action()
        self._flush()

    def expire(self) -> None:
        self.core.expire(self._catch_up())
        self._flush()

    def drop(self) -> None:
        """Abort the TCP connection now, without a close frame (the client sees 1006)."""
        logger.info("session %d: dropping the connection (fault)", self.record.index)
        self.dropped = True
        self.ws.transport.abort()

    def half_open(self) -> None:
        """Stop reading (so pings go unanswered) and stop sending, keeping the TCP connection open."""
        logger.info("session %d: going half-open (fault)", self.record.index)
        self.silent = True
        self.ws.transport.pause_reading()

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.create_task(self.sender())
        try:
            self.core.open(time.monotonic(), beta=self._beta, key=self._key)
            self._flush()
            async for message in self.ws:
                if self.silent:
                    break
                self.core.receive(message, time.monotonic())
                self._flush()
            if self.silent:
                await self.ws.wait_closed()
        except ConnectionClosed:
            pass
        finally:
            if self._timer is not None:
                self._timer.cancel()
            for task in (*self._tasks, sender):
                task.cancel()
            await asyncio.gather(*self._tasks, sender, return_exceptions=True)
            self.record.close_code = 1006 if self.dropped else self.ws.close_code
            self.emu.notify()
            logger.info("session %d closed (code %s)", self.record.index, self.record.close_code)


class Emulator:
    """A local Realtime-API-compatible WebSocket server (GA protocol), as an async context manager.

    ``async with Emulator(EmulatorOptions(strict=True)) as emu:`` then connect to ``emu.url`` with
    ``?model=…`` and ``Authorization: Bearer <any key>``. Per-connection records are in :attr:`sessions`,
    schema problems in :attr:`violations`; the fault knobs are ``emu.options.faults`` (changeable while
    running) and the methods :meth:`drop`, :meth:`half_open`, :meth:`send_error`, :meth:`expire`.
    """

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.sessions: list[SessionRecord] = []
        self.violations: list[Violation] = []
        self._server: Server | None = None
        self._connections: dict[int, _Connection] = {}
        self._budgets: dict[str, set[int]] = {}
        self._attempts = 0
        self._released = asyncio.Event()
        self._changed = asyncio.Event()
        self.secrets = ClientSecrets(self.options.api_key)
        """``POST /v1/realtime/client_secrets`` (served when ``options.secrets_port`` is set)."""
        self._secrets_server: HttpServer | None = None

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``ws://HOST:PORT/v1/realtime`` (add ``?model=…``)."""
        return f"ws://{self.options.host}:{self.port}{PATH}"

    @property
    def secrets_url(self) -> str:
        """``http://HOST:PORT/v1/realtime/client_secrets`` (with ``options.secrets_port`` set)."""
        if self._secrets_server is None:
            raise RuntimeError("the client_secrets endpoint is not running (options.secrets_port)")
        return self._secrets_server.url + SECRETS_PATH

    @property
    def handshakes(self) -> int:
        """Upgrade requests seen (refused and stalled ones included)."""
        return self._attempts

    def received_audio(self, session: int | None = None) -> NDArray[np.int16]:
        """Input audio appended (24 kHz int16): of one session, or of all sessions end to end."""
        records = self.sessions if session is None else [self.sessions[session]]
        parts = [r.received_audio() for r in records]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)

    def add_violation(self, session: int, direction: str, problem: str, event: Any) -> None:
        """Record a schema problem (and log it)."""
        violation = Violation(session, direction, problem, event)
        logger.warning("schema violation: %s", violation)
        self.violations.append(violation)

    def take_budget(self, fault: str, times: int | None, key: int) -> bool:
        """Whether ``fault`` may hit ``key`` (a connection or handshake) within its ``times`` budget."""
        used = self._budgets.setdefault(fault, set())
        if key in used:
            return True
        if times is not None and len(used) >= times:
            return False
        used.add(key)
        return True

    async def wait_for(self, predicate: Callable[[], bool], within_s: float = 10.0) -> None:
        """Wait until ``predicate()`` is true, re-checked whenever the emulator sends or receives."""
        async with asyncio.timeout(within_s):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def notify(self) -> None:
        """Wake :meth:`wait_for` callers: something was recorded."""
        self._changed.set()

    # --- runtime fault actions ---------------------------------------------------------------------------

    def _live(self) -> list[_Connection]:
        return list(self._connections.values())

    def drop(self) -> None:
        """Abort every open connection's TCP socket now."""
        for conn in self._live():
            conn.drop()

    def half_open(self) -> None:
        """Make every open connection half-open (no reads, so no pongs; no sends)."""
        for conn in self._live():
            conn.half_open()

    def send_error(self, code: str, message: str | None = None, *, close: bool | None = None) -> None:
        """Send an ``error`` with ``code`` on every open connection (fatal codes then close with 1008)."""
        for conn in self._live():
            conn.send_error(code, message, close=close)

    def send_raw(self, text: str) -> None:
        """Send a text frame as is (malformed JSON, unknown event types) on every open connection."""
        for conn in self._live():
            conn.inject(functools.partial(conn.core.send_raw, text))

    def send_huge(self) -> None:
        """Send a valid ~10 MB event on every open connection."""
        for conn in self._live():
            conn.inject(conn.core.send_huge)

    def send_oversize(self, size: int = 64 * 1024 * 1024) -> None:
        """Send one audio delta of ``size`` characters, in 1 MiB fragments, on every open connection."""
        for conn in self._live():
            conn.inject(functools.partial(conn.core.send_oversize, size))

    def expire(self) -> None:
        """Expire every open session now (``session_expired`` + close 1001)."""
        for conn in self._live():
            conn.expire()

    # --- server ------------------------------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        self._attempts += 1
        attempt = self._attempts
        f = self.options.faults
        if f.stall_handshake_s is not None and self.take_budget("stall", f.stall_times, attempt):
            logger.info("stalling handshake %d (fault)", attempt)
            timeout = None if math.isinf(f.stall_handshake_s) else f.stall_handshake_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), timeout)
        if f.refuse_status is not None and self.take_budget("refuse", f.refuse_times, attempt):
            logger.info("refusing handshake %d with %s (fault)", attempt, f.refuse_status or "a TCP close")
            if f.refuse_status == 0:
                ws.transport.abort()
                return ws.respond(HTTPStatus.SERVICE_UNAVAILABLE, "")
            return ws.respond(f.refuse_status, f"Emulated refusal {f.refuse_status}\n")
        url = urllib.parse.urlsplit(request.path)
        if url.path != PATH:
            return ws.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return ws.respond(HTTPStatus.UNAUTHORIZED, "Missing bearer authentication in header\n")
        key = key.strip()
        if key.startswith("ek_"):
            if self.secrets.lookup(key) is None:
                return ws.respond(HTTPStatus.UNAUTHORIZED, "Invalid or expired ephemeral key\n")
        elif self.options.api_key is not None and key != self.options.api_key and not key.startswith("sk-bad"):
            return ws.respond(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided\n")
        query = urllib.parse.parse_qs(url.query)
        if not query.get("model", [""])[0] and not query.get("call_id"):
            return ws.respond(HTTPStatus.BAD_REQUEST, "Missing required parameter: 'model'.\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        url = urllib.parse.urlsplit(request.path)
        model = urllib.parse.parse_qs(url.query).get("model", ["gpt-realtime"])[0]
        headers = {k: v for k, v in request.headers.raw_items() if k.lower() != "authorization"}
        record = SessionRecord(index=len(self.sessions), path=request.path, model=model, headers=headers)
        key = request.headers.get("Authorization", "").partition(" ")[2].strip()
        minted = self.secrets.lookup(key) if key.startswith("ek_") else None
        if minted is not None:
            record.pinned = minted.session
        self.sessions.append(record)
        beta = any(k.lower() == "openai-beta" for k in headers)
        logger.info("session %d opened (model %s)", record.index, model)
        conn = _Connection(self, ws, record, beta=beta, key=key)
        self._connections[record.index] = conn
        try:
            await conn.run()
        finally:
            del self._connections[record.index]

    async def __aenter__(self) -> Emulator:
        self._released.clear()
        # The SDK's pydantic schema takes seconds to build; build it before listening so that the first
        # connection's handshake-to-session.created time is honest (it is cached per process).
        await asyncio.to_thread(schema.available)
        self._server = await serve(
            self._handler,
            self.options.host,
            self.options.port,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            ping_interval=self.options.ping_interval_s,
            ping_timeout=self.options.ping_timeout_s,
            close_timeout=1.0,
        )
        logger.info("Realtime emulator listening on %s", self.url)
        if self.options.secrets_port is not None:
            self._secrets_server = HttpServer(
                self.secrets.handle, host=self.options.host, port=self.options.secrets_port, name="client_secrets"
            )
            await self._secrets_server.start()
            logger.info("client secrets at %s", self.secrets_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._released.set()
        for conn in self._live():
            if conn.silent:
                conn.ws.transport.abort()
        if self._secrets_server is not None:
            await self._secrets_server.aclose()
            self._secrets_server = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        logger.info("Realtime emulator stopped")
