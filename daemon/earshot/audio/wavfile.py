"""The file backend: a WAV in as the microphone, a WAV out as the speaker, both on one clock.

One clock task ticks every 10 ms of audio (``10 ms / audio.file_speed`` of loop time). Each tick:

1. takes 10 ms (240 samples at 24 kHz) from the simulated device buffer, or silence when it is empty,
   and appends it to the output WAV: the output is a continuous speaker timeline, so a time in the
   output is the same time in the input;
2. turns the same 10 ms into the 16 kHz echo reference (``pop_reference``) and, with ``audio.echo``,
   mixes its echo through a loudspeaker, a room and a delay (:class:`~earshot.audio.room.EchoPath`)
   into what the microphone captures;
3. delivers the next 160 input samples as a :class:`~earshot.audio.backend.CaptureChunk`.

The simulated device buffer holds ``audio.output.buffer_ms``; ``write`` waits while it is full, so
played-position accounting behaves as with ALSA. When the input ends, ``chunks()`` ends, but the clock
keeps ticking (silence-padded) until :meth:`FileAudio.close`, so a reply in progress still plays out and
is recorded. The clock never runs more than a few chunks ahead of the capture consumer while the input
lasts, so a slow consumer cannot make the output drift from the input at high speed factors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.audio.backend import (
    CAPTURE_CHUNK_SAMPLES,
    CAPTURE_RATE_HZ,
    PLAYBACK_RATE_HZ,
    CaptureChunk,
    DeviceState,
    DeviceStatus,
)
from earshot.audio.dsp import apply_gain_db, downmix, upmix
from earshot.audio.resample import StreamResampler, resample
from earshot.audio.room import EchoPath
from earshot.config import AudioConfig
from earshot.errors import AudioDeviceError

__all__ = ["FileAudio", "FileSink", "FileSource", "read_input_wav"]

logger = logging.getLogger(__name__)

TICK_S = 0.010
_TICK_OUT = PLAYBACK_RATE_HZ // 100
_AHEAD_CHUNKS = 4
_WRITER_YIELDS = 6
_REFERENCE_KEEP = CAPTURE_RATE_HZ * 10
_REFERENCE_HOLD_TICKS = 30
"""Ticks of silence after the last sound for which the reference still goes out (as zeros): an underrun
within a reply is silence the speaker played, on the same timeline. Left out, the canceller took the
missing reference for late reference, dropped that much of the next sound as "late" and, with a
reference that has no lead over capture, never caught up again: the rest of the reply was paired
with the wrong reference and passed through uncancelled (the bench's engaged run on a busy loop)."""


def read_input_wav(path: Path, *, channel: int | None = None) -> NDArray[np.int16]:
    """Read a PCM WAV of any rate, channel count and 8/16/24/32-bit width as 16 kHz mono int16.

    Raises:
        AudioDeviceError: the file is missing or not a PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(str(path), f"cannot read input WAV: {exc}") from exc
    if width == 1:
        pcm = ((np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    elif width == 2:
        pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    elif width == 3:
        raw = np.frombuffer(data, dtype=np.uint8)[: len(data) // 3 * 3].reshape(-1, 3)
        pcm = (raw[:, 2].astype(np.int8).astype(np.int16) << 8 | raw[:, 1].astype(np.int16)).astype(np.int16)
    elif width == 4:
        pcm = (np.frombuffer(data, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioDeviceError(str(path), f"unsupported sample width {width}")
    if channel is not None and channel >= channels:
        channel = None
    mono = downmix(pcm, channels, channel)
    return resample(mono, rate, CAPTURE_RATE_HZ)


def _resampler_lag(in_hz: int, out_hz: int, block: int, blocks: int) -> int:
    """Most output samples a fresh :class:`StreamResampler` holds back, fed ``blocks`` blocks of ``block``.

    Its filter delay plus the bursts its output comes in: the shortfall at its worst over the blocks.
    """
    probe = StreamResampler(in_hz, out_hz)
    produced = 0
    worst = 0
    for k in range(1, blocks + 1):
        produced += int(probe.process(np.zeros(block, dtype=np.int16)).size)
        worst = max(worst, k * block * out_hz // in_hz - produced)
    return worst


class FileSource:
    """The microphone side of :class:`FileAudio`."""

    def __init__(self, audio: FileAudio) -> None:
        self._audio = audio

    def chunks(self) -> AsyncIterator[CaptureChunk]:
        """Yield the input WAV in 10 ms chunks on the clock; ends when the input ends."""
        return self._audio._iterate()

    @property
    def backlog(self) -> int:
        """The clock yields one chunk per tick: never a burst."""
        return 0

    def set_low_latency(self, low: bool) -> None:
        """The file's clock delivers one 10 ms chunk per tick whatever the period: nothing to change."""

    async def aclose(self) -> None:
        """Stop the clock and finalize the output WAV (both sides share it; idempotent)."""
        await self._audio.aclose()

    @property
    def status(self) -> DeviceStatus:
        """Status of the input file."""
        return DeviceStatus(str(self._audio.input_path), self._audio._state, rate_hz=CAPTURE_RATE_HZ)


class FileSink:
    """The speaker side of :class:`FileAudio`: a simulated device buffer drained by the clock."""

    rate_hz = PLAYBACK_RATE_HZ
    write_samples = PLAYBACK_RATE_HZ // 100  # the fake device buffer is short: 10 ms writes keep it fed

    def __init__(self, audio: FileAudio) -> None:
        self._audio = audio

    async def write(self, pcm: NDArray[np.int16]) -> None:
        """Queue samples; waits while the simulated device buffer is full.

        Cancellation-safe and atomic: when cancelled, nothing of ``pcm`` was queued.
        """
        await self._audio._write(np.asarray(pcm, dtype=np.int16))

    def queued_samples(self) -> int:
        """Samples in the simulated device buffer (not yet heard)."""
        return self._audio._queued

    def drop(self) -> None:
        """Discard the device buffer now."""
        self._audio._drop()

    async def drain(self) -> None:
        """Wait until the device buffer has been played out. Cancellation-safe."""
        await self._audio._drain()

    async def aclose(self) -> None:
        """Stop the clock and finalize the output WAV (both sides share it; idempotent)."""
        await self._audio.aclose()

    def pop_reference(self) -> NDArray[np.int16]:
        """16 kHz mono of every tick played since the last call (silence within a sound; nothing while idle)."""
        return self._audio._pop_reference()

    @property
    def gain_db(self) -> float:
        """Digital gain of what is played (``output.volume_db`` plus the volume)."""
        return self._audio.gain_db

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        self._audio.gain_db = value

    @property
    def status(self) -> DeviceStatus:
        """Status of the output file."""
        path = self._audio.output_path
        return DeviceStatus(str(path) if path else "(no output file)", self._audio._state, rate_hz=PLAYBACK_RATE_HZ)


class FileAudio:
    """A WAV file as the microphone and another as the speaker, on one clock paced by the loop.

    Args:
        config: the ``audio`` section (``input.file``, ``output.file``, ``output.buffer_ms``,
            ``output.volume_db``, ``input.gain_db``, ``input.channel``, ``echo``, ``file_speed``).

    Raises:
        AudioDeviceError: the input WAV cannot be read.
    """

    def __init__(self, config: AudioConfig) -> None:
        if config.input.file is None:
            raise AudioDeviceError("audio.input.file", "the file backend needs an input WAV")
        self.input_path = config.input.file
        self.output_path = config.output.file
        self._speed = config.file_speed
        self._input = apply_gain_db(read_input_wav(self.input_path, channel=config.input.channel), config.input.gain_db)
        self.gain_db = config.output.volume_db
        """Digital gain of what is played: ``output.volume_db`` plus the volume (:mod:`earshot.volume`)."""
        self._capacity = max(_TICK_OUT, config.output.buffer_ms * PLAYBACK_RATE_HZ // 1000)
        self._buffer: deque[NDArray[np.int16]] = deque()
        self._queued = 0
        self._space = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._reference: deque[NDArray[np.int16]] = deque()
        self._reference_samples = 0
        self._ref_resampler = StreamResampler(PLAYBACK_RATE_HZ, CAPTURE_RATE_HZ)
        # The reference goes out as exactly one 160-sample chunk per tick, from a line that starts with
        # the resampler's worst shortfall (its filter delay plus the bursts its output comes in), so it
        # never runs dry: reference and capture stay paired sample for sample from the first tick.
        self.reference_lag_samples = _resampler_lag(PLAYBACK_RATE_HZ, CAPTURE_RATE_HZ, _TICK_OUT, 400)
        """16 kHz samples the reference runs behind the output WAV (the resampler's delay)."""
        self._ref_line: NDArray[np.int16] = np.zeros(self.reference_lag_samples, dtype=np.int16)
        self._silent_ticks = _REFERENCE_HOLD_TICKS  # ticks since the last sound (capped): idle at the start
        # The echo comes ``delay_ms`` after that reference, as on a device, where the sink hands over the
        # audio in the device buffer before it sounds. In the output WAV the echo is thus
        # ``reference_lag_samples`` later than ``delay_ms``. Timing the echo from the output WAV instead
        # put it as early as its reference, which no causal canceller can remove and no device does.
        self._echo = (
            None
            if config.echo is None
            else EchoPath(
                rate_hz=CAPTURE_RATE_HZ,
                delay_ms=config.echo.delay_ms,
                gain_db=config.echo.gain_db,
                rt60_ms=config.echo.room_ms,
                drive_db=config.echo.drive_db,
            )
        )
        self._queue: asyncio.Queue[CaptureChunk | None] = asyncio.Queue(maxsize=_AHEAD_CHUNKS)
        self._out_rate = config.output.sample_rate_hz
        self._out_channels = config.output.channels
        self._out_resampler = StreamResampler(PLAYBACK_RATE_HZ, self._out_rate)
        self._wav: wave.Wave_write | None = None
        if self.output_path is not None:
            self.output_path.parent.mkdir(parents=True, exist_ok=True)
            self._wav = wave.open(str(self.output_path), "wb")  # noqa: SIM115 - kept open for the run, closed in close()
            self._wav.setnchannels(self._out_channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self._out_rate)
        self._task: asyncio.Task[None] | None = None
        self._writers_waiting = 0
        self._state = DeviceState.OK
        self.ticks = 0
        """Ticks of the clock so far (10 ms of audio each)."""
        self.source = FileSource(self)
        self.sink = FileSink(self)

    # ---------------------------------------------------------------- the clock

    def _ensure_clock(self) -> None:
        if self._task is None and self._state is DeviceState.OK:
            self._task = asyncio.get_running_loop().create_task(self._clock(), name="earshot-file-clock")

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n_chunks = self._input.size // CAPTURE_CHUNK_SAMPLES + (1 if self._input.size % CAPTURE_CHUNK_SAMPLES else 0)
        tick = 0
        while True:
            delay = t0 + tick * TICK_S / self._speed - loop.time()
            await asyncio.sleep(max(0.0, delay))
            played16 = self._tick_output()
            if self._queued < self._capacity:
                # At high speed factors a tick is shorter than a loop iteration: let a writer refill the
                # buffer before the next tick, as a real-time writer would within 10 ms.
                for _ in range(_WRITER_YIELDS):
                    await asyncio.sleep(0)
            if tick < n_chunks:
                start = tick * CAPTURE_CHUNK_SAMPLES
                pcm = np.zeros(CAPTURE_CHUNK_SAMPLES, dtype=np.int16)
                part = self._input[start : start + CAPTURE_CHUNK_SAMPLES]
                pcm[: part.size] = part
                if self._echo is not None:
                    mixed = pcm.astype(np.float64) + self._echo.process(played16)
                    pcm = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
                await self._queue.put(CaptureChunk(pcm, start))
            elif tick == n_chunks:
                await self._queue.put(None)
                logger.info(
                    "input %s ended after %.2f s",
                    self.input_path,
                    n_chunks * TICK_S,
                    extra={"event": "input_ended", "data": {"seconds": round(n_chunks * TICK_S, 3)}},
                )
            tick += 1
            self.ticks = tick

    def _tick_output(self) -> NDArray[np.int16]:
        out = np.zeros(_TICK_OUT, dtype=np.int16)
        filled = 0
        while filled < _TICK_OUT and self._buffer:
            head = self._buffer[0]
            n = min(_TICK_OUT - filled, head.size)
            out[filled : filled + n] = head[:n]
            filled += n
            if n == head.size:
                self._buffer.popleft()
            else:
                self._buffer[0] = head[n:]
        self._queued -= filled
        if self._queued < self._capacity:
            self._space.set()
        if self._queued == 0:
            self._empty.set()
        if self._wav is not None:
            rate_out = self._out_resampler.process(out)
            self._wav.writeframes(upmix(rate_out, self._out_channels).astype("<i2").tobytes())
        line = np.concatenate((self._ref_line, self._ref_resampler.process(out)))
        played16 = line[:CAPTURE_CHUNK_SAMPLES]
        if played16.size < CAPTURE_CHUNK_SAMPLES:  # not expected (the line starts primed); keeps the chunk whole
            played16 = np.concatenate((played16, np.zeros(CAPTURE_CHUNK_SAMPLES - played16.size, dtype=np.int16)))
        self._ref_line = line[CAPTURE_CHUNK_SAMPLES:]
        sounding = bool(filled) or bool(played16.any())
        if filled or (sounding and self._silent_ticks < _REFERENCE_HOLD_TICKS):
            self._silent_ticks = 0  # (the resampler's tail after a drop does not start a hold again)
        elif not sounding:
            self._silent_ticks = min(self._silent_ticks + 1, _REFERENCE_HOLD_TICKS)
        if sounding or self._silent_ticks < _REFERENCE_HOLD_TICKS:
            # Like the ALSA sink, nothing while idle: a reference that starts again after silence is a
            # new pairing for the canceller, aligned (or found to have no echo) afresh. Handed silence
            # for ever, the file backend's canceller ran its filter on every earcon unaligned, and on a
            # user talking over one it learned their voice. A short silence (an underrun) is handed on.
            self._reference.append(played16)
            self._reference_samples += int(played16.size)
        while self._reference_samples > _REFERENCE_KEEP:
            self._reference_samples -= int(self._reference.popleft().size)
        return played16

    # ---------------------------------------------------------------- source

    async def _iterate(self) -> AsyncIterator[CaptureChunk]:
        self._ensure_clock()
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    # ---------------------------------------------------------------- sink

    async def _write(self, pcm: NDArray[np.int16]) -> None:
        if self._state is not DeviceState.OK:
            return
        self._ensure_clock()
        if self.gain_db:
            pcm = apply_gain_db(pcm, self.gain_db)
        need = min(int(pcm.size), self._capacity)
        while self._capacity - self._queued < need:
            self._space.clear()
            self._writers_waiting += 1
            try:
                await self._space.wait()
            finally:
                self._writers_waiting -= 1
        if pcm.size:
            self._buffer.append(pcm.copy())
            self._queued += int(pcm.size)
            self._empty.clear()

    def _drop(self) -> None:
        self._buffer.clear()
        self._queued = 0
        self._silent_ticks = _REFERENCE_HOLD_TICKS  # stopped, not starved: the next sound is a new pairing
        self._space.set()
        self._empty.set()

    async def _drain(self) -> None:
        self._ensure_clock()
        while self._queued > 0:
            await self._empty.wait()

    def _pop_reference(self) -> NDArray[np.int16]:
        if not self._reference:
            return np.zeros(0, dtype=np.int16)
        out = np.concatenate(list(self._reference))
        self._reference.clear()
        self._reference_samples = 0
        return out

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Stop the clock and finalize the output WAV."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.close()

    def close(self) -> None:
        """Stop the clock (if still running) and finalize the output WAV. Idempotent."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._state = DeviceState.CLOSED
        self._space.set()
        self._empty.set()
        if self._wav is not None:
            self._wav.close()
            self._wav = None
