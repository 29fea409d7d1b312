"""ALSA playback: the loudspeaker, 24 kHz mono in, converted to the granted device rate and channels.

The playback thread writes one device period at a time from a software queue the loop fills ahead
of the device buffer; the loop is woken when half of it has played. The played position is exact
to the device pointer, and what was played is handed to the echo canceller as its reference.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import alsaaudio
import numpy as np
from numpy.typing import NDArray

from earshot.audio.alsa.common import AlsaDevice, Granted, backoff, granted_by, open_pcm, post
from earshot.audio.backend import CAPTURE_RATE_HZ, PLAYBACK_RATE_HZ
from earshot.audio.dsp import apply_gain_db, upmix
from earshot.audio.resample import StreamResampler
from earshot.config import OutputConfig
from earshot.errors import AudioDeviceError

__all__ = ["AlsaSink"]

logger = logging.getLogger("earshot.audio.alsa")

_SINK_QUALITY = "LQ"


_SW_LEAD_MS = 200
"""Reply audio the sink queues ahead of the device buffer (refilled when half of it has played)."""
REFERENCE_SLACK_MS = 40
"""The echo reference runs this far ahead of the device buffer's end as well. The device pointer that paces
it moves in bursts, worst at a new stream's start: a reference only a buffer ahead reached the canceller
after its echo on some replies (the PulseAudio room: the reference ran dry 0.4 s into a reply, and the echo
went through whole). The canceller's alignment takes the lead off again."""
_SLACK24 = PLAYBACK_RATE_HZ * REFERENCE_SLACK_MS // 1000
GROW_AFTER_UNDERRUNS = 3
"""Underruns within one sound (from its first write to its drain or drop) that make the next sound open the
device with twice the buffer: a CPU too slow for ``buffer_ms`` (one Pi Zero 2 W core underran a 40 ms buffer
19-32 times in one reply) plays with gaps, and the canceller loses the echo's timing at each."""
MAX_GROWN_BUFFER_MS = 120
"""The most the buffer grows to (from ``buffer_ms``). On 120 ms one Pi Zero core played replies with at most
one underrun each; the reference runs ahead of the device pointer by up to the buffer, which the canceller's
filter must span."""


class AlsaSink(AlsaDevice):
    """The loudspeaker: 24 kHz mono in, converted to the granted device rate and channel count.

    The played position is exact to the device pointer: samples written − (software queue + device
    delay), with the device delay taken as ``buffer_size − avail()``.

    Args:
        config: the ``audio.output`` section.
        reopen_max_s: longest wait between attempts to reopen a missing or failed device.
        stall_s: a write that hangs this long marks the device lost and reopens it.
    """

    kind = "playback"
    rate_hz = PLAYBACK_RATE_HZ
    write_samples = PLAYBACK_RATE_HZ * 40 // 1000
    """What :class:`~earshot.audio.playback.Playback` hands over per write: 40 ms (the software queue
    takes it; barge-in drops it whole, so the size adds no latency)."""

    def __init__(self, config: OutputConfig, *, reopen_max_s: float = 1.0, stall_s: float = 3.0) -> None:
        super().__init__(config.device, reopen_max_s=reopen_max_s, stall_s=stall_s)
        self._config = config
        self.gain_db = config.volume_db
        """Digital gain of what is played: ``volume_db`` plus the volume (:mod:`earshot.volume`)."""
        self._cond = threading.Condition()
        self._sw: collections.deque[bytes] = collections.deque()  # device-format periods not yet written
        self._sw_frames = 0
        self._capacity_frames = 0
        self._space_need = 0  # frames a waiting write() needs; 0 while none waits (the thread then posts nothing)
        self._pcm: Any = None
        self._granted: Granted | None = None
        self._dev_written = 0  # device frames handed to pcm.write since the last reset
        self._in24 = 0  # 24 kHz samples accepted by write() since the last reset
        self._base24 = 0  # played 24 kHz samples before the last reset point
        self._played24_mark = 0  # played position at the last reference pop
        self._history: collections.deque[NDArray[np.int16]] = collections.deque()  # unheard 24 kHz audio
        self._history_start = 0
        # Playback and reference conversions use soxr's low-latency recipe: HQ holds back up to 30 ms in
        # streaming mode, which would add to reply start and to the reference's lag behind the speaker.
        self._ref_resampler = StreamResampler(PLAYBACK_RATE_HZ, CAPTURE_RATE_HZ, quality=_SINK_QUALITY)
        self._ref_tail: NDArray[np.int16] = np.zeros(0, dtype=np.int16)
        self._resampler: StreamResampler | None = None
        self._space = asyncio.Event()
        self._busy_since: float | None = None
        self._discard_until = 0.0  # while the device is missing: when the audio thrown away would have played
        self._settled = asyncio.Event()
        self._buffer_ms = config.buffer_ms  # what the next open asks for (grows: GROW_AFTER_UNDERRUNS)
        self._sound_xruns = 0  # underruns since the current sound's first write
        self._regrow = False  # the thread reopens with ``_buffer_ms`` (between sounds: nothing queued)
        self._regrown = asyncio.Event()  # clear while that reopen is pending: the next sound waits for it
        self._regrown.set()
        self.discarded_samples = 0
        """24 kHz samples thrown away because the device was missing (a reply nobody heard)."""

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the playback thread, which closes the PCM (waited for up to ``timeout_s``)."""
        super().close(timeout_s)

    def _wake_thread(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -------------------------------------------------------------- position accounting (loop side)

    def _device_delay(self) -> int:
        pcm, granted = self._pcm, self._granted
        if pcm is None or granted is None:
            return 0
        try:
            avail = int(pcm.avail())
        except alsaaudio.ALSAAudioError:
            return 0
        if avail < 0:  # -EPIPE: underrun, the device buffer is empty
            return 0
        return max(0, granted.buffer_frames - avail)

    def _played24(self) -> int:
        granted = self._granted
        if granted is None:
            return self._base24 + self._in24
        with self._cond:
            dev_written = self._dev_written
        played_dev = max(0, dev_written - self._device_delay())
        return self._base24 + min(self._in24, played_dev * PLAYBACK_RATE_HZ // granted.rate_hz)

    def queued_samples(self) -> int:
        """24 kHz samples written but not yet heard (resampler + software queue + device buffer)."""
        return self._base24 + self._in24 - self._played24()

    async def write(self, pcm: NDArray[np.int16]) -> None:
        """Queue 24 kHz mono samples; waits while the queue is full.

        Cancellation-safe and atomic: when cancelled, nothing of ``pcm`` was queued. While the device
        is missing, audio is discarded at the pace it would have played (status says so).
        """
        self.start()
        arr = np.asarray(pcm, dtype=np.int16)
        if arr.size == 0:
            return
        await self._settled.wait()  # the first open attempt has succeeded or failed
        await self._regrown.wait()  # a larger buffer asked for between sounds: this sound plays on it
        granted = self._granted
        while granted is not None:
            need = min(self._capacity_frames, round(arr.size * granted.rate_hz / PLAYBACK_RATE_HZ))
            with self._cond:
                free = self._capacity_frames - self._sw_frames
                if free >= need:
                    self._space_need = 0
                    break
                self._space_need = need
                self._space.clear()
            await self._space.wait()
            granted = self._granted
        if granted is None or self._resampler is None:
            await self._discard(arr.size)
            return
        if self.gain_db:
            arr = apply_gain_db(arr, self.gain_db)
        self._history.append(arr)
        self._in24 += int(arr.size)
        dev = upmix(self._resampler.process(arr), granted.channels)
        data = dev.astype("<i2").tobytes()
        bpf = 2 * granted.channels
        # The thread writes one period at a time: a barge-in's drop() can only let the period being
        # written through (a 40 ms write in flight went on into the emptied device, unheard by the count).
        step = max(1, granted.period_frames) * bpf
        with self._cond:
            self._sw.extend(data[i : i + step] for i in range(0, len(data), step))
            self._sw_frames += len(data) // bpf
            self._cond.notify()

    async def _discard(self, samples: int) -> None:
        """No device: throw ``samples`` away at the pace they would have played (behind a buffer's worth of lead).

        A producer writing in a loop thus keeps real time and yields to the event loop, which must run
        for the device to be reopened at all; a reply on a missing speaker lasts as long as it would have.
        """
        now = time.monotonic()
        self.discarded_samples += samples
        self._discard_until = max(self._discard_until, now) + samples / PLAYBACK_RATE_HZ
        await asyncio.sleep(max(0.0, self._discard_until - now - self._config.buffer_ms / 1000))

    def drop(self) -> None:
        """Discard everything not yet heard: the software queue and the device buffer, now."""
        self._forget_unheard(drop_device=True)
        if self._resampler is not None:
            self._resampler.reset()
        # What the reference resampler still holds came from the lead past the device pointer: never heard.
        # Left in, it came out as the next reply's first reference, loud, with no echo to match.
        self._ref_resampler.reset()
        self._ref_tail = np.zeros(0, dtype=np.int16)
        self._space.set()
        self._end_of_sound()

    @property
    def buffer_ms(self) -> int:
        """The device buffer the device is (or will next be) opened with: ``buffer_ms``, or more after underruns."""
        return self._buffer_ms

    def _end_of_sound(self) -> None:
        """A sound ended (drained or dropped): grow the buffer for the next if this one kept underrunning."""
        xruns, self._sound_xruns = self._sound_xruns, 0
        if xruns < GROW_AFTER_UNDERRUNS or self._buffer_ms >= MAX_GROWN_BUFFER_MS:
            return
        self._buffer_ms = min(MAX_GROWN_BUFFER_MS, 2 * self._buffer_ms)
        logger.warning(
            "playback device %s underran %d times in one sound (the CPU is too slow for its buffer): "
            "the next sound plays with a %d ms buffer",
            self._config.device,
            xruns,
            self._buffer_ms,
            extra={"event": "playback_buffer", "data": {"buffer_ms": self._buffer_ms, "underruns": xruns}},
        )
        self._regrown.clear()
        with self._cond:
            self._regrow = True
            self._cond.notify_all()

    async def drain(self) -> None:
        """Wait until everything written has been played (polled at a quarter period), then stop the device.

        Cancellation-safe. The next write starts the device afresh.
        """
        self.start()
        await self._settled.wait()
        if self._resampler is not None and self._granted is not None:
            tail = self._resampler.flush()
            if tail.size:
                data = upmix(tail, self._granted.channels).astype("<i2").tobytes()
                with self._cond:
                    self._sw.append(data)
                    self._sw_frames += len(data) // (2 * self._granted.channels)
                    self._cond.notify()
        # The device pointer moves without any event to wait on: polling is inherent.
        while self.queued_samples() > 0 and self._granted is not None:  # noqa: ASYNC110
            await asyncio.sleep(max(0.002, self._config.period_ms / 4000))
        # Everything was heard: the reference's filter tail belongs to it too.
        heard = self._trim_history(self._played24(), drop_rest=False)
        tail = np.concatenate((self._ref_tail, self._ref_resampler.process(heard), self._ref_resampler.flush()))
        # Stop the emptied device: a card left running between replies underruns (-EPIPE) when the next one
        # starts, and that gap is not a fault to count as an xrun.
        self.drop()
        self._ref_tail = tail

    def pop_reference(self) -> NDArray[np.int16]:
        """16 kHz mono of what the device played since the last call (nothing while idle).

        It runs ahead of the device pointer by up to the granted buffer (what is in the device now,
        about to be heard) and :data:`REFERENCE_SLACK_MS` more. The pointer moves in bursts (a period, or a
        whole server transfer with the pulse plugin) and capture chunks come in bursts too: a reference
        handed over only once played reached the canceller after its echo, which no causal filter can
        cancel. The canceller's alignment takes an early reference's lead off.
        """
        played = self._played24()
        granted = self._granted
        if granted is not None:
            lead = (granted.buffer_frames * PLAYBACK_RATE_HZ // granted.rate_hz) + _SLACK24
            played = min(self._base24 + self._in24, played + lead)
        out = self._trim_history(played, drop_rest=False)
        ref = self._ref_resampler.process(out) if out.size else np.zeros(0, dtype=np.int16)
        if self._ref_tail.size:
            ref, self._ref_tail = np.concatenate((self._ref_tail, ref)), np.zeros(0, dtype=np.int16)
        return ref

    def _trim_history(self, played: int, *, drop_rest: bool) -> NDArray[np.int16]:
        """Remove (and return) the history up to ``played``; with ``drop_rest`` forget the unheard rest too."""
        n = played - self._history_start
        parts: list[NDArray[np.int16]] = []
        while n > 0 and self._history:
            head = self._history[0]
            take = min(n, head.size)
            parts.append(head[:take])
            if take == head.size:
                self._history.popleft()
            else:
                self._history[0] = head[take:]
            n -= take
            self._history_start += take
        if drop_rest:
            self._history.clear()
            self._history_start = played
        self._history_start = max(self._history_start, played) if not self._history else self._history_start
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    # -------------------------------------------------------------- the thread

    def _run_thread(self, gen: int) -> None:
        cfg = self._config
        loop = self._loop
        assert loop is not None
        delays = backoff(self._reopen_max_s)
        regrowing = False  # reopening only for a larger buffer, between sounds (not a fault)
        while not self._stop.is_set() and gen == self._generation:
            with self._cond:
                self._regrow = False
                buffer_ms = self._buffer_ms
            try:
                pcm = open_pcm(
                    cfg.device,
                    alsaaudio.PCM_PLAYBACK,
                    cfg.sample_rate_hz,
                    cfg.channels,
                    max(1, cfg.sample_rate_hz * cfg.period_ms // 1000),
                    max(2, buffer_ms // cfg.period_ms),
                )
                granted = granted_by(pcm)
            except AudioDeviceError as exc:
                post(loop, self._on_missing, gen, exc.message, False)
                self._stop.wait(next(delays))
                continue
            delays = backoff(self._reopen_max_s)
            opened = threading.Event()
            post(loop, self._on_open, gen, pcm, granted, opened, regrowing)
            opened.wait(5.0)
            regrowing = False
            bpf = 2 * granted.channels
            try:
                while not self._stop.is_set() and gen == self._generation:
                    with self._cond:
                        while not (self._sw or self._regrow or self._stop.is_set() or gen != self._generation):
                            self._cond.wait(0.5)
                        if not self._sw:
                            if self._regrow:
                                regrowing = True
                                break  # nothing queued: reopen with the larger buffer now, between sounds
                            continue
                        data = self._sw.popleft()
                    self._busy_since = time.monotonic()
                    try:
                        n = pcm.write(data)
                    except alsaaudio.ALSAAudioError:
                        if pcm.state() in (alsaaudio.PCM_STATE_SETUP, alsaaudio.PCM_STATE_PREPARED):
                            # drop() from the loop interrupted this write: the data was discarded anyway
                            self._busy_since = None
                            continue
                        raise
                    self._busy_since = None
                    if n == -errno.EPIPE:  # underrun, pyalsaaudio prepared the device: write again
                        post(loop, self._on_xrun, gen)
                        n = pcm.write(data)
                    with self._cond:
                        self._sw_frames = max(0, self._sw_frames - len(data) // bpf)
                        self._dev_written += max(0, n)
                        # Wake a waiting writer once its write fits and half the queue is free, not after
                        # every period: the loop refills in bursts, a few wake-ups a second.
                        free = self._capacity_frames - self._sw_frames
                        wake = 0 < self._space_need <= free and free >= self._capacity_frames // 2
                        if wake:
                            self._space_need = 0
                    if wake:
                        post(loop, self._space.set)
            except alsaaudio.ALSAAudioError as exc:
                post(loop, self._on_missing, gen, str(exc), True)
                self._stop.wait(next(delays))
            finally:
                self._busy_since = None
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    pcm.close()

    def _on_open(self, gen: int, pcm: Any, granted: Granted, opened: threading.Event, regrown: bool = False) -> None:
        if gen != self._generation:
            opened.set()
            return
        old = self._granted
        if regrown and old is not None and (old.rate_hz, old.channels) == (granted.rate_hz, granted.channels):
            # Only the buffer grew, between sounds: the stream goes on (the same conversion, the positions
            # kept, no reopen counted). What a write queued meanwhile is in the device format already.
            logger.info("playback device %s: buffer %d frames", self._config.device, granted.buffer_frames)
            with self._cond:
                self._pcm = pcm
                self._granted = granted
                lead = granted.rate_hz * _SW_LEAD_MS // 1000
                self._capacity_frames = max(granted.period_frames, granted.buffer_frames, lead)
            self._regrown.set()
            opened.set()
            return
        self._regrown.set()
        reopened = self._ever_opened
        self._ever_opened = True
        logger.info(
            "playback device %s open: %d Hz, %d ch, period %d frames, buffer %d frames",
            self._config.device,
            granted.rate_hz,
            granted.channels,
            granted.period_frames,
            granted.buffer_frames,
        )
        self._forget_unheard()
        with self._cond:
            self._pcm = pcm
            self._granted = granted
            # The software queue ahead of the device buffer: long enough that the loop refills it a
            # few times a second. Barge-in drops it with the device buffer, so it adds no latency.
            lead = granted.rate_hz * _SW_LEAD_MS // 1000
            self._capacity_frames = max(granted.period_frames, granted.buffer_frames, lead)
        self._resampler = StreamResampler(PLAYBACK_RATE_HZ, granted.rate_hz, quality=_SINK_QUALITY)
        self._set_status(self._open_status(granted, reopened=reopened))
        self._space.set()
        self._settled.set()
        opened.set()

    def _forget_unheard(self, *, drop_device: bool = False) -> None:
        """What was written and not heard is gone: the played position becomes the new base."""
        played = self._played24()
        with self._cond:
            self._sw.clear()
            self._sw_frames = 0
            self._dev_written = 0
            self._base24 = played
            self._in24 = 0
            if drop_device and self._pcm is not None:
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    self._pcm.drop()
        self._trim_history(played, drop_rest=True)

    def _on_missing(self, gen: int, message: str, was_open: bool) -> None:
        if gen != self._generation:
            return
        status = self._missing_status(message, was_open)
        # Whatever was queued is lost with the device: it counts as not heard.
        self._forget_unheard()
        with self._cond:
            self._pcm = None
            self._granted = None
        self._resampler = None
        self._set_status(status)
        self._space.set()
        self._settled.set()
        self._regrown.set()  # no device to reopen: writers go on (to the discard path)

    def _on_xrun(self, gen: int) -> None:
        if gen != self._generation:
            return
        xruns = self._status.xruns + 1
        self._status = replace(self._status, xruns=xruns)
        self._sound_xruns += 1
        if xruns & (xruns - 1) == 0:  # the 1st, 2nd, 4th, 8th...: a device that keeps underrunning, boundedly
            logger.warning(
                "playback underrun on %s: the device played silence mid-sound (%d so far; the loop or the sink "
                "thread was late)",
                self._config.device,
                xruns,
            )

    def _stall_reason(self) -> str | None:
        busy = self._busy_since
        if busy is not None and time.monotonic() - busy > self._stall_s:
            return f"write stalled for {self._stall_s:.1f} s"
        return None
