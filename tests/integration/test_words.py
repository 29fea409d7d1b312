"""The stop phrase and several wake words end to end (issue 19, item 4).

The real daemon on the file backend with the gate as a plain install has it (wake word, earcons on),
in a room whose echo has a room response and a loudspeaker's distortion; the emulator answers. The stop
phrase over a reply: pocketsphinx (the default's enrolled takes did not match through the canceller's
residual suppressor in this room; see the README). Replies are located sample for sample in the
speaker's timeline.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from earshot.app import Daemon
from earshot.control import request
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from tests.integration.replies import RATE_HZ, check_events, locate, reply_pcm
from tests.support.daemon import DEFAULT_GATE, merge, run_daemon
from tests.support.speech import concat, read_wav, silence, synth

ROOM: dict[str, Any] = {"audio": {"echo": {"delay_ms": 20, "gain_db": -6}}, "gate": DEFAULT_GATE}
LONG_REPLY = (
    "Paris is the capital of France. It lies on the Seine, in the north of the country, and has "
    "been the seat of its government for most of the last thousand years, with a few interruptions "
    "that the history books like to describe at length."
)


async def test_stop_over_a_reply_ends_it_truncated_at_what_was_heard_and_asks_nothing(tmp_path: Path) -> None:
    question, _ = read_wav(synth("hey jarvis, what is the capital of france"))
    stop, _ = read_wav(synth("stop", voice="rms"))
    config = merge(ROOM, {"gate": {"stop_word": {"engine": "pocketsphinx"}}})
    lead = 0.5
    q_end = lead + len(question) / 16000
    stop_at = q_end + 4.0  # the reply (about 14 s) has been playing for about 3 s
    pcm = concat(silence(lead), question, silence(stop_at - q_end), stop, silence(8.0))
    reply = await reply_pcm(LONG_REPLY)
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[LONG_REPLY, "Yes?"]))) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=config)
        check_events(emu)
    assert run.exit_code == 0
    assert run.marks("stop word (pocketsphinx"), run.timeline
    assert run.marks("engagement ended (stop word)"), run.timeline
    assert len(emu.sessions) == 1
    record = emu.sessions[0]
    # Nothing answered "stop": one response (the question's), and the engagement is over.
    assert len(record.responses) == 1, [r.id for r in record.responses]
    assert run.daemon.stats is not None
    assert run.daemon.stats.engagements == 1
    assert run.daemon.stats.truncates == 1
    played = locate(run.output, reply, after=round(q_end * RATE_HZ))
    assert played is not None
    assert played.played < played.length, "the reply played to its end"
    onset = stop_at + float(np.flatnonzero(np.abs(stop) > 300)[0]) / 16000
    assert onset < played.end / RATE_HZ < onset + 1.0, (onset, played.end / RATE_HZ)
    # The truncate: what the speaker played of the item, within 20 ms.
    assert len(record.truncations) == 1, record.truncations
    trunc = record.truncations[0]
    assert trunc.error is None
    assert abs(trunc.audio_end_ms - played.played_ms) <= 20.0, (trunc.audio_end_ms, played.played_ms)
    types = [e.get("type") for e in record.client_events]
    after = types[types.index("conversation.item.truncate") :]
    if run.marks("barge-in"):
        # The barge-in heard the word's onset first: the turn it opened was the phrase, and is forgotten.
        assert "input_audio_buffer.clear" in after, after
    assert "input_audio_buffer.commit" not in after
    assert "response.create" not in after
    # Nothing else plays after the reply stopped but earcons: the rest of the output is quiet or a cue.
    assert locate(run.output, reply, after=played.end) is None


async def test_each_wake_word_engages_with_its_own_profile(tmp_path: Path) -> None:
    """The kids say "okay nabu" (their instructions and voice); "hey jarvis" is the grown-ups'.

    The kids' session is kept open after their exchange (idle_close_s); the grown-up's wake word
    closes it and opens one of its own, with the config's instructions and voice.
    """
    kids_q, _ = read_wav(synth("okay nabu, what time is it"))
    adult_q, _ = read_wav(synth("hey jarvis, what time is it"))
    pcm = concat(silence(0.5), kids_q, silence(9.0), adult_q, silence(8.0))
    config = merge(
        ROOM,
        {
            "gate": {"wakeword": {"also": [{"model": "okay_nabu", "profile": "kids"}]}},
            "realtime": {
                "idle_close_s": 30.0,
                "profiles": [{"name": "kids", "instructions": "Speak simply, for a child.", "voice": "alloy"}],
            },
        },
    )
    answers: dict[str, Any] = {}
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=["It is noon.", "Noon."]))) as emu:

        async def operator(daemon: Daemon) -> None:
            # Once the kids' question is answered, status names their profile.
            await emu.wait_for(lambda: bool(emu.sessions) and bool(emu.sessions[0].responses), within_s=30)
            answers["kids"] = await asyncio.to_thread(request, tmp_path / "control.sock", "status")

        run = await run_daemon(tmp_path, pcm, url=emu.url, config=config, during=operator)
        check_events(emu)
    listening = answers["kids"]["listening"]
    assert listening["profile"] == "kids"
    assert listening["wake_words"] == ["microwakeword:hey_jarvis", "microwakeword:okay_nabu"]
    assert listening["stop_word"] is None
    assert run.exit_code == 0
    assert [what for what in run.marks("engaged by")] == [
        "engaged by wake word (microwakeword:okay_nabu)",
        "engaged by wake word (microwakeword:hey_jarvis)",
    ], run.timeline
    assert run.marks("session closed (another profile's wake word)"), run.timeline
    assert len(emu.sessions) == 2
    updates = [
        [e["session"] for e in record.client_events if e.get("type") == "session.update"] for record in emu.sessions
    ]
    kids, adults = updates[0][0], updates[1][0]
    assert kids["instructions"] == "Speak simply, for a child."
    assert kids["audio"]["output"]["voice"] == "alloy"
    defaults = run.daemon.config.realtime
    assert adults["instructions"] == defaults.instructions
    assert adults["audio"]["output"]["voice"] == defaults.voice
    assert all(len(record.responses) == 1 for record in emu.sessions)
