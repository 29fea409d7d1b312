"""Debug recordings: WAV + sidecar, privacy modes, size cap with the oldest deleted first."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earshot.config import RecordingsConfig
from earshot.recordings import RATE_HZ, Recorder, TurnBuffer
from earshot.stats import Stats
from tests.support.speech import read_wav

WALL0 = 1_767_000_000.0


def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE_HZ)) * 3000).astype(np.int16)


async def test_disabled_by_default_writes_nothing(tmp_path: Path) -> None:
    rec = Recorder(RecordingsConfig(), tmp_path)
    assert await rec.wake(tone(1.0, 0), engine="template", score=0.9) is None
    assert not (tmp_path / "recordings").exists()


async def test_wake_and_turn_recordings_with_sidecars(tmp_path: Path) -> None:
    stats = Stats(state_dir=tmp_path, now=0.0, now_wall=WALL0)
    rec = Recorder(RecordingsConfig(enabled=True), tmp_path, stats=stats)
    pcm = tone(1.5, 1)
    wake = await rec.wake(pcm, engine="openwakeword", score=0.87, engagement_id="e-1", now_wall=WALL0)
    turn = await rec.turn(tone(0.5, 2), engagement_id="e-1", turn=1, now_wall=WALL0 + 2)
    assert wake is not None
    assert turn is not None
    assert stat.S_IMODE(rec.directory.stat().st_mode) == 0o700
    for r in (wake, turn):
        assert stat.S_IMODE(r.wav.stat().st_mode) == 0o600
        assert stat.S_IMODE(r.sidecar.stat().st_mode) == 0o600
    audio, rate = read_wav(wake.wav)
    assert rate == RATE_HZ
    assert np.array_equal(np.asarray(audio).reshape(-1), pcm)
    meta = json.loads(wake.sidecar.read_text())
    assert meta["kind"] == "wake"
    assert meta["engine"] == "openwakeword"
    assert meta["score"] == 0.87
    assert meta["duration_s"] == 1.5
    assert meta["engagement_id"] == "e-1"
    assert meta["wav"] == wake.wav.name
    assert meta["unix_time"] == WALL0
    tmeta = json.loads(turn.sidecar.read_text())
    assert (tmeta["kind"], tmeta["turn"], tmeta["duration_s"]) == ("turn", 1, 0.5)
    assert stats.recordings == 2


async def test_size_cap_deletes_oldest_first(tmp_path: Path) -> None:
    rec = Recorder(RecordingsConfig(enabled=True, max_mb=1.0), tmp_path)
    stray = tmp_path / "recordings" / "notes.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("not a recording: never deleted")
    written = []
    for i in range(8):  # 8 x 6 s x 32 kB/s = 1.5 MB > 1 MB
        r = await rec.turn(tone(6.0, i), engagement_id=f"e-{i}", now_wall=WALL0 + i)
        assert r is not None
        written.append(r)
    remaining = sorted(p.name for p in rec.directory.glob("*.wav"))
    kept = [r.wav.name for r in written if r.wav.exists()]
    assert remaining == kept
    assert kept == [r.wav.name for r in written[-len(kept) :]]  # the newest survive, in order
    assert 2 <= len(kept) < 8
    total = sum(p.stat().st_size for p in rec.directory.iterdir() if p.name != "notes.txt")
    assert total <= 1_000_000
    for r in written[: 8 - len(kept)]:
        assert not r.sidecar.exists()  # the sidecar goes with its WAV
    assert stray.exists()
    # a single recording larger than the cap is skipped, and deletes nothing
    assert await rec.turn(tone(40.0, 99), engagement_id="huge", now_wall=WALL0 + 100) is None
    assert sorted(p.name for p in rec.directory.glob("*.wav")) == remaining


async def test_unwritable_directory_never_raises(tmp_path: Path) -> None:
    (tmp_path / "recordings").write_text("a file, not a directory")
    rec = Recorder(RecordingsConfig(enabled=True), tmp_path)
    assert await rec.wake(tone(0.2, 0), engine="template", score=1.0) is None


def test_turn_buffer_keeps_the_last_max_s() -> None:
    buf = TurnBuffer(max_s=1.0)
    for i in range(25):  # 2.5 s in 100 ms chunks
        buf.append(np.full(1600, i, np.int16))
    pcm = buf.take()
    assert len(pcm) == RATE_HZ
    assert pcm[0] == 15
    assert pcm[-1] == 24
    assert len(buf) == 0
    assert len(buf.take()) == 0


def test_sync_write_cost_is_reported(tmp_path: Path) -> None:
    """Not a speed assert: exercises the blocking path used from the worker thread."""
    rec = Recorder(RecordingsConfig(enabled=True), tmp_path)
    r = rec.write("turn", tone(10.0, 3), {"engagement_id": "x"}, WALL0, 1)
    assert r is not None
    assert os.path.getsize(r.wav) == 44 + 10 * RATE_HZ * 2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 96 KiB filesystem (tmpfs), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


async def test_a_full_disk_leaves_no_partial_recording_and_warns_per_outage(small_disk: Path, caplog: Any) -> None:
    """On a real full filesystem no ``.wav.tmp`` of user speech is left behind."""
    disk = small_disk
    rec = Recorder(RecordingsConfig(enabled=True, max_mb=100), disk)
    caplog.set_level(logging.WARNING, logger="earshot.recordings")
    assert await rec.turn(tone(1.0, 1), engagement_id="e", turn=1) is not None  # 32 KB: fits
    assert await rec.turn(tone(3.0, 2), engagement_id="e", turn=2) is None  # 96 KB: the disk fills up mid-write
    assert await rec.turn(tone(3.0, 3), engagement_id="e", turn=3) is None
    names = sorted(p.name for p in (disk / "recordings").iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert len([n for n in names if n.endswith(".wav")]) == 1
    warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1  # one outage, one warning
    # The disk has room again: a success ends the outage, and the next failure is warned about again.
    for p in (disk / "recordings").iterdir():
        p.unlink()
    assert await rec.turn(tone(1.0, 4), engagement_id="e", turn=4) is not None
    assert await rec.turn(tone(3.0, 5), engagement_id="e", turn=5) is None
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 2


def test_a_partial_left_by_a_crash_is_pruned(tmp_path: Path) -> None:
    rec = Recorder(RecordingsConfig(enabled=True), tmp_path)
    rec.directory.mkdir(parents=True)
    stale = rec.directory / ".20260101-120000.000-turn-7.wav.tmp"
    stale.write_bytes(b"x" * 1000)
    other = rec.directory / "notes.txt"
    other.write_text("mine")
    rec.prune()
    assert not stale.exists()
    assert other.exists()
