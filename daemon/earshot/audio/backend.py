"""The seams the app is built on: capture chunks, device status, the source and sink protocols.

Both backends implement them: :mod:`earshot.audio.alsa` (real devices) and
:mod:`earshot.audio.wavfile` (WAV in as the microphone, WAV out as the speaker, one clock).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "CAPTURE_CHUNK_SAMPLES",
    "CAPTURE_RATE_HZ",
    "PLAYBACK_RATE_HZ",
    "AudioSink",
    "AudioSource",
    "CaptureChunk",
    "DeviceState",
    "DeviceStatus",
]

CAPTURE_RATE_HZ = 16000
"""Rate of every :class:`CaptureChunk` and of the echo reference."""
CAPTURE_CHUNK_SAMPLES = 160
"""Samples per capture chunk (10 ms at 16 kHz)."""
PLAYBACK_RATE_HZ = 24000
"""Rate :meth:`AudioSink.write` takes."""


@dataclass(frozen=True, slots=True)
class CaptureChunk:
    """Microphone audio: 10 ms, or (an idle ALSA source's period) several whole 10 ms frames.

    Attributes:
        pcm: 160 samples (or a multiple of 160), 16 kHz mono int16.
        position: 16 kHz sample index of ``pcm[0]`` since the source opened; gaps (overruns, a lost
            device) advance it, so positions always measure real time.
    """

    pcm: NDArray[np.int16]
    position: int


class DeviceState(enum.Enum):
    """Where a device stands."""

    OK = "ok"
    MISSING = "missing"  # could not be opened (yet): retrying with backoff
    REOPENING = "reopening"  # was open, failed or stalled: retrying with backoff
    CLOSED = "closed"  # not opened yet, or closed on purpose


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A snapshot of one device for STATUS lines, metrics and ``earshot status``.

    Attributes:
        device: ALSA PCM name or file path.
        state: see :class:`DeviceState`.
        xruns: overruns/underruns reported by the device (-EPIPE) and recovered.
        overruns: capture chunks dropped because the consumer fell behind (capture queue full).
        reopens: times the device was reopened after a failure.
        error: the last error message, if any.
        rate_hz: the rate the device granted (0 while not open).
        period_frames: the period the device granted (0 while not open).
    """

    device: str
    state: DeviceState
    xruns: int = 0
    overruns: int = 0
    reopens: int = 0
    error: str | None = None
    rate_hz: int = 0
    period_frames: int = 0

    def describe(self) -> str:
        """One human line, e.g. ``mic hw:1,0 missing (No such device)``."""
        text = f"{self.device} {self.state.value}"
        if self.state is not DeviceState.OK and self.error:
            text += f" ({self.error})"
        return text


@runtime_checkable
class AudioSource(Protocol):
    """The microphone."""

    def chunks(self) -> AsyncIterator[CaptureChunk]:
        """Yield chunks as they are captured: 10 ms each (an idle ALSA source: whole periods of them).

        ALSA: never ends on a device fault (the device is reopened with backoff). File backend: ends
        when the input WAV ends.
        """
        ...

    @property
    def status(self) -> DeviceStatus:
        """The device's current status."""
        ...

    @property
    def backlog(self) -> int:
        """Chunks captured and ready to be yielded at once (0: the next one is still to come).

        A period of several chunks arrives as one burst: the consumer does per-period work (taking the
        speaker's echo reference) on the first chunk of a burst only.
        """
        ...

    def set_low_latency(self, low: bool) -> None:
        """Short capture periods (engaged: latency matters) or long ones (idle: fewer wake-ups).

        Chunks stay 10 ms whatever the period; a long period delivers several at once.
        """
        ...


@runtime_checkable
class AudioSink(Protocol):
    """The loudspeaker: takes 24 kHz mono int16 and converts to the device's rate and channels."""

    rate_hz: int
    write_samples: int
    """How many samples a write should carry: a device buffer alone takes 10 ms so it never runs dry; a
    sink with a software queue ahead of its device takes longer ones (fewer loop turns per second)."""

    async def write(self, pcm: NDArray[np.int16]) -> None:
        """Queue samples for playing; waits (back-pressure) while the device buffer is full."""
        ...

    def queued_samples(self) -> int:
        """Samples (24 kHz) written but not yet heard."""
        ...

    def drop(self) -> None:
        """Discard everything not yet heard, now."""
        ...

    async def drain(self) -> None:
        """Return when everything written has been heard."""
        ...

    def pop_reference(self) -> NDArray[np.int16]:
        """16 kHz mono: what the speaker played since the last call, in play order (the echo reference)."""
        ...

    @property
    def status(self) -> DeviceStatus:
        """The device's current status."""
        ...
