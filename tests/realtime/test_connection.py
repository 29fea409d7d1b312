"""The WebSocket edge and the Link reconnect loop against real loopback servers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from earshot.config import RealtimeConfig, default_config
from earshot.errors import ConfigError, ConnectionLost, HandshakeError
from earshot.realtime.connection import Link, LinkDown, LinkEvent, SendQueue, open_websocket, realtime_url
from earshot.realtime.policy import Verdict, classify
from earshot.realtime.session import SessionReady
from tests.realtime import serverevents as s
from tests.support.links import run_with
from tests.support.schema import check_client_event

KEY_HEADERS = {"Authorization": "Bearer sk-test-not-a-real-key"}


def config_for(url: str, **changes: Any) -> RealtimeConfig:
    base = default_config().realtime
    reconnect = dataclasses.replace(base.reconnect, initial_s=0.01, max_s=0.05, slow_retry_s=30.0)
    fields: dict[str, Any] = {"url": url, "reconnect": reconnect, "open_timeout_s": 2.0, "ready_timeout_s": 2.0}
    return dataclasses.replace(base, **{**fields, **changes})


class Script:
    """A scripted Realtime server: each connection runs the next handler; frames are recorded and checked."""

    def __init__(self, *handlers: Callable[[ServerConnection, Script], Awaitable[None]]) -> None:
        self.handlers = list(handlers)
        self.requests: list[Request] = []
        self.frames: list[list[dict[str, Any]]] = []
        self.connected = asyncio.Event()

    async def __call__(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.requests.append(ws.request)
        self.frames.append([])
        handler = self.handlers[min(len(self.frames), len(self.handlers)) - 1]
        self.connected.set()
        await handler(ws, self)

    async def recv(self, ws: ServerConnection) -> dict[str, Any]:
        frame = json.loads(await ws.recv())
        check_client_event(frame)
        self.frames[-1].append(frame)
        return dict(frame)

    async def handshake(self, ws: ServerConnection) -> None:
        await ws.send(s.session_created())
        update = await self.recv(ws)
        assert update["type"] == "session.update"
        await ws.send(s.session_updated())

    async def drain(self, ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    def audio(self, connection: int) -> np.ndarray[Any, np.dtype[np.int16]]:
        parts = [
            np.frombuffer(base64.b64decode(f["audio"]), dtype="<i2")
            for f in self.frames[connection]
            if f["type"] == "input_audio_buffer.append"
        ]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)


@asynccontextmanager
async def server(
    handler: Callable[[ServerConnection], Awaitable[None]],
    process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, process_request=process_request) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/realtime"


class Collector:
    def __init__(self) -> None:
        self.events: list[LinkEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: LinkEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: type[Any], count: int = 1) -> list[Any]:
        async with asyncio.timeout(10):
            while True:
                found = [e for e in self.events if isinstance(e, kind)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()


async def headers() -> dict[str, str]:
    return dict(KEY_HEADERS)


@asynccontextmanager
async def running(link: Link, collector: Collector) -> AsyncIterator[Link]:
    task = asyncio.create_task(run_with(link, collector))
    try:
        yield link
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------------- open_websocket


def test_realtime_url_adds_the_model() -> None:
    assert realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime-2.1") == (
        "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
    )
    assert realtime_url("ws://127.0.0.1:1/v1/realtime?model=x", "y") == "ws://127.0.0.1:1/v1/realtime?model=x"


async def test_open_sends_bearer_and_no_beta_header() -> None:
    script = Script(lambda ws, sc: sc.drain(ws))
    async with server(script) as url:
        ws = await open_websocket(realtime_url(url, "gpt-realtime-2.1"), KEY_HEADERS, config_for(url))
        await ws.close()
    (request,) = script.requests
    assert request.headers["Authorization"] == "Bearer sk-test-not-a-real-key"
    assert "OpenAI-Beta" not in request.headers
    assert "Sec-WebSocket-Extensions" not in request.headers  # compression off
    assert request.path == "/v1/realtime?model=gpt-realtime-2.1"


@pytest.mark.parametrize("url", ["ws://example.com/v1/realtime", "ws://10.0.0.5/v1/realtime", "http://127.0.0.1/x"])
async def test_plain_ws_to_non_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        await open_websocket(url, KEY_HEADERS, config_for("ws://127.0.0.1:1/"))
    assert classify(info.value) is Verdict.FATAL_FOR_NOW


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(401, Verdict.FATAL_FOR_NOW), (404, Verdict.FATAL_FOR_NOW), (429, Verdict.RETRY), (503, Verdict.RETRY)],
)
async def test_refused_upgrade_keeps_the_status(status: int, verdict: Verdict) -> None:
    def refuse(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(status, "no\n")

    async with server(Script(), process_request=refuse) as url:
        with pytest.raises(HandshakeError) as info:
            await open_websocket(url, KEY_HEADERS, config_for(url))
    assert info.value.status == status
    assert classify(info.value) is verdict


async def test_connection_refused_is_an_oserror_to_retry() -> None:
    async with server(Script()) as url:
        pass  # closed: nothing listens on that port now
    with pytest.raises(ConnectionRefusedError) as info:
        await open_websocket(url, KEY_HEADERS, config_for(url))
    assert classify(info.value) is Verdict.RETRY


async def _silent_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Completes the upgrade and the session handshake, then never answers anything (a half-open peer)."""
    request = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    for message in (s.session_created(), s.session_updated()):
        payload = message.encode()
        writer.write(b"\x81" + bytes([126]) + len(payload).to_bytes(2, "big") + payload)
    await writer.drain()
    with contextlib_suppress():
        while await reader.read(65536):
            pass  # swallow pings, answer nothing
    writer.close()


class contextlib_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


async def test_ping_timeout_detects_a_half_open_peer() -> None:
    """A peer that stops answering pings is dropped after ping_interval + ping_timeout, as a retryable loss."""
    srv = await asyncio.start_server(_silent_peer, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    try:
        config = config_for(url, ping_interval_s=0.1, ping_timeout_s=0.2)
        collector = Collector()
        link = Link(config, headers=headers, rng=random.Random(1))
        link.open()
        async with running(link, collector):
            await collector.wait_for(SessionReady)
            (down, *_) = await collector.wait_for(LinkDown)
        assert down.verdict is Verdict.RETRY
        assert down.error.startswith("ConnectionLost")
    finally:
        srv.close()
        await srv.wait_closed()


async def test_ready_timeout_ends_a_silent_session() -> None:
    async def mute(ws: ServerConnection, sc: Script) -> None:
        await sc.drain(ws)  # never sends session.created

    async with server(Script(mute)) as url:
        collector = Collector()
        link = Link(config_for(url, ready_timeout_s=0.2), headers=headers)
        link.open()
        async with running(link, collector):
            (down, *_) = await collector.wait_for(LinkDown)
    assert "session.created" in down.error
    assert down.verdict is Verdict.RETRY


# ------------------------------------------------------------------------------------------ Link


async def test_link_session_flows_and_audio_arrives() -> None:
    """Ready after session.updated; audio sent before and after ready arrives whole and in order."""
    got_audio = asyncio.Event()

    async def handler(ws: ServerConnection, sc: Script) -> None:
        await sc.handshake(ws)
        while True:
            await sc.recv(ws)
            if sc.audio(0).size >= 4800:
                got_audio.set()

    script = Script(handler)
    async with server(script) as url:
        collector = Collector()
        link = Link(config_for(url), headers=headers)
        audio = s.ramp(4800)
        link.open()
        link.send_audio(audio[:2400], 0.0)  # before any connection: kept
        async with running(link, collector):
            await collector.wait_for(SessionReady)
            link.send_audio(audio[2400:], 0.0)
            link.flush_audio(0.0)
            async with asyncio.timeout(10):
                await got_audio.wait()
            link.close()
    np.testing.assert_array_equal(script.audio(0), audio)
    assert not [e for e in collector.events if isinstance(e, LinkDown)]


async def test_link_reconnects_with_history_and_the_interrupted_turn() -> None:
    """A drop mid-turn: the next session gets the text history, then the turn's audio again from its start."""
    turn = s.ramp(24000, 11)
    dropped = asyncio.Event()
    second_audio = asyncio.Event()

    async def first(ws: ServerConnection, sc: Script) -> None:
        await sc.handshake(ws)
        await ws.send(s.speech_started(0, "u1"))
        await ws.send(s.speech_stopped(500, "u1"))
        await ws.send(s.committed("u1"))
        await ws.send(s.user_transcript("u1", "Hello"))
        await ws.send(s.response("created", "r1"))
        await ws.send(s.output_item_added("r1", "a1"))
        await ws.send(s.transcript_done("r1", "a1", "Hi, how can I help?"))
        await ws.send(s.response("done", "r1", "completed"))
        await ws.send(s.speech_started(500, "u2"))
        while sc.audio(0).size < turn.size:
            await sc.recv(ws)
        dropped.set()
        await ws.close(1011, "internal error")

    async def second(ws: ServerConnection, sc: Script) -> None:
        await sc.handshake(ws)
        while sc.audio(1).size < 11520:  # whole 40 ms messages of the 12000 samples replayed
            await sc.recv(ws)
        second_audio.set()
        await sc.drain(ws)

    script = Script(first, second)
    async with server(script) as url:
        collector = Collector()
        link = Link(config_for(url), headers=headers, rng=random.Random(3))
        link.open()
        async with running(link, collector):
            await collector.wait_for(SessionReady)
            for i in range(0, turn.size, 480):
                link.send_audio(turn[i : i + 480], 0.0)
            async with asyncio.timeout(10):
                await dropped.wait()
                (down,) = await collector.wait_for(LinkDown)
                assert script.frames[1:2] in ([], [[]]) or not any(
                    f["type"] == "input_audio_buffer.append" for f in script.frames[1]
                ), "the turn went again before the app said so"
                link.replay_turn(True)  # the app's decision (the conversation core's)
                await second_audio.wait()
            link.close()
    assert down.verdict is Verdict.RETRY
    assert "1011" in down.error
    creates = [f for f in script.frames[1] if f["type"] == "conversation.item.create"]
    assert [(c["item"]["role"], c["item"]["content"][0]["text"]) for c in creates] == [
        ("user", "Hello"),
        ("assistant", "Hi, how can I help?"),
    ]
    # speech started at 500 ms of the first session's audio: the replay starts there
    np.testing.assert_array_equal(script.audio(1)[:11520], turn[12000 : 12000 + 11520])


async def test_fatal_error_waits_slowly_and_wake_now_retries_at_once() -> None:
    async def bad_key(ws: ServerConnection, sc: Script) -> None:
        await ws.send(s.error("invalid_api_key", "Incorrect API key provided"))
        await sc.drain(ws)

    async def good(ws: ServerConnection, sc: Script) -> None:
        await sc.handshake(ws)
        await sc.drain(ws)

    script = Script(bad_key, good)
    async with server(script) as url:
        collector = Collector()
        link = Link(config_for(url), headers=headers)
        link.open()
        async with running(link, collector):
            (down,) = await collector.wait_for(LinkDown)
            assert down.verdict is Verdict.FATAL_FOR_NOW
            assert down.retry_in_s == 30.0
            assert link.verdict is Verdict.FATAL_FOR_NOW
            assert "sk-test" not in down.error
            link.wake_now()
            await collector.wait_for(SessionReady)
            link.close()
    assert len(script.requests) == 2


async def test_close_ends_the_connection_without_a_retry() -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection, sc: Script) -> None:
        await sc.handshake(ws)
        await sc.drain(ws)
        closed.set()

    script = Script(handler)
    async with server(script) as url:
        collector = Collector()
        link = Link(config_for(url), headers=headers)
        link.open()
        async with running(link, collector):
            await collector.wait_for(SessionReady)
            link.close()
            async with asyncio.timeout(10):
                await closed.wait()
            assert link.session is None or not link.session.ready
    assert len(script.requests) == 1
    assert not [e for e in collector.events if isinstance(e, LinkDown)]


# ----------------------------------------------------------------------------------- send queue


def test_send_queue_bounds_audio_but_never_control_frames() -> None:
    queue = SendQueue(max_audio_chars=100)
    audio = '{"type":"input_audio_buffer.append","audio":"' + "A" * 40 + '"}'
    assert queue.put(audio)
    assert not queue.put(audio)  # 2 × 86 > 100
    assert queue.put('{"type":"response.cancel"}')
    assert queue.audio_chars == len(audio)
    assert queue.pop() == audio
    assert queue.put(audio)
    assert [queue.pop(), queue.pop(), queue.pop()] == ['{"type":"response.cancel"}', audio, None]
    assert queue.audio_chars == 0


def test_connection_lost_keeps_its_code() -> None:
    assert classify(ConnectionLost("x", code=1001)) is Verdict.RETRY
    assert classify(ConnectionLost("x", code=4000)) is Verdict.FATAL_FOR_NOW
