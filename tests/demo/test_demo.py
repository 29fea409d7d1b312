"""scripts/demo end to end: a real emulator and a real daemon as subprocesses, flite speech in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\s+(?P<wall>\d+\.\d+)\s+(?P<audio>\d+\.\d+)?\s+(?P<who>demo|server|daemon)\s+(?P<what>.*)$")


def timeline(stdout: str) -> list[tuple[float | None, str, str]]:
    """(audio clock, who, what) of every timeline row printed."""
    rows = []
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            rows.append((float(m["audio"]) if m["audio"] else None, m["who"], m["what"]))
    return rows


def first(rows: list[tuple[float | None, str, str]], who: str, pattern: str) -> tuple[float | None, re.Match[str]]:
    for audio, source, what in rows:
        m = re.search(pattern, what)
        if source == who and m:
            return audio, m
    raise AssertionError(f"no {who} line matching {pattern!r} in the timeline")


def at(rows: list[tuple[float | None, str, str]], pattern: str) -> float:
    """The microphone-clock time of the first daemon lifecycle line matching ``pattern``."""
    audio, _ = first(rows, "daemon", pattern)
    assert audio is not None, pattern
    return audio


def run_demo(tmp_path: Path, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """scripts/demo.py with ``args``, its output in ``tmp_path``.

    No key (the emulator needs none), and no asyncio debug mode in the children: its slow-callback
    bookkeeping stretches the wall-clock timers the x3 file clock is measured against.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "PYTHONASYNCIODEBUG")}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), *args, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=tmp_path,
        env=env,
        check=False,
    )


@pytest.mark.timeout(110)
def test_quick_demo_shows_wake_ready_reply_bargein_and_truncate(tmp_path: Path) -> None:
    """The quick demo exits 0 and its timeline shows the whole exchange, the barge-in and a matching truncate."""
    proc = run_demo(tmp_path, "--quick", timeout_s=100)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    rows = timeline(out)

    first(rows, "daemon", r"^wake word \(microwakeword")
    wake_t = at(rows, r"^engaged by wake word")
    ready_t = at(rows, r"^session ready$")
    first(rows, "server", r"user turn committed \((\d+) ms of audio\)")
    reply_t = at(rows, r"^reply started$")
    bargein_t, onset = first(rows, "daemon", r"^barge-in \(local\) at (\d+\.\d+) s")
    _, heard = first(rows, "daemon", r"^playback stopped; truncate at (\d+) ms heard")
    _, server = first(rows, "server", r"truncate \S+ at (\d+) ms \((\d+) ms sent\)")
    first(rows, "server", r"session 0 closed \(code 1000\)")
    assert bargein_t is not None
    assert wake_t <= ready_t < reply_t < bargein_t

    # The interruption is the demo's second spoken segment; barge-in is found after it starts.
    spoken = [float(m.group(1)) for m in re.finditer(r"^\s+(\d+\.\d+)-\s*\d+\.\d+ s", out, re.M)]
    assert len(spoken) == 2
    assert spoken[1] <= float(onset.group(1)) < bargein_t
    # What the daemon says was heard is what the server truncated at, within what had been sent,
    # and it matches the reply's playing time on the speaker clock (10 ms periods).
    assert int(heard.group(1)) == int(server.group(1))
    assert 0 < int(server.group(1)) < int(server.group(2))
    assert abs(int(heard.group(1)) - (bargein_t - reply_t) * 1000) <= 30
    assert "all milestones seen" in out

    with wave.open(str(tmp_path / "speaker.wav"), "rb") as w:
        assert w.getframerate() == 24000
        assert w.getnframes() > 0
    assert f"speaker output:   {tmp_path / 'speaker.wav'}" in out
    assert (tmp_path / "daemon.log").read_text().count("barge-in") >= 1
    assert "session 0 opened" in (tmp_path / "emulator.log").read_text()


def test_real_without_a_key_refuses_before_any_network(tmp_path: Path) -> None:
    """--real without $OPENAI_API_KEY exits 2 with a message and starts nothing."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--real", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "OPENAI_API_KEY" in proc.stderr
    assert not (tmp_path / "earshot.yaml").exists()


@pytest.mark.timeout(150)
def test_quick_features_demo_says_an_announcement_and_rings_a_voice_timer_offline(tmp_path: Path) -> None:
    """scripts/demo --features: the announcement is spoken; the timer set by voice rings after the
    network went down, and speech over it stops it."""
    proc = run_demo(tmp_path, "--features", "--quick", timeout_s=140)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    rows = timeline(out)
    said = at(rows, r"^announcement \(\d+ characters\)$")
    assert said < at(rows, r"^reply started$")
    first(rows, "demo", r"^earshot say: saying it now \(exit 0\)")
    first(rows, "daemon", r"^tool call set_timer$")
    first(rows, "daemon", r"^timer t1 set: due ")
    order = [what for _, who, what in rows if who in ("demo", "daemon")]
    down = next(i for i, what in enumerate(order) if what.startswith("network down"))
    ringing = next(i for i, what in enumerate(order) if re.match(r"timer t1 ringing \(tea\)", what))
    stopped = next(i for i, what in enumerate(order) if what.startswith("timer ring stopped by "))
    assert down < ringing < stopped
    spoken = [float(m.group(1)) for m in re.finditer(r"^\s+(\d+\.\d+)-\s*\d+\.\d+ s", out, re.M)]
    assert len(spoken) == 2
    assert at(rows, r"^timer ring stopped by ") >= spoken[1]
    assert "all milestones seen" in out
    record = json.loads((tmp_path / "state" / "timers.json").read_text())
    assert record["timers"] == []
