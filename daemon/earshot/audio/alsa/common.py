"""What the ALSA source and sink share: opening a PCM, the device thread's lifecycle, status, stall watch.

Each device has one thread that only does blocking ``read``/``write``. A device that is missing or
fails is reopened with backoff (capped by ``audio.reopen_max_s``) without blocking the daemon; a
device whose read/write hangs (e.g. a sound server that died) is abandoned after ``stall_s`` and a
new thread (a new *generation*) opens it again: whatever the stalled thread reports later is
ignored, by generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import alsaaudio

from earshot.audio.backend import DeviceState, DeviceStatus
from earshot.errors import AudioDeviceError

__all__ = ["AlsaDevice", "Granted", "LoopGone", "backoff", "name_os_thread", "open_pcm", "post", "probe_device"]

logger = logging.getLogger("earshot.audio.alsa")

PERIODS = 4
"""Periods per device buffer unless the config asks for a longer buffer."""


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


class LoopGone(Exception):
    """The event loop closed under a device thread: the thread ends."""


def post(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    """Call ``callback(*args)`` on the loop from a device thread; :class:`LoopGone` when the loop closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError as exc:  # the loop is closed: nobody is listening any more
        raise LoopGone from exc


def backoff(max_s: float) -> Iterator[float]:
    """Reopen delays: 0.1 s, doubling up to ``max_s``."""
    delay = 0.1
    while True:
        yield delay
        delay = min(max_s, delay * 2)


def open_pcm(
    device: str, kind: int, rate: int, channels: int, period_frames: int, periods: int = PERIODS, *, block: bool = True
) -> Any:
    """Open an S16_LE PCM (blocking unless ``block`` is false); :class:`AudioDeviceError` says why not."""
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
class Granted:
    """What the device granted: rate, channels, period and buffer in frames."""

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
    pcm = open_pcm(device, kind, rate, channels, max(1, rate * period_ms // 1000), block=False)
    try:
        granted = granted_by(pcm)
    finally:
        pcm.close()
    return f"{granted.rate_hz} Hz, {granted.channels} ch, period {granted.period_frames} frames"


def granted_by(pcm: Any) -> Granted:
    """What an open PCM was granted."""
    info = pcm.info()
    return Granted(int(info["rate"]), int(info["channels"]), int(info["period_size"]), int(info["buffer_size"]))


_WATCH_MIN_S = 0.05
"""The stall watch never looks again sooner than this (a due time just past, or rounding)."""


class AlsaDevice:
    """The lifecycle a source and a sink share: one device thread per generation, status, stall watch.

    Subclasses implement :meth:`_run_thread` (the thread: open, read or write, nothing else),
    :meth:`_on_missing` (on the loop: the device is gone) and :meth:`_stall_reason`.
    """

    kind = "device"
    """``capture`` or ``playback``: the threads' names and the log's wording."""

    def __init__(self, device: str, *, reopen_max_s: float, stall_s: float) -> None:
        self._device = device
        self._reopen_max_s = reopen_max_s
        self._stall_s = stall_s
        self._status = DeviceStatus(device, DeviceState.CLOSED)  # not opened yet
        self._generation = 0
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ever_opened = False
        self._watch: asyncio.TimerHandle | None = None
        self._thread_obj: threading.Thread | None = None
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

    def start(self) -> None:
        """Start the device thread; must be called from the event loop (the first use does it)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._starting()
        self._spawn()
        self._watch = self._loop.call_later(self._stall_s / 2, self._check_stall)

    def _stall_due(self, now: float) -> float:
        """When (monotonic) the stall watch should look next; by default half a stall from ``now``.

        A subclass that knows when its device could first count as stalled (the last audio plus the
        limit) says so: the watch then wakes the loop once per stall instead of twice, and on time.
        """
        return now + self._stall_s / 2

    def close(self, timeout_s: float = 0.5) -> None:
        """Stop the thread, which closes the PCM when its blocking call returns (waited for up to ``timeout_s``)."""
        self._stop.set()
        self._generation += 1
        self._wake_thread()
        if self._watch is not None:
            self._watch.cancel()
        if self._thread_obj is not None:
            self._thread_obj.join(timeout_s)
        self._status = replace(self._status, state=DeviceState.CLOSED)

    # -------------------------------------------------------------- for the subclasses

    def _starting(self) -> None:
        """On the loop, just before the first thread starts."""

    def _wake_thread(self) -> None:
        """Wake a thread waiting for work (closing)."""

    def _run_thread(self, gen: int) -> None:
        raise NotImplementedError

    def _on_missing(self, gen: int, message: str, was_open: bool) -> None:
        raise NotImplementedError

    def _stall_reason(self) -> str | None:
        """Why the open device counts as lost now (its thread hangs), or None."""
        raise NotImplementedError

    def _missing_status(self, message: str, was_open: bool) -> DeviceStatus:
        """The status of a device that is gone (logged when it changes): reopening once it ever worked."""
        state = DeviceState.REOPENING if was_open or self._ever_opened else DeviceState.MISSING
        if self._status.state is not state or self._status.error != message:
            logger.warning("%s device %s %s: %s", self.kind, self._device, state.value, message)
        return replace(self._status, state=state, error=message, rate_hz=0, period_frames=0)

    def _open_status(self, granted: Granted, *, reopened: bool) -> DeviceStatus:
        """The status of a device just opened (a reopen counted when it had worked before)."""
        return replace(
            self._status,
            state=DeviceState.OK,
            error=None,
            rate_hz=granted.rate_hz,
            period_frames=granted.period_frames,
            reopens=self._status.reopens + (1 if reopened else 0),
        )

    # -------------------------------------------------------------- threads and the watch

    def _spawn(self) -> None:
        self._generation += 1
        gen = self._generation
        self._thread_obj = threading.Thread(
            target=self._thread, args=(gen,), name=f"earshot-{self.kind}-{gen}", daemon=True
        )
        self._thread_obj.start()

    def _thread(self, gen: int) -> None:
        name_os_thread(f"earshot-{self.kind}")
        with contextlib.suppress(LoopGone):
            self._run_thread(gen)

    def _check_stall(self) -> None:
        assert self._loop is not None
        if self._stop.is_set():
            return
        reason = self._stall_reason() if self._status.state is DeviceState.OK else None
        if reason is not None:
            self._on_missing(self._generation, reason, True)
            self._spawn()  # the stalled thread sees a new generation when (if) its call returns
        now = time.monotonic()
        self._watch = self._loop.call_later(max(_WATCH_MIN_S, self._stall_due(now) - now), self._check_stall)
