"""Barge-in end to end: the real daemon, the emulator, and the file backend's echo feed.

The file backend mixes what the speaker plays back into the microphone (20 ms late, -6 dB), so the
echo canceller, the duplex policy and the barge-in detector all run on a real echo path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earshot.audio.earcons import EARCON_KINDS, earcon
from earshot.emulator import WAKE_WORD_REPLY, DefaultScript, Emulator, EmulatorOptions
from earshot.gate.bargein import DuplexMode
from tests.integration.replies import RATE_HZ, check_events, locate, reply_pcm
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

ECHO = {"audio": {"echo": {"delay_ms": 20, "gain_db": -6}}}
LONG_REPLY = (
    "Paris is the capital of France. It sits on the river Seine, in the north of the country, "
    "and it has been the seat of the French government for most of the last thousand years. "
    "The city is known for its museums, its cafes, and its long avenues."
)
SHORT_REPLY = "Okay, I stopped."


@pytest.mark.parametrize("echo", [True, False], ids=["echo-feed", "no-echo"])
async def test_bargein_mid_reply_truncates_what_was_heard(tmp_path: Path, echo: bool) -> None:
    """A user talking over a long reply stops it at once; the truncate matches what was played.

    Without any echo in the microphone (no acoustic path) the echo reduction means nothing: the
    quiet echo path must still give full duplex, not a muted microphone.
    """
    question, _ = read_wav(synth("what is the capital of france"))
    interruption, _ = read_wav(synth("stop, stop, tell me something else instead", voice="rms"))
    lead = 0.5
    q_end = lead + len(question) / 16000
    interrupt_at = q_end + 4.0  # the reply (about 14 s) has been playing for about 3 s by then
    pcm = concat(silence(lead), question, silence(interrupt_at - q_end), interruption, silence(6.0))
    reply1 = await reply_pcm(LONG_REPLY)
    reply2 = await reply_pcm(SHORT_REPLY)
    script = DefaultScript(replies=[LONG_REPLY, SHORT_REPLY])
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=ECHO if echo else {})
        check_events(emu)
    assert run.exit_code == 0
    assert len(emu.sessions) == 1
    record = emu.sessions[0]
    conv = run.daemon.conversation
    assert conv is not None
    assert conv.bargein is not None
    if echo:
        assert conv.bargein.duplex.mode is not DuplexMode.HALF
    else:
        assert conv.bargein.duplex.mode is DuplexMode.FULL, conv.bargein.duplex
    assert run.daemon.stats is not None
    assert run.daemon.stats.duplex == conv.bargein.duplex.mode.value  # what status reports
    assert run.daemon.stats.bargeins == 1
    assert run.daemon.stats.truncates == 1

    played = locate(run.output, reply1, after=round(q_end * RATE_HZ))
    assert played is not None, "the first reply never played"
    assert played.start < round(interrupt_at * RATE_HZ), "the reply started after the interruption"
    assert played.played < played.length, "the reply played to its end: no barge-in"

    # The truncate: exactly what the speaker played of that item, within 20 ms, clamped to [1, received].
    assert len(record.truncations) == 1, record.truncations
    trunc = record.truncations[0]
    assert trunc.error is None
    assert trunc.item_id == record.responses[0].item_id
    assert trunc.audio_sent_ms is not None
    assert 1 <= trunc.audio_end_ms <= trunc.audio_sent_ms
    assert abs(trunc.audio_end_ms - played.played_ms) <= 20.0, (trunc.audio_end_ms, played.played_ms)

    # The assistant audio stopped soon after the user began (reaction time itself: scripts/bench).
    onset = interrupt_at + float(np.flatnonzero(np.abs(interruption) > 300)[0]) / 16000
    stop_s = played.end / RATE_HZ
    assert onset < stop_s < onset + 0.4, (onset, stop_s)

    # Local detection: the daemon cancelled the response itself.
    assert record.cancels, "no response.cancel"
    assert record.cancels[0].response_id == record.responses[0].id
    assert run.marks("barge-in (local)")

    # The rest of the first reply never plays: everything audible after the stop is the second reply, or
    # an earcon (the end of the interruption's turn).
    after = run.output[played.end :].copy()
    for sound in (reply2, *(earcon(kind) for kind in EARCON_KINDS)):
        at = played.end
        while (found := locate(run.output, sound, after=at)) is not None:
            after[found.start - played.end : found.end - played.end] = 0
            at = found.end
    loud = np.flatnonzero(after) + played.end
    assert not loud.size, (
        "audio after the barge-in that is neither the answer to the interruption nor a cue: "
        f"{loud.size} samples from {loud[0] / RATE_HZ:.3f} s to {loud[-1] / RATE_HZ:.3f} s; "
        f"{[f'{t:.3f} {what}' for t, what in run.timeline]}"
    )


async def test_echo_only_reply_plays_to_its_end(tmp_path: Path) -> None:
    """With the echo of the reply in the microphone and nobody talking, the reply is never interrupted."""
    question, _ = read_wav(synth("what is the capital of france"))
    lead = 0.5
    q_end = lead + len(question) / 16000
    reply = await reply_pcm(LONG_REPLY)
    pcm = concat(silence(lead), question, silence(len(reply) / RATE_HZ + 4.0))
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[LONG_REPLY]))) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=ECHO)
        check_events(emu)
    assert run.exit_code == 0
    record = emu.sessions[0]
    played = locate(run.output, reply, after=round(q_end * RATE_HZ))
    assert played is not None
    assert played.played == played.length, f"reply cut at {played.played_ms:.0f} ms of {played.length / 24:.0f}"
    assert record.truncations == []
    assert record.cancels == []
    assert not run.marks("barge-in")
    assert run.marks("reply played out")
    # The echo really was in the microphone (the canceller measured it), so the test could fail.
    echo = run.daemon.conversation.echo if run.daemon.conversation is not None else None
    assert echo is not None
    assert echo.erle_db is not None
    assert echo.erl_db is not None
    assert 3.0 <= echo.erl_db <= 9.0  # the feed's -6 dB


async def test_reply_saying_the_wake_word_does_not_wake_the_device(tmp_path: Path) -> None:
    """The device saying "hey Jarvis" over its own speaker neither interrupts itself nor re-engages."""
    wake, _ = read_wav(synth("hey jarvis, what time is it"))
    reply = await reply_pcm(WAKE_WORD_REPLY)
    lead = 0.5
    w_end = lead + len(wake) / 16000
    pcm = concat(silence(lead), wake, silence(len(reply) / RATE_HZ + 5.0))
    config = {
        **ECHO,
        "gate": {"mode": "wakeword", "wakeword": {"engine": "openwakeword", "model": "hey_jarvis"}},
    }
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[WAKE_WORD_REPLY]))) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=config)
        check_events(emu)
    assert run.exit_code == 0
    assert len(run.marks("engaged by")) == 1, run.marks("engaged by")
    assert emu.handshakes == 1
    assert len(emu.sessions) == 1
    record = emu.sessions[0]
    assert len(record.responses) == 1
    played = locate(run.output, reply, after=round(w_end * RATE_HZ))
    assert played is not None
    assert played.played == played.length
    assert record.truncations == []
    assert record.cancels == []
    assert not run.marks("barge-in")
