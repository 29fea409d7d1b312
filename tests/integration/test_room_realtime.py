"""The device never hears itself on real-time devices: the default config in the PulseAudio room.

The same check as :mod:`tests.integration.test_room` (twenty wake-word engagements in a row, earcons
on, nobody interrupting) on the other backend: ``earshot run`` on ALSA PCMs that are PulseAudio
streams, in real time, with the speaker's sound reaching the microphone through a loudspeaker and a
room (``benchlib.pulse``: ``tanh`` soft clipping, reflections and a 150 ms RT60 tail, −6 dB, the
relay's own delay). Whatever the device plays (the wake earcon the user talks over, the end-of-turn
earcon, the reply) must never reach the server: no barge-in, no cancelled response, no truncation,
no extra turn. A run in which the rig's own room moved (the echo relay stalled with the machine) is
run once more.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.replies import RATE_HZ, reply_pcm
from tests.support.speech import concat, read_wav, silence, synth

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "scripts")]

from benchlib import daemon as bench_daemon  # noqa: E402
from benchlib import pulse  # noqa: E402

pytestmark = [
    pytest.mark.realtime_audio,
    pytest.mark.skipif(os.environ.get("EARSHOT_SKIP_REALTIME") == "1", reason="EARSHOT_SKIP_REALTIME=1"),
    pytest.mark.skipif(shutil.which("pulseaudio") is None, reason="pulseaudio not installed"),
]

REPLY = "Sure. It is sunny today, with a light wind from the west."
ENGAGEMENTS = 20
RIG_ATTEMPTS = 2
RIG_SPREAD_MS = 5.0
"""The room's echo delay may spread this much over a run; more is the rig broken (see below)."""


@pytest.mark.timeout(900)  # two runs of ~215 s when the rig breaks in the first
async def test_engagements_in_a_row_in_the_pulseaudio_room_play_every_reply_whole(tmp_path: Path) -> None:
    """Twenty engagements on real-time devices with an acoustic echo: every reply plays to its end."""
    question, _ = read_wav(synth("hey jarvis, what is the weather like"))
    reply_s = (await reply_pcm(REPLY)).size / RATE_HZ
    gap_s = reply_s + 4.0  # the reply plays out, then most of the follow-up window
    parts = [silence(1.0)]
    for _ in range(ENGAGEMENTS):
        parts += [question, silence(gap_s)]
    pcm = concat(*parts, silence(2.0))
    spec = bench_daemon.RunSpec(
        "room_realtime", pcm, echo=False, replies=(REPLY,) * ENGAGEMENTS, timeout_s=pcm.size / 16000 + 60
    )
    # One more run when the rig itself broke (its room moved): that run says nothing of the daemon.
    for attempt in range(RIG_ATTEMPTS):
        run = await _run_in_room(tmp_path / f"server{attempt}", tmp_path / f"run{attempt}", spec)
        delays = _room_delays(run, reply_s)
        if max(delays) - min(delays) <= RIG_SPREAD_MS or attempt == RIG_ATTEMPTS - 1:
            break
    cancels = [c for s in run.sessions for c in s.cancels]
    truncations = [t for s in run.sessions for t in s.truncations]
    responses = [r for s in run.sessions for r in s.responses]
    # The rig held its room: on an idle machine the echo's delay stays within 1 ms for the run; a stall of
    # the relay on a loaded one is cut back to within a few (benchlib.echorelay), and a device that never
    # heard itself in that harder room has passed (measured: 35.0 -> 32.4 ms over one run under two busy
    # loops, no barge-in). More than that is the rig broken, not a harder room: a stall of the whole
    # machine once held the relay's echo 42 ms late for a second before the cut, while the daemon's own
    # output underran with it; the daemon followed the 41 ms move and still barged in on itself 0.14 s
    # later. Checked first, and run once more: the daemon's checks below are about the room the rig is
    # meant to be.
    assert max(delays) - min(delays) <= RIG_SPREAD_MS, f"the rig's room moved in {RIG_ATTEMPTS} runs: {delays}"
    # The rule is none. (Two in twenty were tolerated while the room itself moved: the bench's echo
    # relay tapped the speaker sink's monitor, which gained 4.6 ms at each new playback stream, so the
    # echo jumped 5 ms as each reply started and the canceller met it 0.3 s in.)
    # A string, so pytest prints it whole: the daemon's own words on what went wrong (underruns, echo moves,
    # the loop's lateness) next to each barge-in.
    notable = ("barge-in", "dropped", "cancelled", "underrun", "xrun", "moved", "late", "duplex", "reply started")
    why = "\n".join(
        [
            f"echo delays (ms): {delays}",
            f"load average: {os.getloadavg()}",
            *(f"{t:.3f} {m}" for t, m in run.log if any(w in m for w in notable)),
        ]
    )
    assert run.barge_ins() == [], why
    assert cancels == [], why
    assert truncations == [], why
    assert [r.status for r in responses] == ["completed"] * ENGAGEMENTS, why


async def _run_in_room(server: Path, workdir: Path, spec: bench_daemon.RunSpec) -> pulse.RoomRun:
    try:
        with pulse.pulse_room(server) as room:
            pulse.prepare(spec, workdir)
            return await pulse.run_in_room(room, spec, workdir, log=lambda _: None)
    except pulse.PulseUnavailable as exc:
        pytest.skip(f"the PulseAudio room could not start here: {exc}")


def _room_delays(run: pulse.RoomRun, reply_s: float) -> list[float]:
    """The room's echo delay (ms) on every second or more of reply alone, after checking the replies played
    and their echo reached the microphone (so that the test could fail)."""
    marks = [m for _, m in run.log if "barge-in" in m or "dropped" in m or "cancelled" in m or "engaged" in m]
    speaker = run.recording[:, pulse.SPEAKER].astype(np.float64)
    mic = run.recording[:, pulse.MIC].astype(np.float64)
    user = run.recording[:, pulse.USER].astype(np.float64)
    n = speaker.size // pulse.BLOCK
    loud = np.sqrt(np.mean(speaker[: n * pulse.BLOCK].reshape(n, -1) ** 2, axis=1)) >= pulse.QUIET_RMS
    assert loud.sum() * pulse.BLOCK / pulse.RATE_HZ >= 0.9 * ENGAGEMENTS * reply_s, marks
    echo_only = loud & (np.sqrt(np.mean(user[: n * pulse.BLOCK].reshape(n, -1) ** 2, axis=1)) < pulse.QUIET_RMS)
    mic_blocks = mic[: n * pulse.BLOCK].reshape(n, -1)
    assert np.sqrt(np.mean(mic_blocks[echo_only] ** 2)) > 300  # the room's echo, -6 dB and then some
    edges = np.flatnonzero(np.diff(np.concatenate(([0], echo_only.astype(np.int8), [0]))))
    delays = [
        pulse.echo_path(run, a * pulse.BLOCK, b * pulse.BLOCK)["echo_delay_ms"]
        for a, b in zip(edges[::2], edges[1::2], strict=True)
        if b - a >= 100
    ]
    assert len(delays) >= ENGAGEMENTS, delays
    return delays
