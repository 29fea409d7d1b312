"""Energy-based server VAD for the emulator (pure: samples in, events out, positions in samples).

``threshold`` (0..1, the GA ``server_vad`` field) maps to an energy level: 0 → -55 dBFS, 0.5 → -35 dBFS,
1 → -15 dBFS. Speech starts after 30 ms of frames above that level; ``audio_start_ms`` is the onset minus
``prefix_padding_ms`` (never before 0). Speech stops after ``silence_duration_ms`` below it;
``audio_end_ms`` is the end of the last loud frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

_START_FRAMES = 3


@dataclass(frozen=True, slots=True)
class VadStarted:
    """Speech started; ``audio_start_ms`` includes the prefix padding."""

    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class VadStopped:
    """Speech stopped at ``audio_end_ms`` (end of the last loud frame)."""

    audio_end_ms: int


VadEvent = VadStarted | VadStopped


def threshold_dbfs(threshold: float) -> float:
    """The energy level a GA ``threshold`` stands for."""
    return -55.0 + 40.0 * min(1.0, max(0.0, threshold))


class EnergyVad:
    """Frame-energy VAD with onset and hangover hysteresis.

    Args:
        rate_hz: sample rate of what :meth:`process` receives.
        threshold: GA ``threshold`` (0..1).
        prefix_padding_ms: audio before the onset included in ``audio_start_ms``.
        silence_duration_ms: silence that ends speech.
    """

    def __init__(self, rate_hz: int, *, threshold: float, prefix_padding_ms: int, silence_duration_ms: int) -> None:
        self.rate_hz = rate_hz
        self.level_dbfs = threshold_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self._frame = rate_hz // 100
        self._pending = np.zeros(0, dtype=np.int16)
        self._position = 0  # samples consumed into frames
        self._loud_run = 0
        self._speaking = False
        self._last_loud_end = 0
        self._onset = 0

    @property
    def speaking(self) -> bool:
        """Whether speech is in progress."""
        return self._speaking

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.rate_hz

    def process(self, pcm: NDArray[np.int16]) -> list[VadEvent]:
        """Feed the next samples (contiguous with the previous call); returns the events they cause."""
        events: list[VadEvent] = []
        data = np.concatenate([self._pending, pcm]) if self._pending.size else pcm
        usable = data.size - data.size % self._frame
        frames = data[:usable].astype(np.float64).reshape(-1, self._frame) / 32768.0
        self._pending = data[usable:].copy()
        if frames.size:
            rms = np.sqrt(np.mean(frames * frames, axis=1))
            dbfs = 20.0 * np.log10(np.maximum(rms, 1e-9))
            for level in dbfs:
                start = self._position
                self._position += self._frame
                if level >= self.level_dbfs:
                    self._loud_run += 1
                    self._last_loud_end = self._position
                    if not self._speaking and self._loud_run >= _START_FRAMES:
                        self._speaking = True
                        self._onset = start - (_START_FRAMES - 1) * self._frame
                        events.append(VadStarted(max(0, self._ms(self._onset) - self.prefix_padding_ms)))
                else:
                    self._loud_run = 0
                    if self._speaking and self._ms(self._position - self._last_loud_end) >= self.silence_duration_ms:
                        self._speaking = False
                        events.append(VadStopped(self._ms(self._last_loud_end)))
        return events

    def reset(self, position: int) -> None:
        """Forget any speech in progress (buffer cleared or committed); ``position`` is the sample count so far."""
        self._pending = np.zeros(0, dtype=np.int16)
        self._position = position
        self._loud_run = 0
        self._speaking = False
