"""ALSA capture: the microphone as 10 ms chunks of 16 kHz mono, from whatever the device grants.

The capture thread puts what it reads, in order with its open/xrun/missing events, into one locked
inbox bounded in bytes (``audio.input.queue_ms``) and wakes the loop once for however much has piled
up: a loop that is late (a slow CPU, a long callback) finds everything the device delivered
meanwhile, converts it in one batch (channel select/downmix, resampling, framing) and catches up;
nothing is lost until the bound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import alsaaudio
import numpy as np

from earshot.audio.alsa.common import PERIODS, AlsaDevice, Granted, backoff, granted_by, open_pcm, post
from earshot.audio.backend import CAPTURE_CHUNK_SAMPLES, CAPTURE_RATE_HZ, CaptureChunk, DeviceState
from earshot.audio.dsp import Framer, apply_gain_db, downmix
from earshot.audio.quiet import QuietHold
from earshot.audio.resample import StreamResampler
from earshot.config import InputConfig
from earshot.errors import AudioDeviceError

__all__ = ["AlsaSource"]

logger = logging.getLogger("earshot.audio.alsa")

_FIRST_DATA_GRACE_S = 5.0
_WATCH_LATE_S = 0.02
"""The stall watch looks this long after a stall would begin (its test is strictly "longer than")."""
_LATE_WARN_S = 0.1
"""The loop took captured audio this late: worth a warning (at most every ``_LATE_WARN_EVERY_S``)."""
_LATE_WARN_EVERY_S = 10.0
_IDLE_CHUNK = 25 * CAPTURE_CHUNK_SAMPLES
"""Idle, audio is yielded in chunks of whole 10 ms frames, at most this long (250 ms): a period, or a
catch-up's audio cut to the size the conversation takes in one call."""
_TURN_EVERY_S = 0.005
"""The chunk iterator gives the other tasks a turn once it (and what its consumer did with the chunks)
has held the loop this long: a catch-up never starves playback or the link, and a normal period,
however many chunks, costs one pass of the loop, not one per few chunks."""


class AlsaSource(AlsaDevice):
    """The microphone: 10 ms chunks of 16 kHz mono from any rate/channel count the device grants.

    Args:
        config: the ``audio.input`` section.
        reopen_max_s: longest wait between attempts to reopen a missing or failed device.
        stall_s: a device that delivers nothing for this long is considered lost and reopened.
    """

    kind = "capture"

    def __init__(self, config: InputConfig, *, reopen_max_s: float = 1.0, stall_s: float = 3.0) -> None:
        super().__init__(config.device, reopen_max_s=reopen_max_s, stall_s=stall_s)
        self._config = config
        self._max_chunks = max(1, config.queue_ms // 10)
        self._queue: collections.deque[CaptureChunk] = collections.deque()
        self._queued_frames = 0  # 10 ms frames in the queue (an idle chunk holds several): its bound
        # The thread → loop inbox: ("open", gen, granted, switching) | ("missing", gen, message, was_open)
        # | ("xrun", gen, code) | ("data", gen, bytes, monotonic time read), in the order they happened.
        self._lock = threading.Lock()
        self._inbox: collections.deque[tuple[Any, ...]] = collections.deque()
        self._inbox_bytes = 0
        self._inbox_bound = 0  # bytes of raw audio (set by the thread from what the device granted)
        self._gap_bytes = 0  # raw bytes dropped at the bound, not yet marked in the inbox
        self._woken = False
        self._late_max_s = 0.0
        self._late_warned = -_LATE_WARN_EVERY_S
        self._ready = asyncio.Event()
        self._t0 = 0.0
        self._position = 0
        self._last_data = 0.0
        self._conv: tuple[int, Granted, StreamResampler, Framer] | None = None
        self._got_data = False
        self._period_ms = config.period_ms
        """The period the thread opens the device with (read by the thread; set on the loop)."""
        self._idle = False  # long periods, and quiet ones held in the inbox (:class:`QuietHold`)
        self._posted_at = 0.0  # when the thread last asked the loop to drain (monotonic)

    @property
    def late_max_ms(self) -> float:
        """The most the event loop was late taking captured audio since the start (ms)."""
        return 1000.0 * self._late_max_s

    @property
    def backlog(self) -> int:
        """Chunks of the current period (or of a catch-up) not yielded yet."""
        return len(self._queue)

    def set_low_latency(self, low: bool) -> None:
        """``audio.input.period_ms`` (engaged) or ``idle_period_ms`` (idle); the device is reopened to change.

        An ALSA period is fixed while the device is open. The thread notices after its current read
        returns (at most one period late), closes the device and opens it again at once with the new
        period: the reopen is a gap of a few ms, which the positions leave out (they stay on the
        capture's own count), and no reopen is counted.
        """
        self._period_ms = self._config.period_ms if low else self._config.idle_period_ms
        self._idle = not low
        if low and self._loop is not None:
            with self._lock:
                self._posted_at = time.monotonic()  # what was held was not waiting for the loop
            self._drain()  # the quiet audio the thread held: the engagement wants it now

    def _starting(self) -> None:
        self._t0 = self._last_data = time.monotonic()

    async def chunks(self) -> AsyncIterator[CaptureChunk]:
        """Yield capture chunks forever; a device fault never ends the iteration (see ``status``).

        Engaged, each chunk is 10 ms. Idle, it is a period's whole 10 ms frames (at most 250 ms).

        A backlog (the loop was late, or the thread held a quiet room's periods) is yielded at once,
        with a turn for the other tasks every :data:`_TURN_EVERY_S` of loop time, so a catch-up never
        starves playback or the uplink.
        """
        self.start()
        turn_at: float | None = None  # when this run of chunks must give the others a turn
        while True:
            if not self._queue:
                self._drain()  # what waited in the inbox for room (no turn for the others: not a reset)
                if not self._queue:
                    turn_at = None
                    while not self._queue:
                        self._ready.clear()
                        await self._ready.wait()
            now = time.monotonic()
            if turn_at is None:
                turn_at = now + _TURN_EVERY_S
            elif now >= turn_at:
                await asyncio.sleep(0)
                turn_at = time.monotonic() + _TURN_EVERY_S
            chunk = self._queue.popleft()
            self._queued_frames -= len(chunk.pcm) // CAPTURE_CHUNK_SAMPLES
            yield chunk

    # -------------------------------------------------------------- the thread: open, read, nothing else

    def _put(self, item: tuple[Any, ...], nbytes: int = 0, *, wake: bool = True) -> None:
        """Thread side: append to the inbox and wake the loop once for all that piles up.

        ``wake`` false (a quiet idle period, :class:`QuietHold`): the item waits in the inbox, without
        waking the loop, until an item that does wake it.

        Past the bound the newest audio is dropped (what was kept is the start of what the user
        said); the next audio that fits is preceded by a ``gap`` marker, so positions keep time.
        """
        loop = self._loop
        assert loop is not None
        with self._lock:
            if nbytes and self._inbox_bytes + nbytes > self._inbox_bound > 0:
                self._gap_bytes += nbytes
            else:
                if nbytes and self._gap_bytes:
                    self._inbox.append(("gap", item[1], self._gap_bytes))
                    self._gap_bytes = 0
                self._inbox.append(item)
                self._inbox_bytes += nbytes
            wake = wake and not self._woken
            if wake:
                self._woken = True
                self._posted_at = time.monotonic()
        if wake:
            post(loop, self._drain)

    def _run_thread(self, gen: int) -> None:
        cfg = self._config
        delays = backoff(self._reopen_max_s)
        rate_hint = cfg.sample_rate_hz
        switching = False  # reopening only to change the period (not a fault)
        while not self._stop.is_set() and gen == self._generation:
            period_ms = self._period_ms
            try:
                pcm = open_pcm(
                    cfg.device,
                    alsaaudio.PCM_CAPTURE,
                    rate_hint,
                    cfg.channels,
                    max(1, rate_hint * period_ms // 1000),
                    # A long buffer of short periods: each period is read as soon as it is ready
                    # (latency), and a process starved of CPU for up to buffer_ms loses nothing.
                    max(PERIODS, -(-cfg.buffer_ms // period_ms)),
                )
                granted = granted_by(pcm)
            except AudioDeviceError as exc:
                self._put(("missing", gen, exc.message, False))
                self._stop.wait(next(delays))
                continue
            delays = backoff(self._reopen_max_s)
            with self._lock:
                self._inbox_bound = max(1, cfg.queue_ms * granted.rate_hz // 1000) * granted.channels * 2
            self._put(("open", gen, granted, switching))
            switching = False
            quiet = QuietHold()
            try:
                while not self._stop.is_set() and gen == self._generation and period_ms == self._period_ms:
                    n, data = pcm.read()
                    if n < 0:
                        self._put(("xrun", gen, n))
                    elif n:
                        wake = not self._idle or quiet.period(np.frombuffer(data, "<i2"), n / granted.rate_hz)
                        self._put(("data", gen, data, time.monotonic()), len(data), wake=wake)
                switching = True
            except alsaaudio.ALSAAudioError as exc:
                self._put(("missing", gen, str(exc), True))
                self._stop.wait(next(delays))
            finally:
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    pcm.close()

    # -------------------------------------------------------------- loop side

    def _drain(self) -> None:
        """Loop side: take what the thread put in the inbox, in order, as far as the chunk queue has room.

        Audio converts in batches. What does not fit stays in the inbox (the thread is not asked to
        wake the loop again) until the chunk iterator has room and drains again.
        """
        room = self._max_chunks - self._queued_frames
        conv = self._conv
        per_chunk = conv[1].rate_hz // 100 * conv[1].channels * 2 if conv is not None else 320
        items: list[tuple[Any, ...]] = []
        with self._lock:
            posted_at = self._posted_at
            while self._inbox and room > 0:
                item = self._inbox.popleft()
                items.append(item)
                if item[0] == "data":
                    self._inbox_bytes -= len(item[2])
                    room -= max(1, len(item[2]) // max(1, per_chunk))
            self._woken = bool(self._inbox)
        now = time.monotonic()
        batch: list[bytes] = []
        batch_gen = 0
        for item in items:
            kind = item[0]
            if kind == "data":
                if batch and item[1] != batch_gen:
                    self._on_data(batch_gen, b"".join(batch))
                    batch = []
                if not batch:
                    # Late from when the loop was asked, not from the read: audio the thread held
                    # while the room was quiet was not waiting for the loop.
                    self._note_lateness(now - max(item[3], posted_at), now)
                batch_gen = item[1]
                batch.append(item[2])
                continue
            if batch:
                self._on_data(batch_gen, b"".join(batch))
                batch = []
            if kind == "open":
                self._on_open(item[1], item[2], item[3])
            elif kind == "missing":
                self._on_missing(item[1], item[2], item[3])
            elif kind == "xrun":
                self._on_xrun(item[1], item[2])
            elif kind == "gap":
                self._on_gap(item[1], item[2])
        if batch:
            self._on_data(batch_gen, b"".join(batch))

    def _on_gap(self, gen: int, nbytes: int) -> None:
        if gen != self._generation or self._conv is None:
            return
        granted = self._conv[1]
        lost = max(1, nbytes // max(1, granted.rate_hz // 100 * granted.channels * 2))
        self._status = replace(self._status, overruns=self._status.overruns + lost)
        self._position += lost * CAPTURE_CHUNK_SAMPLES  # the gap is real time: positions keep it
        logger.warning(
            "capture: the loop fell over %d ms behind; %d ms of audio were dropped", self._config.queue_ms, lost * 10
        )

    def _note_lateness(self, late_s: float, now: float) -> None:
        self._late_max_s = max(self._late_max_s, late_s)
        if late_s > _LATE_WARN_S and now - self._late_warned >= _LATE_WARN_EVERY_S:
            self._late_warned = now
            logger.warning(
                "event loop ran %d ms late taking captured audio; catching up",
                round(1000 * late_s),
                extra={"event": "loop_late", "data": {"ms": round(1000 * late_s)}},
            )

    def _on_missing(self, gen: int, message: str, was_open: bool = False) -> None:
        if gen != self._generation:
            return
        self._set_status(self._missing_status(message, was_open))
        self._conv = None
        self._last_data = time.monotonic()

    def _on_open(self, gen: int, granted: Granted, switching: bool = False) -> None:
        if gen != self._generation:
            return
        conv = self._conv
        if (
            switching
            and conv is not None
            and (conv[1].rate_hz, conv[1].channels) == (granted.rate_hz, granted.channels)
        ):
            # Only the period changed: the stream goes on (same resampler and framer, no reopen counted).
            logger.debug("capture device %s: period %d frames", self._config.device, granted.period_frames)
            self._status = replace(self._status, period_frames=granted.period_frames)
            self._conv = (gen, granted, conv[2], conv[3])
            self._got_data = False
            self._last_data = time.monotonic()
            return
        reopened = self._ever_opened
        logger.info(
            "capture device %s open: %d Hz, %d ch, period %d frames",
            self._config.device,
            granted.rate_hz,
            granted.channels,
            granted.period_frames,
        )
        self._set_status(self._open_status(granted, reopened=reopened))
        self._got_data = False
        self._conv = (gen, granted, StreamResampler(granted.rate_hz, CAPTURE_RATE_HZ), Framer(CAPTURE_CHUNK_SAMPLES))
        # Time passed while the device was away is a gap in positions, so positions keep measuring time.
        # Positions count from the first successful open (a slow first open is not a gap).
        if not self._ever_opened:
            self._ever_opened = True
            self._t0 = time.monotonic()
        elapsed = round((time.monotonic() - self._t0) * CAPTURE_RATE_HZ)
        if elapsed - self._position > CAPTURE_RATE_HZ // 10:
            self._position = elapsed - elapsed % CAPTURE_CHUNK_SAMPLES
        self._last_data = time.monotonic()

    def _on_xrun(self, gen: int, code: int) -> None:
        if gen != self._generation:
            return
        self._status = replace(self._status, xruns=self._status.xruns + 1)
        logger.warning("capture xrun on %s (%d), recovered", self._config.device, code)

    def _on_data(self, gen: int, data: bytes) -> None:
        if gen != self._generation or self._conv is None:
            return
        self._last_data = time.monotonic()
        self._got_data = True
        _, granted, resampler, framer = self._conv
        raw = np.frombuffer(data, dtype="<i2").astype(np.int16)
        mono = downmix(raw, granted.channels, self._config.channel)
        if self._config.gain_db:
            mono = apply_gain_db(mono, self._config.gain_db)
        pcm = resampler.process(mono)
        if self._idle:
            # Idle: the period whole, as one chunk of several 10 ms frames (the conversation takes an
            # idle period in one call anyway; a chunk object and a hand-over per 10 ms were most of
            # an idle loop's cost).
            whole = framer.take(pcm)
            frames = [whole[i : i + _IDLE_CHUNK] for i in range(0, len(whole), _IDLE_CHUNK)]
        else:
            frames = framer.push(pcm)
        for frame in frames:
            if self._queued_frames >= self._max_chunks + 32:  # slack: one period past the room _drain saw
                dropped = self._queue.popleft()
                lost = len(dropped.pcm) // CAPTURE_CHUNK_SAMPLES
                self._queued_frames -= lost
                self._status = replace(self._status, overruns=self._status.overruns + lost)
            self._queue.append(CaptureChunk(frame, self._position))
            self._queued_frames += len(frame) // CAPTURE_CHUNK_SAMPLES
            self._position += len(frame)
        self._ready.set()

    def _stall_limit(self) -> float:
        # Some devices (sound servers) take a couple of seconds to deliver the first period after opening.
        return self._stall_s if self._got_data else max(self._stall_s, _FIRST_DATA_GRACE_S)

    def _stall_reason(self) -> str | None:
        limit = self._stall_limit()
        if time.monotonic() - self._last_data > limit:
            return f"no audio for {limit:.1f} s"
        return None

    def _stall_due(self, now: float) -> float:
        # Just after the last audio's limit runs out: while audio keeps coming (a quiet room's held
        # periods wake the loop once a second), the watch wakes it about once per stall_s, not twice.
        # At most stall_s on: audio that begins during a first-data grace shortens the limit.
        if self._status.state is not DeviceState.OK:
            return super()._stall_due(now)
        return min(self._last_data + self._stall_limit() + _WATCH_LATE_S, now + self._stall_s)
