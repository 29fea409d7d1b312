"""How an engagement starts, end to end: the wake word (and nothing else), and ``earshot engage``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from earshot.control import request
from earshot.emulator import Emulator, EmulatorOptions
from earshot.systemd import Notifier
from tests.integration.replies import RATE_HZ, check_events, locate, reply_pcm
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

WAKEWORD = {"gate": {"mode": "wakeword", "wakeword": {"engine": "openwakeword", "model": "hey_jarvis"}}}
CANNED_1 = "This is reply number 1 from the emulator."


async def test_wakeword_mode_connects_only_after_the_wake_word(tmp_path: Path) -> None:
    """Speech without the wake word opens no connection; "hey jarvis, what time is it" engages and is answered."""
    other, _ = read_wav(synth("what is the weather going to be like tomorrow morning", voice="awb"))
    wake, _ = read_wav(synth("hey jarvis, what time is it"))

    # Speech alone: nothing leaves the device.
    (tmp_path / "speech").mkdir()
    (tmp_path / "wake").mkdir()
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(
            tmp_path / "speech", concat(silence(0.5), other, silence(1.0)), url=emu.url, config=WAKEWORD
        )
        assert emu.handshakes == 0
    assert run.exit_code == 0
    assert not run.marks("engaged")
    assert run.daemon.stats is not None
    assert run.daemon.stats.engagements == 0

    # Then the wake word: one connection, the question (from its pre-roll) streamed, the reply played.
    lead = 0.5
    wake_at = lead + len(other) / 16000 + 1.5
    pcm = concat(silence(lead), other, silence(1.5), wake, silence(6.0))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(tmp_path / "wake", pcm, url=emu.url, config=WAKEWORD)
        check_events(emu)
    assert run.exit_code == 0
    assert emu.handshakes == 1
    assert [m for m in run.marks("engaged by")] == ["engaged by wake word (openwakeword:hey_jarvis)"]
    received = emu.sessions[0].received_audio()
    # Streamed from the wake phrase's pre-roll on: never the speech before it.
    assert len(received) / RATE_HZ <= len(pcm) / 16000 - wake_at + 0.5
    assert len(received) / RATE_HZ >= len(wake) / 16000
    played = locate(run.output, await reply_pcm(CANNED_1), after=round(wake_at * RATE_HZ))
    assert played is not None
    assert played.played == played.length


class _ReadyNotifier(Notifier):
    """sd_notify stand-in that lets the test know READY=1 was sent (the control socket is up by then)."""

    def __init__(self) -> None:
        super().__init__({})
        self.ready_event = asyncio.Event()

    def ready(self, status: str | None = None) -> bool:
        self.ready_event.set()
        return super().ready(status)


async def test_manual_mode_engages_through_the_control_socket(tmp_path: Path) -> None:
    """``gate.mode: manual``: speech alone does nothing; ``earshot engage`` engages; status never has the key."""
    question, _ = read_wav(synth("what is the capital of france"))
    lead = 2.0
    pcm = concat(silence(lead), question, silence(7.0))
    sock = tmp_path / "control.sock"
    answers: dict[str, Any] = {}

    notifier = _ReadyNotifier()

    async def operator(emu: Emulator) -> None:
        await notifier.ready_event.wait()
        answers["before"] = await asyncio.to_thread(request, sock, "status")
        answers["engage"] = await asyncio.to_thread(request, sock, "engage")
        await emu.wait_for(lambda: bool(emu.sessions) and bool(emu.sessions[0].responses), within_s=30)
        answers["during"] = await asyncio.to_thread(request, sock, "status")

    async with Emulator(EmulatorOptions(strict=True)) as emu:
        async with asyncio.TaskGroup() as tg:
            op = tg.create_task(operator(emu))
            run = await run_daemon(tmp_path, pcm, url=emu.url, config={"gate": {"mode": "manual"}}, notifier=notifier)
        await op
        check_events(emu)
    assert run.exit_code == 0
    assert answers["before"]["ok"] is True
    assert answers["before"]["phase"] == "idle"
    assert answers["before"]["counters"]["engagements"] == 0
    assert answers["engage"]["ok"] is True
    assert answers["engage"]["engaged"] is True
    assert answers["during"]["phase"] in ("listening", "thinking", "speaking", "follow_up")
    assert answers["during"]["counters"]["engagements"] == 1
    assert answers["during"]["connection"] == "connected"
    for answer in answers.values():
        assert "sk-test-key" not in json.dumps(answer)
    assert run.marks("engaged by control")
    assert len(emu.sessions) == 1
    # The question (spoken after the engage) reached the server whole and was answered.
    assert len(emu.sessions[0].received_audio()) / RATE_HZ >= len(question) / 16000
    played = locate(run.output, await reply_pcm(CANNED_1), after=round(lead * RATE_HZ))
    assert played is not None
    assert played.played == played.length


async def test_manual_mode_speech_alone_never_connects(tmp_path: Path) -> None:
    """Without ``earshot engage`` a manual-mode device ignores speech entirely."""
    question, _ = read_wav(synth("what is the capital of france"))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(
            tmp_path, concat(silence(0.5), question, silence(1.0)), url=emu.url, config={"gate": {"mode": "manual"}}
        )
        assert emu.handshakes == 0
    assert run.exit_code == 0
    assert not run.marks("engaged")
