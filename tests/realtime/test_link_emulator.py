"""Link + RealtimeSession against the project's Realtime emulator: a spoken exchange, zero schema violations."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import pytest

from earshot.config import default_config
from earshot.emulator.options import DefaultScript, EmulatorOptions
from earshot.emulator.server import Emulator
from earshot.realtime.connection import Link, LinkDown, LinkEvent
from earshot.realtime.session import (
    PlayAudio,
    RealtimeSession,
    ResponseDone,
    ServerError,
    SessionReady,
    TurnCommitted,
)
from tests.support.links import run_with
from tests.support.speech import concat, read_wav, silence, synth


async def test_spoken_exchange_against_the_emulator() -> None:
    """A spoken turn streamed live is committed by server VAD and answered with audio; nothing violates the schema."""
    pcm, rate = read_wav(synth("What time is it in the kitchen?", rate_hz=24000))
    assert rate == 24000
    turn = concat(silence(0.3, 24000), pcm, silence(1.5, 24000))
    events: list[LinkEvent] = []
    done = asyncio.Event()

    def on_event(event: LinkEvent) -> None:
        events.append(event)
        if isinstance(event, ResponseDone):
            done.set()

    async with Emulator(EmulatorOptions(strict=True, voice_engine="tone")) as emu:
        config = dataclasses.replace(default_config().realtime, url=emu.url)

        async def headers() -> dict[str, str]:
            return {"Authorization": "Bearer sk-test"}

        link = Link(config, headers=headers)
        task = asyncio.create_task(run_with(link, on_event))
        try:
            link.open()
            loop = asyncio.get_running_loop()
            for i in range(0, turn.size, 240):  # 10 ms pieces, as fast as the loop goes
                link.send_audio(turn[i : i + 240], loop.time())
                await asyncio.sleep(0)
            link.flush_audio(loop.time())
            async with asyncio.timeout(30):
                await done.wait()
            received = emu.received_audio()
            link.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert emu.violations == []
    kinds = [type(e) for e in events]
    assert kinds.index(SessionReady) < kinds.index(TurnCommitted) < kinds.index(PlayAudio)
    assert sum(e.pcm.size for e in events if isinstance(e, PlayAudio)) > 2400
    # the first words are in what the server received: all of the turn, from its first sample
    np.testing.assert_array_equal(received[: turn.size - 960], turn[: turn.size - 960])


async def test_a_loop_catching_up_is_not_a_stalled_network() -> None:
    """Seconds of audio at once (a slow CPU catching up) overflow the send queue while the socket takes
    bytes: the link keeps the connection and delivers all of it, where the old rule called it a stall."""
    pcm, _ = read_wav(synth("Tell me about the weather on the mountain tomorrow.", rate_hz=24000))
    turn = concat(silence(0.3, 24000), pcm, silence(1.5, 24000))
    events: list[LinkEvent] = []
    ready, done = asyncio.Event(), asyncio.Event()

    def on_event(event: LinkEvent) -> None:
        events.append(event)
        if isinstance(event, SessionReady):
            ready.set()
        if isinstance(event, ResponseDone):
            done.set()

    async with Emulator(EmulatorOptions(strict=True, voice_engine="tone")) as emu:
        config = dataclasses.replace(default_config().realtime, url=emu.url, send_queue_ms=1000)

        async def headers() -> dict[str, str]:
            return {"Authorization": "Bearer sk-test"}

        link = Link(config, headers=headers)
        task = asyncio.create_task(run_with(link, on_event))
        try:
            link.open()
            async with asyncio.timeout(10):
                await ready.wait()
            loop = asyncio.get_running_loop()
            for i in range(0, turn.size, 240):  # all of it in one turn of the loop: no await in between
                link.send_audio(turn[i : i + 240], loop.time())
            link.flush_audio(loop.time())
            async with asyncio.timeout(30):
                await done.wait()
            received = emu.received_audio()
            link.close()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert emu.violations == []
    assert not [e for e in events if isinstance(e, LinkDown)]
    assert len(emu.sessions) == 1
    np.testing.assert_array_equal(received[: turn.size - 960], turn[: turn.size - 960])


async def test_a_large_message_is_parsed_off_the_loop_and_small_ones_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10 MB item is parsed in the parse thread (the loop keeps running); a normal event on the loop."""
    threads: list[tuple[int, int]] = []  # (message size, parsing thread)
    parse = RealtimeSession.parse

    def watched(self: RealtimeSession, raw: str | bytes) -> object:
        threads.append((len(raw), threading.get_ident()))
        return parse(self, raw)

    monkeypatch.setattr(RealtimeSession, "parse", watched)
    ready, after = asyncio.Event(), asyncio.Event()

    def on_event(event: LinkEvent) -> None:
        if isinstance(event, SessionReady):
            ready.set()
        elif isinstance(event, ServerError):
            after.set()

    async with Emulator(EmulatorOptions(strict=True, voice_engine="tone")) as emu:
        config = dataclasses.replace(default_config().realtime, url=emu.url)

        async def headers() -> dict[str, str]:
            return {"Authorization": "Bearer sk-test"}

        link = Link(config, headers=headers)
        task = asyncio.create_task(run_with(link, on_event))
        try:
            link.open()
            async with asyncio.timeout(30):
                await ready.wait()
                emu.send_huge()
                emu.send_error("rate_limit_exceeded", close=False)  # in order: it arrives once the huge one is in
                await after.wait()
        finally:
            link.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    loop_thread = threading.get_ident()
    large = [t for size, t in threads if size > 10_000_000]
    small = [t for size, t in threads if size < 1000]
    assert large
    assert all(t != loop_thread for t in large)
    assert small
    assert all(t == loop_thread for t in small)


async def test_an_app_that_falls_behind_holds_the_reader_back_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nobody takes the link's events for a while: the queue stops at its byte bound (plus the message
    being parsed), the socket keeps the rest, and every sample arrives in order once the app reads again."""
    from earshot.realtime import connection

    monkeypatch.setattr(connection, "MAX_QUEUED_EVENT_BYTES", 64 * 1024)
    pcm, _ = read_wav(synth("Tell me a long story about the sea, please.", rate_hz=24000))
    turn = concat(silence(0.3, 24000), pcm, silence(1.5, 24000))
    long_reply = " ".join(["The sea was calm and grey that morning, and the boats stayed in the harbour."] * 4)
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[long_reply]))) as emu:
        config = dataclasses.replace(default_config().realtime, url=emu.url)

        async def headers() -> dict[str, str]:
            return {"Authorization": "Bearer sk-test"}

        link = Link(config, headers=headers)
        assert link.state is connection.LinkState.CLOSED
        task = asyncio.create_task(link.run())
        try:
            link.open()
            loop = asyncio.get_running_loop()
            events: list[LinkEvent] = []
            async with asyncio.timeout(30):
                while not any(isinstance(e, SessionReady) for e in events):
                    events.append(await link.recv())
            assert link.state is connection.LinkState.OPEN
            for i in range(0, turn.size, 240):
                link.send_audio(turn[i : i + 240], loop.time())
                await asyncio.sleep(0)
            link.flush_audio(loop.time())
            peak = 0
            for _ in range(300):  # the app is away for 3 s while the reply streams in
                peak = max(peak, link._events.queued_bytes)
                await asyncio.sleep(0.01)
            assert peak > 64 * 1024, "the reply never reached the bound: the test proves nothing"
            assert peak <= 2 * 64 * 1024, f"the queue grew to {peak} B past its bound (one delta is ~5 kB)"
            async with asyncio.timeout(30):
                while not any(isinstance(e, ResponseDone) for e in events):
                    events.append(await link.recv())
            link.close()
            assert link.state is connection.LinkState.CLOSED
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert emu.violations == []
    got = sum(e.pcm.size for e in events if isinstance(e, PlayAudio))
    sent = sum(r.audio_samples_sent for r in emu.sessions[0].responses)
    assert got == sent > 5 * 24000, f"{got} of {sent} samples arrived"
