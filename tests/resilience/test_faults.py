"""Fault injection against the real daemon: the emulator's fault knobs and a loopback TCP proxy.

Every test runs the whole daemon (file backend, vad mode) on a spoken question and checks that it stays
up and exits 0 at the end of the input, that it behaves as issue 7 asks for the fault, that the
session which answered received the user's whole turn, that the wire carried no schema violation, and
that the Python heap stayed bounded.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import pytest

from earshot.emulator import Emulator, EmulatorOptions
from earshot.emulator.options import Faults
from tests.resilience.harness import (
    RecordingNotifier,
    answering_session,
    assert_answered,
    assert_whole_turn,
    question,
    spoken_turn,
    traced_memory,
    watching_logs,
)
from tests.support.daemon import DaemonRun, run_daemon
from tests.support.proxy import FaultProxy
from tests.support.speech import concat, silence

HEAP_GROWTH_BOUND = 30_000_000
"""Live Python heap growth over one test (emulator records and the output WAV included): generous."""
HEAP_PEAK_BOUND = 250_000_000
"""Peak Python heap over one test (the 10 MB message is parsed, decoded and recorded)."""

FAST_PINGS = {"realtime": {"ping_interval_s": 0.5, "ping_timeout_s": 0.5}}


async def _run(tmp_path: Path, emu: Emulator, url: str | None = None, **kwargs: Any) -> DaemonRun:
    kwargs.setdefault("config", {})
    return await run_daemon(tmp_path, kwargs.pop("pcm", spoken_turn()), url=url or emu.url, **kwargs)


def _speech_started(emu: Emulator, session: int = 0) -> bool:
    return len(emu.sessions) > session and bool(emu.sessions[session].events_of("input_audio_buffer.speech_started"))


@pytest.fixture
def heap() -> Any:
    with traced_memory() as use:
        yield use
    assert use.peak < HEAP_PEAK_BOUND, f"peak heap {use.peak / 1e6:.1f} MB"
    assert use.grown < HEAP_GROWTH_BOUND, f"heap grew by {use.grown / 1e6:.1f} MB"


# ------------------------------------------------------------------------------- connecting


async def test_connection_refused_then_accepted(tmp_path: Path, heap: Any) -> None:
    """Nothing listens at first (ECONNREFUSED): the daemon retries, and once the port is back the turn is answered."""
    async with Emulator(EmulatorOptions(strict=True)) as emu, FaultProxy("127.0.0.1", emu.port) as proxy:
        await proxy.refuse("stop")
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
        with watching_logs() as logs:

            async def restore_after_refusals() -> None:
                await logs.wait_for("realtime connection lost (", times=2)
                await proxy.restore()

            restorer = asyncio.create_task(restore_after_refusals())
            run = await _run(tmp_path, emu, url)
            await restorer
        assert_answered(run, emu)
        assert len(emu.sessions) == 1
        assert_whole_turn(emu, 0)


async def test_stalled_handshake_times_out_then_succeeds(tmp_path: Path, heap: Any) -> None:
    """An upgrade that never answers hits the open timeout; the next attempt connects and answers."""
    faults = Faults(stall_handshake_s=math.inf, stall_times=1)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        with watching_logs() as logs:
            run = await _run(tmp_path, emu, config={"realtime": {"open_timeout_s": 0.5}})
        assert_answered(run, emu)
        assert emu.handshakes == 2
        assert logs.count("lost (HandshakeError: no WebSocket handshake within 0.5 s") == 1
        assert_whole_turn(emu, answering_session(emu))


async def test_rate_limited_upgrade_is_retried(tmp_path: Path, heap: Any) -> None:
    """HTTP 429 on the upgrade (three times) is retried with backoff, not treated as fatal."""
    faults = Faults(refuse_status=429, refuse_times=3)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        with watching_logs() as logs:
            run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert emu.handshakes == 4
        assert logs.count("lost (HandshakeError: upgrade refused with HTTP 429") == 3
        assert not logs.count("slow retry")
        assert_whole_turn(emu, 0)


async def test_offline_longer_than_the_buffer_ends_the_engagement(tmp_path: Path, heap: Any) -> None:
    """No server at all: past ``offline_buffer_s`` of buffered speech the engagement ends cleanly."""
    async with Emulator(EmulatorOptions(strict=True)) as emu, FaultProxy("127.0.0.1", emu.port) as proxy:
        await proxy.refuse("stop")
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
        run = await _run(
            tmp_path,
            emu,
            url,
            config={
                "realtime": {"reconnect": {"offline_buffer_s": 1.0}, "open_timeout_s": 0.5, "reply_timeout_s": 2.0}
            },
        )
        assert run.exit_code == 0
        assert run.marks("offline for longer than the buffer")
        assert run.marks("engagement ended")
        assert run.daemon.link is not None
        assert not run.daemon.link.engaged
        assert emu.handshakes == 0
        assert emu.violations == []


# ------------------------------------------------------------------------------- drops


async def test_drop_during_the_user_turn_replays_the_turn(tmp_path: Path, heap: Any) -> None:
    """The TCP connection dies as the user starts speaking: the reply still comes, and the new session
    received the turn's audio from its start (pre-roll included), so the user need not repeat it."""
    faults = Faults(drop_on_event="input_audio_buffer.speech_started", drop_times=1)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert len(emu.sessions) == 2
        assert emu.sessions[0].close_code == 1006
        assert not emu.sessions[0].responses
        assert answering_session(emu) == 1
        assert run.marks("user turn sent again into the new session")
        # The first session heard only the beginning; the second got the whole question from its first word.
        assert len(emu.sessions[0].received_audio()) < len(question()) * 1.5
        assert_whole_turn(emu, 1)


async def test_drop_during_the_reply_is_not_replayed(tmp_path: Path, heap: Any) -> None:
    """The connection dies while the reply plays: what arrived plays, the question is not asked again nor the
    reply sent back as audio, the daemon reconnects with the conversation as text and carries on."""
    # The reply streams in real time, so it is playing when its last audio arrives and the link drops.
    faults = Faults(drop_on_event="response.output_audio.done", drop_times=1)
    pcm = concat(spoken_turn(tail_s=4.0), question(), silence(6.0))
    async with Emulator(EmulatorOptions(strict=True, faults=faults, reply_rate=1.0)) as emu:
        run = await _run(tmp_path, emu, pcm=pcm)
        assert run.exit_code == 0
        assert emu.violations == []
        assert run.marks("connection lost")
        first = emu.sessions[0]
        assert first.close_code == 1006
        assert run.marks("reply started")
        assert len(run.marks("response done")) == 1  # the first reply's done never came
        assert not run.marks("user turn sent again")
        later = emu.sessions[1:]
        assert later
        for record in later:
            for event in record.client_events:
                if event["type"] == "conversation.item.create":
                    # history is text only: never the reply's (or anyone's) audio
                    kinds = {part["type"] for part in event["item"].get("content", [])}
                    assert kinds <= {"input_text", "output_text"}, event
        # No response was requested for the already answered first turn: the only completed reply after the
        # drop is the answer to the second question, which the new session heard whole. (The emulator counts
        # the first response completed: it finished generating it, though the daemon never got its done.)
        answered = max(r.index for r in later if r.responses)
        assert answered >= 1
        assert [r.status for r in emu.sessions[answered].responses] == ["completed"]
        assert_whole_turn(emu, answered)
        assert run.marks("reply played out")


async def test_drop_before_the_reply_is_heard_asks_the_question_again(tmp_path: Path, heap: Any) -> None:
    """The link dies on the reply's first audio, before any of it played: the user need not repeat themselves,
    the new session gets the question again and its answer plays."""
    faults = Faults(drop_on_event="response.output_audio.delta", drop_times=1)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
    assert_answered(run, emu)
    assert run.marks("connection lost")
    assert run.marks("user turn sent again into the new session")
    answered = answering_session(emu)
    assert answered >= 1
    assert [r.status for r in emu.sessions[answered].responses] == ["completed"]
    assert_whole_turn(emu, answered)


async def test_session_expired_mid_turn_is_handled_like_a_drop(tmp_path: Path, heap: Any) -> None:
    """``session_expired`` + close 1001 while the user speaks: a new session gets the turn again and answers."""
    async with Emulator(EmulatorOptions(strict=True)) as emu:

        async def expire_when_speaking() -> None:
            await emu.wait_for(lambda: _speech_started(emu), within_s=20)
            emu.expire()

        expirer = asyncio.create_task(expire_when_speaking())
        run = await _run(tmp_path, emu)
        await expirer
        assert_answered(run, emu)
        assert emu.sessions[0].close_code == 1001
        assert emu.sessions[0].events_of("error")[0]["error"]["code"] == "session_expired"
        assert answering_session(emu) == 1
        assert_whole_turn(emu, 1)


# ------------------------------------------------------------------------------- liveness


async def test_half_open_server_is_detected_by_pings(tmp_path: Path, heap: Any) -> None:
    """The server stops reading and answering (no pongs) as the user speaks: pings notice, the daemon
    reconnects and the turn is answered."""
    faults = Faults(half_open_on_event="input_audio_buffer.speech_started", half_open_times=1)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        with watching_logs() as logs:
            run = await _run(tmp_path, emu, config=FAST_PINGS)
        assert_answered(run, emu)
        assert len(emu.sessions) == 2
        assert logs.count("realtime connection lost") == 1
        assert answering_session(emu) == 1
        assert_whole_turn(emu, 1)


async def test_blackholed_network_is_detected_and_recovered(tmp_path: Path, heap: Any) -> None:
    """The network silently swallows everything (proxy blackhole) mid-turn; once it flows again the
    daemon is on a new connection and the turn is answered."""
    async with Emulator(EmulatorOptions(strict=True)) as emu, FaultProxy("127.0.0.1", emu.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
        with watching_logs() as logs:

            async def blackhole_while_speaking() -> None:
                await emu.wait_for(lambda: _speech_started(emu), within_s=20)
                proxy.blackhole()
                await logs.wait_for("realtime connection lost")
                proxy.blackhole(False)

            faulter = asyncio.create_task(blackhole_while_speaking())
            run = await _run(tmp_path, emu, url, config=FAST_PINGS)
            await faulter
        assert_answered(run, emu)
        answered = answering_session(emu)
        assert answered >= 1
        assert_whole_turn(emu, answered)


# ------------------------------------------------------------------------------- server errors


@pytest.mark.parametrize(
    "code",
    ["rate_limit_exceeded", "server_error", "response_cancel_not_active"],
)
async def test_harmless_server_errors_are_ignored(tmp_path: Path, heap: Any, code: str) -> None:
    """A non-fatal ``error`` event on an open session changes nothing: same session, turn answered."""
    faults = Faults(error_code=code, error_close=False)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert len(emu.sessions) == 1
        assert emu.sessions[0].events_of("error")[0]["error"]["code"] == code
        assert_whole_turn(emu, 0)


async def test_server_error_with_a_close_is_retried(tmp_path: Path, heap: Any) -> None:
    """A server error followed by the server closing the socket is retryable: reconnect and answer."""
    faults = Faults(error_code="server_error", error_close=True, error_times=1)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert emu.sessions[0].close_code == 1008
        assert len(emu.sessions) >= 2
        assert_whole_turn(emu, answering_session(emu))


@pytest.mark.parametrize(
    "code", ["invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"]
)
async def test_fatal_server_error_stops_fast_retries(tmp_path: Path, heap: Any, code: str) -> None:
    """A fatal-for-now error: no fast retry loop (the user speaking again does not reconnect either),
    STATUS, the status snapshot and the journal say why, and the daemon stays up."""
    faults = Faults(error_code=code)
    notifier = RecordingNotifier()
    pcm = concat(spoken_turn(tail_s=2.0), question(), silence(2.0))
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        with watching_logs() as logs:
            run = await _run(tmp_path, emu, pcm=pcm, notifier=notifier)
            status = run.daemon.status()
        assert run.exit_code == 0
        assert emu.violations == []
        assert emu.handshakes == 1
        assert code in (status.get("resting") or "")
        assert status["connection"] == "resting"
        assert [m for m in logs.messages if "slow retry" in m and code in m]
        assert any(code in line for line in notifier.statuses()), notifier.statuses()
        assert not run.marks("reply started")


async def test_auth_failure_then_a_fixed_credential_retries_at_once(tmp_path: Path, heap: Any) -> None:
    """HTTP 401 with a wrong key: the daemon rests; the operator rewrites the key file, and the next
    engagement connects at once (no waiting for the slow retry) and is answered."""
    creds = tmp_path / "creds"
    creds.mkdir()
    key_file = creds / "openai-api-key"
    key_file.write_text("sk-wrong-key\n")
    pcm = concat(spoken_turn(tail_s=4.0), question(), silence(6.0))
    async with Emulator(EmulatorOptions(strict=True, api_key="sk-good-key")) as emu:
        with watching_logs() as logs:

            async def fix_the_key() -> None:
                await logs.wait_for("slow retry")
                old = key_file.stat().st_mtime
                key_file.write_text("sk-good-key\n")
                os.utime(key_file, (old + 10, old + 10))

            fixer = asyncio.create_task(fix_the_key())
            run = await _run(tmp_path, emu, pcm=pcm, environ={"CREDENTIALS_DIRECTORY": str(creds)})
            await fixer
        assert_answered(run, emu)
        assert emu.handshakes == 2
        assert logs.count("lost (HandshakeError: upgrade refused with HTTP 401") == 1
        assert logs.count("the credential changed: retrying at once") == 1
        assert run.marks("not connecting for now")
        assert_whole_turn(emu, 0)


# ------------------------------------------------------------------------------- odd messages


async def test_malformed_json_and_unknown_events_are_ignored(tmp_path: Path, heap: Any) -> None:
    faults = Faults(malformed_after_events=2, unknown_after_events=3)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert len(emu.sessions) == 1
        assert_whole_turn(emu, 0)


async def test_a_10_mb_server_message_is_survived(tmp_path: Path, heap: Any) -> None:
    faults = Faults(huge_after_events=2)
    async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
        run = await _run(tmp_path, emu)
        assert_answered(run, emu)
        assert len(emu.sessions) == 1
        sent = emu.sessions[0].events_of("conversation.item.retrieved")
        assert sent, "the huge event was not sent"
        assert_whole_turn(emu, 0)


OVERSIZE_HEAP_BOUND = 60_000_000
"""Peak Python heap while a 64 MiB message is refused: the 16 MiB limit plus the run's own use."""


async def test_a_64_mib_server_message_is_refused_and_the_turn_survives(tmp_path: Path) -> None:
    """A message past the 16 MiB limit (mid-turn) drops that connection; the next one answers the whole turn."""
    faults = Faults(oversize_after_events=3, oversize_bytes=64 * 1024 * 1024)
    with traced_memory() as use:
        async with Emulator(EmulatorOptions(strict=True, faults=faults)) as emu:
            with watching_logs() as logs:
                run = await _run(tmp_path, emu)
            assert_answered(run, emu)
            assert emu.sessions[0].events_of("<oversize>"), "the oversize message was not sent"
            assert len(emu.sessions) == 2
            assert logs.count("1009 (message too big)") >= 1
            assert_whole_turn(emu, answering_session(emu))
    assert use.peak < OVERSIZE_HEAP_BOUND, f"peak heap {use.peak / 1e6:.1f} MB"


async def test_slow_server_trickling_its_reply(tmp_path: Path, heap: Any) -> None:
    """Reply audio slower than real time behind 150 ms of extra latency each way: played out whole."""
    async with (
        Emulator(EmulatorOptions(strict=True, reply_rate=0.8)) as emu,
        FaultProxy("127.0.0.1", emu.port) as proxy,
    ):
        proxy.set_delay(0.15)
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
        run = await _run(tmp_path, emu, url, pcm=spoken_turn(tail_s=9.0))
        assert_answered(run, emu)
        assert len(emu.sessions) == 1
        response = emu.sessions[0].responses[0]
        assert response.status == "completed"
        # Everything the server sent reached the speaker.
        assert sum(len(run.output[i : i + 240].nonzero()[0]) > 0 for i in range(0, len(run.output), 240)) * 240 >= (
            response.audio_samples_sent * 0.9
        )
        assert_whole_turn(emu, 0)
