"""Debug recordings of wake hits and user turns (off by default: they are the user's voice).

With ``recordings.enabled: true``, each wake-word hit (the ring audio the engine saw, with its score)
and each user turn (what was sent upstream, before resampling) is written to
``<state_dir>/recordings/`` as a 16 kHz mono WAV plus a JSON sidecar of the same name::

    20261121-072944.123-wake-3.wav
    20261121-072944.123-wake-3.json   {"kind": "wake", "engine": "openwakeword", "score": 0.83, ...}

The directory is mode 0700 and the files 0600. The total size is kept under ``recordings.max_mb``
by deleting the oldest recordings first. Writes run in a worker thread (:func:`asyncio.to_thread`):
a 10 s turn is 320 KB, and an SD card can stall for tens of ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.config import RecordingsConfig
from earshot.stats import Stats

__all__ = ["RATE_HZ", "Recorder", "Recording", "TurnBuffer"]

logger = logging.getLogger(__name__)

RATE_HZ = 16000
_NAME = re.compile(r"^\d{8}-\d{6}\.\d{3}-(wake|turn)-\d+\.(wav|json)$")
_PARTIAL = re.compile(r"^\.\d{8}-\d{6}\.\d{3}-(wake|turn)-\d+\.wav\.tmp$")
_WARN_EVERY_S = 600.0


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording written to disk."""

    wav: Path
    sidecar: Path
    meta: dict[str, Any]


class Recorder:
    """Writes wake and turn recordings, keeping the directory under the size cap.

    Args:
        config: the ``recordings`` section.
        state_dir: the daemon's state directory; recordings go in its ``recordings/``.
        stats: counts ``recordings`` when given.
    """

    def __init__(self, config: RecordingsConfig, state_dir: Path, *, stats: Stats | None = None) -> None:
        self.enabled = config.enabled
        self.directory = state_dir / "recordings"
        self.max_bytes = int(config.max_mb * 1_000_000)
        self._stats = stats
        self._seq = 0
        self._lock = asyncio.Lock()
        self._warned_at: float | None = None  # monotonic time of the last "cannot write" warning

    async def wake(
        self,
        pcm16k: NDArray[np.int16],
        *,
        engine: str,
        score: float,
        engagement_id: str | None = None,
        now_wall: float | None = None,
    ) -> Recording | None:
        """Record a wake hit (the audio the engine saw). None when disabled or not written."""
        return await self._record(
            "wake", pcm16k, {"engine": engine, "score": float(score), "engagement_id": engagement_id}, now_wall
        )

    async def turn(
        self,
        pcm16k: NDArray[np.int16],
        *,
        engagement_id: str | None,
        turn: int | None = None,
        now_wall: float | None = None,
    ) -> Recording | None:
        """Record a user turn. None when disabled or not written."""
        return await self._record("turn", pcm16k, {"engagement_id": engagement_id, "turn": turn}, now_wall)

    async def _record(
        self, kind: str, pcm16k: NDArray[np.int16], extra: dict[str, Any], now_wall: float | None
    ) -> Recording | None:
        if not self.enabled or len(pcm16k) == 0:
            return None
        self._seq += 1
        seq = self._seq
        pcm = np.ascontiguousarray(pcm16k, dtype=np.int16).copy()  # the caller may reuse its buffer
        wall = time.time() if now_wall is None else now_wall
        async with self._lock:  # one writer at a time: pruning sees a consistent directory
            try:
                recording = await asyncio.to_thread(self.write, kind, pcm, extra, wall, seq)
            except OSError as exc:
                # Once per outage (and again every 10 minutes while it lasts), not once per process.
                mono = time.monotonic()
                if self._warned_at is None or mono - self._warned_at >= _WARN_EVERY_S:
                    logger.warning("cannot write debug recording in %s: %s", self.directory, exc)
                    self._warned_at = mono
                return None
            self._warned_at = None
        if recording is not None and self._stats is not None:
            self._stats.recordings += 1
        return recording

    def write(
        self, kind: str, pcm16k: NDArray[np.int16], extra: dict[str, Any], now_wall: float, seq: int
    ) -> Recording | None:
        """Write one recording and prune (blocking; :meth:`wake`/:meth:`turn` run it in a thread).

        Returns None (and logs) when the recording alone exceeds the cap.

        Raises:
            OSError: the directory or files cannot be written.
        """
        pcm_bytes = pcm16k.astype("<i2", copy=False).tobytes()
        if len(pcm_bytes) + 1024 > self.max_bytes:
            logger.info("debug recording of %.1f s exceeds recordings.max_mb; skipped", len(pcm16k) / RATE_HZ)
            return None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = dt.datetime.fromtimestamp(now_wall)
        stem = f"{stamp:%Y%m%d-%H%M%S}.{stamp.microsecond // 1000:03d}-{kind}-{seq}"
        wav_path = self.directory / f"{stem}.wav"
        side_path = self.directory / f"{stem}.json"
        meta: dict[str, Any] = {
            "kind": kind,
            "time": stamp.astimezone().isoformat(timespec="milliseconds"),
            "unix_time": round(now_wall, 3),
            "duration_s": round(len(pcm16k) / RATE_HZ, 3),
            "sample_rate_hz": RATE_HZ,
            **{k: v for k, v in extra.items() if v is not None},
            "wav": wav_path.name,
        }
        tmp = wav_path.with_name(f".{wav_path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as wf:
                wf.setnchannels(1)
                wf.setsampwidth(2)
                wf.setframerate(RATE_HZ)
                wf.writeframes(pcm_bytes)
            os.replace(tmp, wav_path)
            fd = os.open(side_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(meta, f, indent=1)
                f.write("\n")
        except OSError:
            # A full disk: no partial recording of the user's speech is left behind.
            for path in (tmp, wav_path, side_path):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        finally:
            self.prune()
        return Recording(wav=wav_path, sidecar=side_path, meta=meta)

    def prune(self) -> int:
        """Delete the oldest recordings (WAV and sidecar together) until under the cap.

        Returns the number of recordings deleted. Files that are not recordings are left alone.
        """
        groups: dict[str, list[tuple[Path, int]]] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return 0
        total = 0
        for entry in entries:
            if _PARTIAL.match(entry.name) and entry.is_file(follow_symlinks=False):
                # Left by a crash mid-write (never by a write that failed: it removes its own).
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            if not _NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            total += size
            groups.setdefault(entry.name.rsplit(".", 1)[0], []).append((Path(entry.path), size))
        deleted = 0
        # The name starts with the local time to the ms, so name order is age order.
        for stem in sorted(groups, key=_age_key):
            if total <= self.max_bytes:
                break
            for path, size in groups[stem]:
                path.unlink(missing_ok=True)
                total -= size
            deleted += 1
        if deleted:
            logger.debug("deleted %d old debug recordings (cap %d bytes)", deleted, self.max_bytes)
        return deleted


def _age_key(stem: str) -> tuple[str, int]:
    stamp, _kind, seq = stem.rsplit("-", 2)
    return stamp, int(seq)


class TurnBuffer:
    """Collects a user turn's 16 kHz audio for :meth:`Recorder.turn`, bounded to ``max_s``.

    Beyond ``max_s`` the oldest audio is dropped (the end of a long turn is what explains a
    failure to stop listening).
    """

    def __init__(self, max_s: float = 60.0) -> None:
        self._max_samples = int(max_s * RATE_HZ)
        self._chunks: list[NDArray[np.int16]] = []
        self._samples = 0

    def append(self, pcm16k: NDArray[np.int16]) -> None:
        """Add audio (copied)."""
        self._chunks.append(pcm16k.astype(np.int16, copy=True))
        self._samples += len(pcm16k)
        while self._chunks and self._samples - len(self._chunks[0]) >= self._max_samples:
            self._samples -= len(self._chunks.pop(0))

    def take(self) -> NDArray[np.int16]:
        """The audio collected (at most ``max_s``), and start over."""
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        self._samples = 0
        return pcm[-self._max_samples :] if len(pcm) > self._max_samples else pcm

    def __len__(self) -> int:
        return self._samples
