"""ALSA capture and playback: the only module importing ``alsaaudio``.

Each device has one thread that only does blocking ``read``/``write``. The capture thread puts what
it reads, in order with its open/xrun/missing events, into one locked inbox bounded in bytes
(``audio.input.queue_ms``) and wakes the loop once for however much has piled up: a loop that is
late (a slow CPU, a long callback) finds everything the device delivered meanwhile, converts it in
one batch (channel select/downmix, resampling, framing) and catches up; nothing is lost until the
bound. A device that is missing or fails is reopened with backoff (capped by
``audio.reopen_max_s``) without blocking the daemon; a device whose read/write hangs (e.g. a sound
server that died) is abandoned after ``stall_s`` and reopened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import alsaaudio
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
from earshot.audio.dsp import Framer, apply_gain_db, downmix, upmix
from earshot.audio.resample import StreamResampler
from earshot.config import InputConfig, OutputConfig
from earshot.errors import AudioDeviceError

__all__ = ["AlsaSink", "AlsaSource", "DeviceInfo", "list_devices"]

logger = logging.getLogger(__name__)

_PERIODS = 4
_SINK_QUALITY = "LQ"
_FIRST_DATA_GRACE_S = 5.0
_PROBE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
_LATE_WARN_S = 0.1
"""The loop took captured audio this late: worth a warning (at most every ``_LATE_WARN_EVERY_S``)."""
_LATE_WARN_EVERY_S = 10.0
_YIELD_EVERY = 3
"""While catching up, the chunk iterator gives other tasks a turn every this many chunks."""


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` in ``/proc/PID/task/TID/comm`` (top, py-spy, the bench's split).

    Python names its threads only for itself; the kernel's name is what operators see. Best effort:
    15 bytes, Linux only.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # pragma: no cover - not Linux / no libc
        pass


class _LoopGone(Exception):
    """The event loop closed under a device thread: the thread ends."""


def _post(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError as exc:  # the loop is closed: nobody is listening any more
        raise _LoopGone from exc


def _backoff(max_s: float) -> Iterator[float]:
    delay = 0.1
    while True:
        yield delay
        delay = min(max_s, delay * 2)


def _open(
    device: str, kind: int, rate: int, channels: int, period_frames: int, periods: int = _PERIODS, *, block: bool = True
) -> Any:
    try:
        return alsaaudio.PCM(
            kind,
            alsaaudio.PCM_NORMAL if block else alsaaudio.PCM_NONBLOCK,
            device=device,
            rate=rate,
            channels=channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=period_frames,
            periods=periods,
        )
    except alsaaudio.ALSAAudioError as exc:
        raise AudioDeviceError(device, str(exc)) from exc


@dataclass(frozen=True, slots=True)
class _Granted:
    rate_hz: int
    channels: int
    period_frames: int
    buffer_frames: int


def probe_device(device: str, *, capture: bool, rate: int, channels: int, period_ms: int) -> str:
    """Open ``device`` as the daemon does (without waiting for a busy one) and close it: what was granted.

    Raises:
        AudioDeviceError: it cannot be opened (the message says why; "busy" when another holds it).
    """
    kind = alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK
    pcm = _open(device, kind, rate, channels, max(1, rate * period_ms // 1000), block=False)
    try:
        granted = _granted(pcm)
    finally:
        pcm.close()
    return f"{granted.rate_hz} Hz, {granted.channels} ch, period {granted.period_frames} frames"


def _granted(pcm: Any) -> _Granted:
    info = pcm.info()
    return _Granted(int(info["rate"]), int(info["channels"]), int(info["period_size"]), int(info["buffer_size"]))


# ---------------------------------------------------------------------------------------------- capture


class AlsaSource:
    """The microphone: 10 ms chunks of 16 kHz mono from any rate/channel count the device grants.

    Args:
        config: the ``audio.input`` section.
        reopen_max_s: longest wait between attempts to reopen a missing or failed device.
        stall_s: a device that delivers nothing for this long is considered lost and reopened.
    """

    def __init__(self, config: InputConfig, *, reopen_max_s: float = 1.0, stall_s: float = 3.0) -> None:
        self._config = config
        self._reopen_max_s = reopen_max_s
        self._stall_s = stall_s
        self._max_chunks = max(1, config.queue_ms // 10)
        self._queue: collections.deque[CaptureChunk] = collections.deque()
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
        self._status = DeviceStatus(config.device, DeviceState.CLOSED)  # not opened yet
        self._generation = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._position = 0
        self._last_data = 0.0
        self._conv: tuple[int, _Granted, StreamResampler, Framer] | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._thread_obj: threading.Thread | None = None
        self._ever_opened = False
        self._got_data = False
        self._period_ms = config.period_ms
        """The period the thread opens the device with (read by the thread; set on the loop)."""
        self.on_status: Callable[[DeviceStatus], None] | None = None
        """Called on the loop when the device's state changes (opened, missing, reopening)."""

    @property
    def status(self) -> DeviceStatus:
        """Device name, state, xruns, overruns, reopens, last error, granted rate/period."""
        return self._status

    def _set_status(self, status: DeviceStatus) -> None:
        changed = status.state is not self._status.state
        self._status = status
        if changed and self.on_status is not None:
            self.on_status(status)

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

    def start(self) -> None:
        """Start the capture thread (done by :meth:`chunks`); must be called from the event loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._t0 = self._last_data = time.monotonic()
        self._spawn()
        self._watch = self._loop.call_later(self._stall_s / 2, self._check_stall)

    def _spawn(self) -> None:
        self._generation += 1
        gen = self._generation
        self._thread_obj = threading.Thread(
            target=self._thread, args=(gen,), name=f"earshot-capture-{gen}", daemon=True
        )
        self._thread_obj.start()

    async def chunks(self) -> AsyncIterator[CaptureChunk]:
        """Yield 10 ms chunks forever; a device fault never ends the iteration (see ``status``).

        A backlog (the loop was late) is yielded at once, with a turn for the other tasks every
        few chunks so a catch-up never starves the uplink.
        """
        self.start()
        run = 0  # chunks handed over since this task last gave the others a turn
        while True:
            if not self._queue:
                self._drain()  # what waited in the inbox for room (no turn for the others: not a reset)
                if not self._queue:
                    run = 0
                    while not self._queue:
                        self._ready.clear()
                        await self._ready.wait()
            if run >= _YIELD_EVERY:
                run = 0
                await asyncio.sleep(0)
                continue
            run += 1
            yield self._queue.popleft()

    def close(self, timeout_s: float = 0.5) -> None:
        """Stop the thread; it closes the PCM when its blocking read returns (waited for up to ``timeout_s``)."""
        self._stop.set()
        self._generation += 1
        if self._watch is not None:
            self._watch.cancel()
        if self._thread_obj is not None:
            self._thread_obj.join(timeout_s)
        self._status = replace(self._status, state=DeviceState.CLOSED)

    # -------------------------------------------------------------- the thread: open, read, nothing else

    def _thread(self, gen: int) -> None:
        name_os_thread("earshot-capture")
        with contextlib.suppress(_LoopGone):
            self._run_thread(gen)

    def _put(self, item: tuple[Any, ...], nbytes: int = 0) -> None:
        """Thread side: append to the inbox and wake the loop once for all that piles up.

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
            wake = not self._woken
            self._woken = True
        if wake:
            _post(loop, self._drain)

    def _run_thread(self, gen: int) -> None:
        cfg = self._config
        delays = _backoff(self._reopen_max_s)
        rate_hint = cfg.sample_rate_hz
        switching = False  # reopening only to change the period (not a fault)
        while not self._stop.is_set() and gen == self._generation:
            period_ms = self._period_ms
            try:
                pcm = _open(
                    cfg.device,
                    alsaaudio.PCM_CAPTURE,
                    rate_hint,
                    cfg.channels,
                    max(1, rate_hint * period_ms // 1000),
                    # A long buffer of short periods: each period is read as soon as it is ready
                    # (latency), and a process starved of CPU for up to buffer_ms loses nothing.
                    max(_PERIODS, -(-cfg.buffer_ms // period_ms)),
                )
                granted = _granted(pcm)
            except AudioDeviceError as exc:
                self._put(("missing", gen, exc.message, False))
                self._stop.wait(next(delays))
                continue
            delays = _backoff(self._reopen_max_s)
            with self._lock:
                self._inbox_bound = max(1, cfg.queue_ms * granted.rate_hz // 1000) * granted.channels * 2
            self._put(("open", gen, granted, switching))
            switching = False
            try:
                while not self._stop.is_set() and gen == self._generation and period_ms == self._period_ms:
                    n, data = pcm.read()
                    if n < 0:
                        self._put(("xrun", gen, n))
                    elif n:
                        self._put(("data", gen, data, time.monotonic()), len(data))
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
        room = self._max_chunks - len(self._queue)
        conv = self._conv
        per_chunk = conv[1].rate_hz // 100 * conv[1].channels * 2 if conv is not None else 320
        items: list[tuple[Any, ...]] = []
        with self._lock:
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
                    self._note_lateness(now - item[3], now)
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
            logger.warning("event loop ran %d ms late taking captured audio; catching up", round(1000 * late_s))

    def _on_missing(self, gen: int, message: str, was_open: bool = False) -> None:
        if gen != self._generation:
            return
        state = DeviceState.REOPENING if was_open or self._ever_opened else DeviceState.MISSING
        if self._status.state is not state or self._status.error != message:
            logger.warning("capture device %s %s: %s", self._config.device, state.value, message)
        self._set_status(replace(self._status, state=state, error=message, rate_hz=0, period_frames=0))
        self._conv = None
        self._last_data = time.monotonic()

    def _on_open(self, gen: int, granted: _Granted, switching: bool = False) -> None:
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
        self._set_status(
            replace(
                self._status,
                state=DeviceState.OK,
                error=None,
                rate_hz=granted.rate_hz,
                period_frames=granted.period_frames,
                reopens=self._status.reopens + (1 if reopened else 0),
            )
        )
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
        for frame in framer.push(resampler.process(mono)):
            if len(self._queue) >= self._max_chunks + 32:  # slack: one period past the room _drain saw
                self._queue.popleft()
                self._status = replace(self._status, overruns=self._status.overruns + 1)
            self._queue.append(CaptureChunk(frame, self._position))
            self._position += CAPTURE_CHUNK_SAMPLES
        self._ready.set()

    def _check_stall(self) -> None:
        assert self._loop is not None
        if self._stop.is_set():
            return
        # Some devices (sound servers) take a couple of seconds to deliver the first period after opening.
        limit = self._stall_s if self._got_data else max(self._stall_s, _FIRST_DATA_GRACE_S)
        if self._status.state is DeviceState.OK and time.monotonic() - self._last_data > limit:
            self._on_missing(self._generation, f"no audio for {limit:.1f} s", True)
            self._spawn()  # the stalled thread sees a new generation when (if) its read returns
        self._watch = self._loop.call_later(self._stall_s / 2, self._check_stall)


# ---------------------------------------------------------------------------------------------- playback


_SW_LEAD_MS = 200
"""Reply audio the sink queues ahead of the device buffer (refilled when half of it has played)."""


class AlsaSink:
    """The loudspeaker: 24 kHz mono in, converted to the granted device rate and channel count.

    The played position is exact to the device pointer: samples written − (software queue + device
    delay), with the device delay taken as ``buffer_size − avail()``.

    Args:
        config: the ``audio.output`` section.
        reopen_max_s: longest wait between attempts to reopen a missing or failed device.
        stall_s: a write that hangs this long marks the device lost and reopens it.
    """

    rate_hz = PLAYBACK_RATE_HZ
    write_samples = PLAYBACK_RATE_HZ * 40 // 1000
    """What :class:`~earshot.audio.playback.Playback` hands over per write: 40 ms (the software queue
    takes it; barge-in drops it whole, so the size adds no latency)."""

    def __init__(self, config: OutputConfig, *, reopen_max_s: float = 1.0, stall_s: float = 3.0) -> None:
        self._config = config
        self._reopen_max_s = reopen_max_s
        self._stall_s = stall_s
        self._status = DeviceStatus(config.device, DeviceState.CLOSED)  # not opened yet
        self._cond = threading.Condition()
        self._sw: collections.deque[bytes] = collections.deque()  # device-format periods not yet written
        self._sw_frames = 0
        self._capacity_frames = 0
        self._space_need = 0  # frames a waiting write() needs; 0 while none waits (the thread then posts nothing)
        self._pcm: Any = None
        self._granted: _Granted | None = None
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
        self._generation = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy_since: float | None = None
        self._discard_until = 0.0  # while the device is missing: when the audio thrown away would have played
        self._settled = asyncio.Event()
        self._ever_opened = False
        self._watch: asyncio.TimerHandle | None = None
        self._thread_obj: threading.Thread | None = None
        self.on_status: Callable[[DeviceStatus], None] | None = None
        """Called on the loop when the device's state changes (opened, missing, reopening)."""
        self.discarded_samples = 0
        """24 kHz samples thrown away because the device was missing (a reply nobody heard)."""

    @property
    def status(self) -> DeviceStatus:
        """Device name, state, xruns, reopens, last error, granted rate/period."""
        return self._status

    def _set_status(self, status: DeviceStatus) -> None:
        changed = status.state is not self._status.state
        self._status = status
        if changed and self.on_status is not None:
            self.on_status(status)

    def start(self) -> None:
        """Start the playback thread (done by the first write); must be called from the event loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._spawn()
        self._watch = self._loop.call_later(self._stall_s / 2, self._check_stall)

    def _spawn(self) -> None:
        self._generation += 1
        gen = self._generation
        self._thread_obj = threading.Thread(
            target=self._thread, args=(gen,), name=f"earshot-playback-{gen}", daemon=True
        )
        self._thread_obj.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the playback thread, which closes the PCM (waited for up to ``timeout_s``)."""
        self._stop.set()
        self._generation += 1
        with self._cond:
            self._cond.notify_all()
        if self._watch is not None:
            self._watch.cancel()
        if self._thread_obj is not None:
            self._thread_obj.join(timeout_s)
        self._status = replace(self._status, state=DeviceState.CLOSED)

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
        if self._config.volume_db:
            arr = apply_gain_db(arr, self._config.volume_db)
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
        played = self._played24()
        with self._cond:
            self._sw.clear()
            self._sw_frames = 0
            self._dev_written = 0
            self._base24 = played
            self._in24 = 0
            if self._pcm is not None:
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    self._pcm.drop()
        self._trim_history(played, drop_rest=True)
        if self._resampler is not None:
            self._resampler.reset()
        # What the reference resampler still holds came from the lead past the device pointer: never heard.
        # Left in, it came out as the next reply's first reference, loud, with no echo to match.
        self._ref_resampler.reset()
        self._ref_tail = np.zeros(0, dtype=np.int16)
        self._space.set()

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
        about to be heard). The pointer moves in bursts (a period, or a whole server transfer with the
        pulse plugin) and capture chunks come in bursts too: a reference handed over only once played
        reached the canceller after its echo, which no causal filter can cancel. Early by up to a
        buffer is within what the adaptive filter absorbs.
        """
        played = self._played24()
        granted = self._granted
        if granted is not None:
            lead = granted.buffer_frames * PLAYBACK_RATE_HZ // granted.rate_hz
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

    def _thread(self, gen: int) -> None:
        name_os_thread("earshot-playback")
        with contextlib.suppress(_LoopGone):
            self._run_thread(gen)

    def _run_thread(self, gen: int) -> None:
        cfg = self._config
        loop = self._loop
        assert loop is not None
        delays = _backoff(self._reopen_max_s)
        while not self._stop.is_set() and gen == self._generation:
            try:
                pcm = _open(
                    cfg.device,
                    alsaaudio.PCM_PLAYBACK,
                    cfg.sample_rate_hz,
                    cfg.channels,
                    max(1, cfg.sample_rate_hz * cfg.period_ms // 1000),
                    max(2, cfg.buffer_ms // cfg.period_ms),
                )
                granted = _granted(pcm)
            except AudioDeviceError as exc:
                _post(loop, self._on_missing, gen, exc.message, False)
                self._stop.wait(next(delays))
                continue
            delays = _backoff(self._reopen_max_s)
            opened = threading.Event()
            _post(loop, self._on_open, gen, pcm, granted, opened)
            opened.wait(5.0)
            bpf = 2 * granted.channels
            try:
                while not self._stop.is_set() and gen == self._generation:
                    with self._cond:
                        while not self._sw and not self._stop.is_set() and gen == self._generation:
                            self._cond.wait(0.5)
                        if not self._sw:
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
                        _post(loop, self._on_xrun, gen)
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
                        _post(loop, self._space.set)
            except alsaaudio.ALSAAudioError as exc:
                _post(loop, self._on_missing, gen, str(exc), True)
                self._stop.wait(next(delays))
            finally:
                self._busy_since = None
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    pcm.close()

    def _on_open(self, gen: int, pcm: Any, granted: _Granted, opened: threading.Event) -> None:
        if gen != self._generation:
            opened.set()
            return
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
        self._set_status(
            replace(
                self._status,
                state=DeviceState.OK,
                error=None,
                rate_hz=granted.rate_hz,
                period_frames=granted.period_frames,
                reopens=self._status.reopens + (1 if reopened else 0),
            )
        )
        self._space.set()
        self._settled.set()
        opened.set()

    def _forget_unheard(self) -> None:
        played = self._played24()
        with self._cond:
            self._sw.clear()
            self._sw_frames = 0
            self._dev_written = 0
            self._base24 = played
            self._in24 = 0
        self._trim_history(played, drop_rest=True)

    def _on_missing(self, gen: int, message: str, was_open: bool) -> None:
        if gen != self._generation:
            return
        state = DeviceState.REOPENING if was_open or self._ever_opened else DeviceState.MISSING
        if self._status.state is not state or self._status.error != message:
            logger.warning("playback device %s %s: %s", self._config.device, state.value, message)
        # Whatever was queued is lost with the device: it counts as not heard.
        self._forget_unheard()
        with self._cond:
            self._pcm = None
            self._granted = None
        self._resampler = None
        self._set_status(replace(self._status, state=state, error=message, rate_hz=0, period_frames=0))
        self._space.set()
        self._settled.set()

    def _on_xrun(self, gen: int) -> None:
        if gen == self._generation:
            self._status = replace(self._status, xruns=self._status.xruns + 1)

    def _check_stall(self) -> None:
        assert self._loop is not None
        if self._stop.is_set():
            return
        busy = self._busy_since
        if self._status.state is DeviceState.OK and busy is not None and time.monotonic() - busy > self._stall_s:
            self._on_missing(self._generation, f"write stalled for {self._stall_s:.1f} s", True)
            self._spawn()
        self._watch = self._loop.call_later(self._stall_s / 2, self._check_stall)


# ---------------------------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One ALSA PCM as ``earshot devices`` shows it."""

    name: str
    description: str
    can_capture: bool
    can_play: bool
    capture_rates: tuple[int, ...]
    playback_rates: tuple[int, ...]


def _probe(name: str, kind: int) -> tuple[bool, tuple[int, ...]]:
    try:
        pcm = alsaaudio.PCM(kind, alsaaudio.PCM_NONBLOCK, device=name)
    except alsaaudio.ALSAAudioError:
        return False, ()
    try:
        rates = pcm.getrates()
        if isinstance(rates, tuple) and len(rates) == 2 and isinstance(rates[0], int):
            lo, hi = rates
            found = tuple(r for r in _PROBE_RATES if lo <= r <= hi)
        elif isinstance(rates, (list, tuple)):
            found = tuple(int(r) for r in rates)
        else:
            found = (int(rates),)
    except (alsaaudio.ALSAAudioError, ValueError, TypeError):
        found = ()
    finally:
        pcm.close()
    return True, found


def list_devices() -> list[DeviceInfo]:
    """Every PCM alsa-lib knows (hints), with whether it opens for capture/playback and its rates.

    Devices busy or absent show as unable to capture/play; nothing here raises on a bad device.
    """
    names: dict[str, str] = {}
    for kind in (alsaaudio.PCM_CAPTURE, alsaaudio.PCM_PLAYBACK):
        with contextlib.suppress(alsaaudio.ALSAAudioError):
            for name in alsaaudio.pcms(kind):
                names.setdefault(name, "")
    with contextlib.suppress(alsaaudio.ALSAAudioError, AttributeError):
        for card_index in alsaaudio.card_indexes():
            long_name = alsaaudio.card_name(card_index)[1]
            for key in names:
                if f"CARD={alsaaudio.card_name(card_index)[0]}" in key:
                    names[key] = long_name
    out = []
    for name, desc in names.items():
        can_capture, capture_rates = _probe(name, alsaaudio.PCM_CAPTURE)
        can_play, playback_rates = _probe(name, alsaaudio.PCM_PLAYBACK)
        out.append(DeviceInfo(name, desc, can_capture, can_play, capture_rates, playback_rates))
    return out
