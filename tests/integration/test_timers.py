"""Timers end to end (issue 19): the model sets one, it rings here with no network, speech stops it,
and one set before a restart rings after it.

The real daemon on the file backend (earcons on, its room's echo), the emulator scripting the
model's ``set_timer`` call. The ring is located sample for sample in the speaker's timeline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.app import Daemon
from earshot.audio.earcons import earcon
from earshot.emulator import Emulator, EmulatorOptions, FunctionCall, Reply, Script, Turn
from tests.integration.replies import RATE_HZ, check_events, locate
from tests.support.cli import earshot_cli
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

RING = earcon("timer", level_dbfs=-10.0)  # timers.volume_db's default
CLOSED_PORT_URL = "ws://127.0.0.1:9/v1/realtime"  # nothing listens: the network is down


def _model(call: FunctionCall) -> Script:
    """The model: the call on the first turn, then a short answer (the default one reads the output out)."""

    def reply(turn: Turn) -> Reply:
        if turn.tool_outputs:
            return Reply(text="Okay, it is set.")
        return Reply(function_call=call) if turn.number == 1 else Reply(text="Sure.")

    return reply


def _rings(output: NDArray[np.int16], after: int = 0) -> list[int]:
    """Output samples where a ring cue starts (played whole, or cut by a stop)."""
    starts: list[int] = []
    while (found := locate(output, RING, after=after)) is not None:
        starts.append(found.start)
        after = found.end
    return starts


async def test_the_model_sets_a_timer_that_rings_offline_until_the_user_speaks(tmp_path: Path) -> None:
    question, _ = read_wav(synth("set a timer for five seconds for the eggs"))
    answer_heard, _ = read_wav(synth("okay, thank you", voice="rms"))
    lead = 0.5
    speak_at = 15.0  # the timer (set about 3 s in) rings from about 8 s
    pcm = concat(silence(lead), question, silence(speak_at - lead - len(question) / 16000), answer_heard, silence(5.0))
    script = _model(FunctionCall("set_timer", {"seconds": 5, "label": "eggs"}))
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url)
        check_events(emu)
    assert run.exit_code == 0
    record = emu.sessions[0]
    outputs = [
        json.loads(e["item"]["output"])
        for e in record.client_events
        if e.get("type") == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]
    assert len(outputs) == 1
    assert outputs[0]["timer"]["label"] == "eggs"
    assert outputs[0]["timer"]["remaining_s"] == 5
    # The session was closed long before the ring: it rang with no connection.
    closed = [t for t, what in run.timeline if what.startswith("session closed")]
    assert closed
    rings = _rings(run.output)
    assert len(rings) >= 2, run.timeline
    onset = round((speak_at + float(np.flatnonzero(np.abs(answer_heard) > 300)[0]) / 16000) * RATE_HZ)
    assert rings[0] < onset
    # The user's "okay, thank you" answered it: it stopped (within a capture period), asked nothing.
    assert any("timer ring stopped by speech" in what for _, what in run.timeline), run.timeline
    assert all(start < onset + RATE_HZ // 2 for start in rings), (rings, onset)
    assert len(emu.sessions) == 1
    assert run.daemon.stats is not None
    assert run.daemon.stats.engagements == 1
    assert run.daemon.stats.timers_rung == 1
    saved = json.loads((tmp_path / "state" / "timers.json").read_text())
    assert saved["timers"] == []


async def test_a_timer_set_before_a_restart_rings_after_it_with_the_network_down(tmp_path: Path) -> None:
    question, _ = read_wav(synth("set a timer for ten seconds"))
    script = _model(FunctionCall("set_timer", {"seconds": 10}))
    first = tmp_path / "first"
    first.mkdir()
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run1 = await run_daemon(first, concat(silence(0.5), question, silence(2.0)), url=emu.url)
    assert run1.exit_code == 0
    assert _rings(run1.output) == []  # it ended before the timer was due
    state = first / "state"
    saved = json.loads((state / "timers.json").read_text())
    assert [t["duration_s"] for t in saved["timers"]] == [10]
    # The second run: the same state, no server at all. Once it rings, the operator lists the timers
    # and stops the ring from the command line (the real CLI, over the real control socket).
    second = tmp_path / "second"
    second.mkdir()
    said: dict[str, str] = {}

    async def operator(daemon: Daemon) -> None:
        async with asyncio.timeout(30):
            assert daemon.timers is not None  # run() makes it before its first await
            await daemon.timers.ringing_now()
            loop = asyncio.get_running_loop()
            said["rang_at"] = str(loop.time())
            for command in ("timers", "stop", "timers"):
                said[command + str(len(said))] = await earshot_cli(second / "control.sock", command)
            said["stopped_at"] = str(loop.time())

    run2 = await run_daemon(
        second, silence(16.0), url=CLOSED_PORT_URL, config={"state_dir": str(state)}, during=operator
    )
    assert run2.exit_code == 0
    listed, stopped, after = (said[k] for k in ("timers1", "stop2", "timers3"))
    assert "t1  timer: ringing" in listed, listed
    assert "stopped 1 ringing timer(s)" in stopped, stopped
    assert "no timers" in after, after
    rings = _rings(run2.output)
    assert rings, run2.timeline
    # No ring cue began after the stop.
    stop_s = float(said["stopped_at"]) - float(said["rang_at"])
    assert (rings[-1] - rings[0]) / RATE_HZ <= stop_s + 0.1, (rings, stop_s)
    assert run2.daemon.stats is not None
    assert run2.daemon.stats.timers_rung == 1
    assert run2.daemon.stats.engagements == 0
    assert json.loads((state / "timers.json").read_text())["timers"] == []
