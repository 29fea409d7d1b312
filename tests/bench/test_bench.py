"""scripts/bench --quick writes every figure key, each a number (no speed asserts: figures belong to the bench)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "scripts")]

import numpy as np  # noqa: E402
from benchlib.audio import played_extent  # noqa: E402
from benchlib.report import KEYS, Report  # noqa: E402


def _numbers(value: object) -> list[object]:
    return list(value.values()) if isinstance(value, dict) else [value]


def test_played_extent_follows_gaps_and_fade() -> None:
    """The reply is followed across an underrun gap; the stop includes the fade and nothing after it."""
    rng = np.random.default_rng(1)
    reply = rng.integers(-3000, 3000, 24000).astype(np.int16)
    reply[reply == 0] = 1
    out = np.zeros(40000, dtype=np.int16)
    out[1000:3000] = reply[:2000]  # 2000 samples, then an 80 ms underrun
    out[4920:7920] = reply[2000:5000]  # resumes where it left off
    out[7920:8160] = (reply[5000:5240] * np.linspace(1, 0, 240, endpoint=False)).astype(np.int16)  # 10 ms fade
    ext = played_extent(out, reply, 1000)
    assert ext.gaps == ((3000, 1920),)
    assert ext.heard == 5000 + int(np.flatnonzero(out[7920:8160])[-1]) + 1
    assert ext.stop == 7920 + int(np.flatnonzero(out[7920:8160])[-1]) + 1


def test_report_keeps_every_key_and_reasons() -> None:
    """An unmeasured figure stays null with its reason; the table marks goals."""
    r = Report()
    r.set("bargein_ms", 120.0)
    r.unmeasured("rss_mb_file", "no daemon")
    doc = r.to_json()
    assert set(KEYS) <= doc.keys()
    assert doc["rss_mb_file"] is None
    assert doc["notes"]["rss_mb_file"] == "no daemon"
    assert "| `bargein_ms` | 120.0 | ≤ 150 | pass |" in r.table()


@pytest.mark.timeout(900)
def test_quick_bench_writes_every_key_as_a_number(tmp_path: Path) -> None:
    """The whole harness in --quick mode: every key present, every figure numeric, machine info filled."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    from benchlib.pi import MAY_BE_UNMEASURED

    for key in KEYS:
        assert key in doc, key
        if key in MAY_BE_UNMEASURED and doc[key] is None:
            assert doc["notes"].get(key), key  # null only with its reason
            continue
        values = _numbers(doc[key])
        assert values, key
        for value in values:
            assert isinstance(value, (int, float)), (key, doc[key], doc["notes"].get(key))
            assert math.isfinite(value), key
    assert set(doc["gate_cpu_pct_speech"]) == {"microwakeword", "template", "openwakeword", "pocketsphinx"}
    assert set(doc["bandwidth_kbps"]) == {"pcm16", "g711_ulaw"}
    for fmt, run in doc["details"]["stream"].items():
        # The engaged figure came from a real exchange through the product's parts: asked, answered, heard
        # to the end of the input, and the device never took its own voice for the user.
        assert run["replies_completed"] >= 1, (fmt, run)
        assert run["bargeins"] == 0, (fmt, run)
        assert run["replies_cancelled"] == 0, (fmt, run)
        assert run["truncates"] == 0, (fmt, run)
        assert run["uplink_audio_s"] > 2.0, (fmt, run)
    for field in ("cpu_model", "cores", "python", "numpy"):
        assert doc["machine"][field], field
    assert "| `gate_cpu_pct_idle` |" in proc.stdout


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    """48 kHz noise in syllable-like bursts (every block loud enough to follow), as a reply stands in."""
    from benchlib import pulse

    rng = np.random.default_rng(seed)
    n = int(seconds * pulse.RATE_HZ)
    envelope = 0.6 + 0.4 * np.abs(np.sin(np.arange(n) * 2 * np.pi * 4 / pulse.RATE_HZ))
    return rng.standard_normal(n) * 3000.0 * envelope


def test_the_reply_is_followed_through_an_underrun_that_dropped_some_of_it() -> None:
    """An underrun's silence that starts inside a block, after which the device dropped 3.3 ms of the reply.

    Seen on a confined run: the follower lost the reply there (0.41 s in) and the bench reported a
    barge-in of -3114 ms as a pass. The reply must be followed past the gap to where it really stops.
    """
    from benchlib import pulse

    rate = pulse.RATE_HZ
    ref = _speechlike(4.0, seed=3)
    lead = rate // 2  # silence on the speaker before the reply
    gap_at = int(0.41 * rate) + pulse.BLOCK // 3  # inside a block
    dropped = 157
    stop_at = int(2.5 * rate)  # the barge-in: the reply stops here (in reply samples)
    played = np.concatenate([ref[:gap_at], np.zeros(pulse.BLOCK), ref[gap_at + dropped : stop_at], np.zeros(rate)])
    spk = np.concatenate([np.zeros(lead), played])
    followed = pulse.follow_reply(spk, ref, 0)
    assert followed.start == lead
    assert not followed.complete
    assert len(followed.gaps) == 1, followed
    assert abs(followed.gaps[0][0] - (lead + gap_at)) <= pulse.BLOCK // 4
    expected_stop = lead + gap_at + pulse.BLOCK + (stop_at - gap_at - dropped)
    assert abs(followed.stop - expected_stop) <= pulse.BLOCK // 2, (followed.stop, expected_stop)
    # heard counts the reply's samples up to the stop, the dropped ones included (the device's loss)
    assert abs(followed.heard - stop_at) <= pulse.BLOCK, followed.heard


def test_the_reply_is_followed_through_a_long_underrun_that_dropped_more_than_a_buffer() -> None:
    """A busy CI machine: 99 ms of silence, and the sound server dropped the reply written behind its
    read index (more than the 40 ms device buffer): the follower lost it there and the run was unmeasured."""
    from benchlib import pulse

    rate = pulse.RATE_HZ
    ref = _speechlike(5.0, seed=6)
    gap_at, gap, dropped = int(1.7 * rate), int(0.099 * rate), int(0.125 * rate)
    stop_at = int(3.0 * rate)
    played = np.concatenate([ref[:gap_at], np.zeros(gap), ref[gap_at + dropped : stop_at], np.zeros(rate)])
    followed = pulse.follow_reply(played, ref, 0)
    assert not followed.complete
    assert len(followed.gaps) == 1, followed
    assert abs(followed.gaps[0][1] - gap) <= pulse.BLOCK // 4, followed.gaps
    expected_stop = gap_at + gap + (stop_at - gap_at - dropped)
    assert abs(followed.stop - expected_stop) <= pulse.BLOCK // 2, (followed.stop, expected_stop)
    assert abs(followed.heard - stop_at) <= pulse.BLOCK, followed.heard


def test_a_reply_that_stops_is_not_followed_into_the_next_reply() -> None:
    """The reply is cut off and, after a pause, the same reply starts again (the next turn's answer):
    the follower stops at the cut instead of resynchronising on the replay."""
    from benchlib import pulse

    rate = pulse.RATE_HZ
    ref = _speechlike(4.0, seed=7)
    cut = int(1.5 * rate)
    replay = ref + np.random.default_rng(8).standard_normal(ref.size) * 100.0  # not bit-exact: a later take
    spk = np.concatenate([ref[:cut], np.zeros(rate // 5), replay])
    followed = pulse.follow_reply(spk, ref, 0)
    assert not followed.complete
    assert followed.gaps == ()
    assert abs(followed.stop - cut) <= pulse.BLOCK // 2


def test_a_reply_that_stops_is_not_followed_past_its_stop() -> None:
    """A reply cut off (the barge-in) and, a second later, a different sound: the follower stops at the cut."""
    from benchlib import pulse

    rate = pulse.RATE_HZ
    ref = _speechlike(4.0, seed=4)
    other = _speechlike(1.0, seed=5)
    cut = int(1.234 * rate)
    spk = np.concatenate([np.zeros(rate // 4), ref[:cut], np.zeros(rate), other])
    followed = pulse.follow_reply(spk, ref, 0)
    assert not followed.complete
    assert followed.gaps == ()
    assert abs(followed.stop - (rate // 4 + cut)) <= pulse.BLOCK // 2


def test_the_bench_reads_the_daemons_events_by_name_from_its_json_lines() -> None:
    """The core's own mark method writes through the daemon's JSON formatter; the bench's reader gets the
    event's name, capture time and fields back, and a text line (a crash before logging) is no event."""
    import io
    from collections import deque
    from types import SimpleNamespace

    from benchlib import daemon

    from earshot import logs
    from earshot.conversation.core import ConversationCore

    stream = io.StringIO()
    logs.configure("info", "off", environ={}, stream=stream, fmt="json")
    try:
        fake = SimpleNamespace(_position=16000 * 3, timeline=deque())
        ConversationCore._mark(fake, 0.0, "bargein", "barge-in (local) at 2.950 s", source="local", onset_s=2.95)  # type: ignore[arg-type]
    finally:
        logs.configure("info", "off", environ={}, stream=io.StringIO())
    message, name, at, data = daemon._parse_line(stream.getvalue().strip())
    assert (name, at, data) == ("bargein", 3.0, {"source": "local", "onset_s": 2.95})
    assert message == "barge-in (local) at 2.950 s"
    assert daemon._parse_line("Traceback (most recent call last):")[1:] == (None, None, {})


def test_the_fallback_barge_in_time_is_no_gap_in_a_broken_reply() -> None:
    """A reply playing in pieces has gaps right after the user's onset: only a silence that lasts is the stop,
    and only when the daemon barged in (a gap once stood for a barge-in the daemon never made)."""
    from benchlib import daemon, pi, pulse

    rng = np.random.default_rng(3)
    rate, scale = 16000, pulse.RATE_HZ // 16000

    def burst(seconds: float, amp: int = 3000) -> np.ndarray:
        return rng.integers(-amp, amp, round(seconds * rate)).astype(np.int16)

    user = np.concatenate([np.zeros(rate, np.int16), burst(1.0), np.zeros(3 * rate, np.int16), burst(2.0)])
    user = np.concatenate([user, np.zeros(4 * rate, np.int16)])
    onset = 5 * rate
    ex = daemon.Exchange(user, question_end=2 * rate, interruption_onset=onset)

    def run(stop_s: float | None, barged: bool) -> pulse.RoomRun:
        speaker = np.zeros(user.size, np.int16)
        speaker[3 * rate :] = burst(user.size / rate - 3)
        speaker[onset + rate // 50 : onset + rate // 50 + rate // 10] = 0  # an underrun's 100 ms gap
        if stop_s is not None:
            speaker[onset + round(stop_s * rate) :] = 0
        rec = np.zeros((user.size * scale, 3), np.int16)
        rec[:, pulse.SPEAKER] = np.repeat(speaker, scale)
        rec[:, pulse.USER] = np.repeat(user, scale)
        events = [daemon.Event(100.0 + 5.2, "bargein", 5.2, {})] if barged else []
        return pulse.RoomRun("t", 0, [], events, 100.0, rec, [], None, [])

    assert pi.speaker_stop_after_onset_ms(run(0.25, barged=True), ex) == pytest.approx(250.0, abs=10.0)
    with pytest.raises(daemon.DaemonUnavailable, match="did not barge in"):
        pi.speaker_stop_after_onset_ms(run(None, barged=False), ex)
    with pytest.raises(daemon.DaemonUnavailable, match="never went quiet"):
        pi.speaker_stop_after_onset_ms(run(None, barged=True), ex)
