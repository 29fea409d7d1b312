"""The device never hears itself: the default config (wake word, earcons on) in a room that echoes.

The file backend's echo goes through a soft-clipping loudspeaker and a reverberant room
(:class:`earshot.audio.room.EchoPath`), so what reaches the microphone is not what the canceller's
reference says. Whatever the device plays (the wake earcon, the end-of-turn earcon, the reply) must
never reach the server: no false server turn, no cancelled response, no truncation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from tests.integration.replies import RATE_HZ, check_events, locate, reply_pcm
from tests.support.daemon import DEFAULT_GATE, run_daemon
from tests.support.speech import concat, read_wav, silence, synth

ROOM: dict[str, Any] = {
    # room_ms and drive_db: the defaults (a real room); the clock at 3x real time keeps the run short.
    "audio": {"echo": {"delay_ms": 20, "gain_db": -6}, "file_speed": 3.0},
    "gate": DEFAULT_GATE,
    "realtime": {"idle_close_s": 20.0},
}
REPLY = "Sure. It is sunny today, with a light wind from the west."


@pytest.mark.timeout(400)
async def test_engagements_in_a_row_in_an_echoing_room_play_every_reply_whole(tmp_path: Path) -> None:
    """Twenty wake-word engagements in a row, earcons on: every reply plays to its end, nothing cancelled."""
    wake, _ = read_wav(synth("hey jarvis, what is the weather like"))
    reply = await reply_pcm(REPLY)
    engagements = 20
    gap_s = len(reply) / RATE_HZ + 4.0  # the reply plays out, then the follow-up window closes
    lead = 0.5
    parts = [silence(lead)]
    starts = []
    t = lead
    for _ in range(engagements):
        starts.append(t)
        parts += [wake, silence(gap_s)]
        t += len(wake) / 16000 + gap_s
    pcm = concat(*parts, silence(2.0))
    script = DefaultScript(replies=[REPLY] * engagements)
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=ROOM, timeout_s=300.0)
        check_events(emu)
    assert run.exit_code == 0
    cancels = [c for s in emu.sessions for c in s.cancels]
    truncations = [tr for s in emu.sessions for tr in s.truncations]
    responses = [r for s in emu.sessions for r in s.responses]
    marks = [what for _, what in run.timeline if "barge-in" in what or "dropped" in what or "cancel" in what]
    assert cancels == [], marks
    assert truncations == [], marks
    assert [r.status for r in responses] == ["completed"] * engagements
    assert len(run.marks("engaged by wake word")) == engagements
    assert not run.marks("barge-in")
    for start in starts:
        played = locate(run.output, reply, after=round(start * RATE_HZ))
        assert played is not None, f"no reply after the wake word at {start:.1f} s"
        assert played.played == played.length, f"reply after {start:.1f} s cut at {played.played_ms:.0f} ms"
    # The echo really reached the microphone (the canceller measured it), so the test could fail.
    conv = run.daemon.conversation
    assert conv is not None
    assert conv.echo is not None
    assert conv.echo.erl_db is not None
