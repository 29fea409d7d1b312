"""A simulated acoustic echo path: loudspeaker distortion, a room response, a delay and a gain.

Pure numpy. The file backend mixes :meth:`EchoPath.process` of what it plays into what it captures, so
tests and benchmarks meet the echo a device in a room has, not a clean delayed copy of the reference
that a linear filter removes exactly:

- the loudspeaker soft-clips (``tanh``, ``drive_db`` of overdrive at full scale): loud syllables come
  back with harmonics no linear canceller can predict;
- the room adds early reflections and a diffuse tail decaying by 60 dB over ``rt60_ms``;
- the whole path is ``delay_ms`` late and ``gain_db`` down (the direct path's level).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["EchoPath", "room_response"]

# Early reflections: (delay after the direct path in ms, amplitude relative to it). A small room with a
# table and a wall within a metre or two of the device.
_REFLECTIONS = ((3.1, 0.45), (7.4, -0.3), (12.9, 0.22), (21.5, -0.15))
_TAIL_START_MS = 5.0
_TAIL_LEVEL = 0.03  # the diffuse tail's amplitude at its start, relative to the direct path (1.7 dB of energy in all)


def room_response(rate_hz: int, rt60_ms: float, *, seed: int = 0) -> NDArray[np.float64]:
    """A synthetic room impulse response: direct path (1.0) first, reflections, a decaying diffuse tail.

    Args:
        rate_hz: sample rate.
        rt60_ms: time for the tail to decay by 60 dB; 0 gives the direct path alone.
        seed: the tail's noise seed (the same seed gives the same room).

    Returns:
        The response, ``round(rt60_ms * rate_hz / 1000)`` samples long at least; its first sample is 1.
    """
    if rt60_ms <= 0:
        return np.ones(1)
    n = max(1, round(rt60_ms * rate_hz / 1000))
    response = np.zeros(n)
    response[0] = 1.0
    for delay_ms, amplitude in _REFLECTIONS:
        i = round(delay_ms * rate_hz / 1000)
        if i < n:
            response[i] += amplitude
    start = min(n, round(_TAIL_START_MS * rate_hz / 1000))
    t = np.arange(n - start) / rate_hz
    decay = np.exp(-t * math.log(1000.0) / (rt60_ms / 1000.0))  # -60 dB at rt60
    rng = np.random.default_rng(seed)
    response[start:] += _TAIL_LEVEL * rng.standard_normal(n - start) * decay
    return response


class EchoPath:
    """Streams what the speaker plays through a loudspeaker, a room and a delay to the microphone.

    Args:
        rate_hz: sample rate of what is played and captured.
        delay_ms: delay of the direct path.
        gain_db: level of the direct path relative to what is played.
        rt60_ms: the room's reverberation time (0: the direct path alone).
        drive_db: the loudspeaker's overdrive at full scale (0: linear).
        seed: the room's seed.
    """

    def __init__(
        self,
        *,
        rate_hz: int,
        delay_ms: float,
        gain_db: float,
        rt60_ms: float = 0.0,
        drive_db: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._response = room_response(rate_hz, rt60_ms, seed=seed) * 10.0 ** (gain_db / 20.0)
        self._drive = 10.0 ** (drive_db / 20.0) if drive_db > 0 else 0.0
        delay = round(delay_ms * rate_hz / 1000)
        # Played samples not yet fully heard: the delay line, then the response's memory.
        self._history = np.zeros(delay + self._response.size - 1)
        self._delay = delay

    def _speaker(self, pcm: NDArray[np.int16]) -> NDArray[np.float64]:
        x = pcm.astype(np.float64) / 32768.0
        if self._drive:
            x = np.tanh(self._drive * x) / self._drive
        out: NDArray[np.float64] = x * 32768.0
        return out

    def process(self, played: NDArray[np.int16]) -> NDArray[np.float64]:
        """The echo (float samples) reaching the microphone during the chunk in which ``played`` was played."""
        n = int(played.size)
        line = np.concatenate((self._history, self._speaker(played)))
        # The echo at capture sample k comes from played samples k - delay - j (j over the response).
        m = self._response.size
        seg = line[line.size - n - self._delay - m + 1 : line.size - self._delay]
        echo: NDArray[np.float64] = np.convolve(seg, self._response, mode="valid")
        self._history = line[n:]
        return echo
