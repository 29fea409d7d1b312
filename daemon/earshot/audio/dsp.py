"""Pure numpy signal helpers on mono or interleaved int16 audio.

Nothing here keeps state or reads a clock; every function takes arrays and returns new arrays.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SILENCE_DBFS",
    "Framer",
    "apply_gain_db",
    "downmix",
    "fade_out",
    "frames",
    "rms_dbfs",
    "to_float32",
    "to_int16",
    "upmix",
]

SILENCE_DBFS = -120.0
"""What :func:`rms_dbfs` returns for digital silence (instead of minus infinity)."""


def to_float32(pcm: NDArray[np.int16]) -> NDArray[np.float32]:
    """Convert int16 samples to float32 in [-1, 1)."""
    return (np.asarray(pcm, dtype=np.int16).astype(np.float32)) / np.float32(32768.0)


def to_int16(samples: NDArray[np.floating] | NDArray[np.int16]) -> NDArray[np.int16]:
    """Convert float samples in [-1, 1] to int16, rounding and clipping (NaN becomes 0)."""
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        return arr.copy()
    # In place on one float32 temporary (the resampler's and canceller's blocks are float32): this runs
    # on every uplink batch, where the float64 copies and nan_to_num pass were measurable.
    scaled = np.multiply(arr, np.float32(32768.0), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768.0, 32767.0, out=scaled)
    scaled[np.isnan(scaled)] = 0.0
    out: NDArray[np.int16] = scaled.astype(np.int16)
    return out


def apply_gain_db(pcm: NDArray[np.int16], gain_db: float) -> NDArray[np.int16]:
    """Scale int16 samples by ``gain_db`` decibels, clipping at full scale."""
    if gain_db == 0.0:
        return np.asarray(pcm, dtype=np.int16).copy()
    if gain_db == -np.inf:
        return np.zeros(np.shape(pcm), dtype=np.int16)  # muted
    factor = 10.0 ** (gain_db / 20.0)
    scaled = np.asarray(pcm, dtype=np.int16).astype(np.float64) * factor
    out: NDArray[np.int16] = np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)
    return out


def rms_dbfs(pcm: NDArray[np.int16]) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS).

    Returns:
        The level, or :data:`SILENCE_DBFS` for an empty or all-zero block.
    """
    arr = np.asarray(pcm, dtype=np.int16)
    if arr.size == 0:
        return SILENCE_DBFS
    mean_sq = float(np.mean(np.square(arr.astype(np.float64))))
    if mean_sq <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * float(np.log10(mean_sq / (32768.0 * 32768.0))))


def percentile(values: NDArray[np.floating] | NDArray[np.integer], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly (``np.percentile``'s default).

    By partition, not ``np.percentile``: that one calls ``np.unique``, whose first call imports
    ``numpy.ma`` (1.5 MB of the daemon's RSS, once, in the middle of the first reply) to ask whether
    the array is masked.

    Raises:
        ValueError: ``values`` is empty or ``q`` outside [0, 100].
    """
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    if a.size == 0 or not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} of {a.size} values")
    pos = (a.size - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, a.size - 1)
    part = np.partition(a, (lo, hi))
    return float(part[lo] + (part[hi] - part[lo]) * (pos - lo))


def downmix(interleaved: NDArray[np.int16], channels: int, channel: int | None = None) -> NDArray[np.int16]:
    """Turn interleaved multi-channel int16 into mono.

    Args:
        interleaved: samples in frame order (``frame0ch0, frame0ch1, …``); a trailing partial frame is ignored.
        channels: channels per frame.
        channel: pick this channel (0-based); None averages all channels.

    Returns:
        Mono int16, one sample per frame.

    Raises:
        ValueError: ``channel`` is outside ``0..channels-1`` or ``channels`` < 1.
    """
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if channel is not None and not 0 <= channel < channels:
        raise ValueError(f"channel {channel} outside 0..{channels - 1}")
    arr = np.asarray(interleaved, dtype=np.int16)
    n_frames = arr.size // channels
    if channels == 1:
        return arr[:n_frames].copy()
    framed = arr[: n_frames * channels].reshape(n_frames, channels)
    if channel is not None:
        return framed[:, channel].copy()
    # Integer mean rounded to nearest: exact and free of float drift.
    total = framed.astype(np.int32).sum(axis=1)
    mono: NDArray[np.int16] = np.floor_divide(total * 2 + channels, 2 * channels).astype(np.int16)
    return mono


def upmix(mono: NDArray[np.int16], channels: int) -> NDArray[np.int16]:
    """Copy mono int16 to every channel of an interleaved buffer."""
    arr = np.asarray(mono, dtype=np.int16)
    if channels == 1:
        return arr.copy()
    return np.repeat(arr, channels)


def fade_out(pcm: NDArray[np.int16]) -> NDArray[np.int16]:
    """Apply a linear fade towards silence across the whole block (used for barge-in).

    The ramp runs from ``n/(n+1)`` down to ``1/(n+1)``: silence is the sample after the block.
    """
    arr = np.asarray(pcm, dtype=np.int16)
    if arr.size == 0:
        return arr.copy()
    ramp = np.linspace(1.0, 0.0, arr.size + 2, dtype=np.float64)[1:-1]
    return np.rint(arr.astype(np.float64) * ramp).astype(np.int16)


def frames(pcm: NDArray[np.int16], size: int) -> Iterator[NDArray[np.int16]]:
    """Yield consecutive whole frames of ``size`` samples; a trailing partial frame is not yielded."""
    if size < 1:
        raise ValueError(f"frame size must be >= 1, got {size}")
    arr = np.asarray(pcm, dtype=np.int16)
    for start in range(0, arr.size - size + 1, size):
        yield arr[start : start + size]


class Framer:
    """Cut a stream of arbitrary-length blocks into frames of exactly ``size`` samples.

    ``push`` returns the frames completed so far and keeps the remainder for the next call.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"frame size must be >= 1, got {size}")
        self.size = size
        self._rest: NDArray[np.int16] = np.zeros(0, dtype=np.int16)

    @property
    def pending(self) -> int:
        """Samples held back waiting for a whole frame."""
        return int(self._rest.size)

    def push(self, pcm: NDArray[np.int16]) -> list[NDArray[np.int16]]:
        """Add samples; return the whole frames now available, in order."""
        data = np.concatenate((self._rest, np.asarray(pcm, dtype=np.int16)))
        n = data.size // self.size
        out = [data[i * self.size : (i + 1) * self.size].copy() for i in range(n)]
        self._rest = data[n * self.size :].copy()
        return out

    def take(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        """Add samples; return the whole frames now available as one array (``push`` joined, no copies)."""
        data = np.concatenate((self._rest, np.asarray(pcm, dtype=np.int16)))
        n = data.size // self.size * self.size
        self._rest = data[n:].copy()
        return data[:n]

    def reset(self) -> None:
        """Forget the held-back remainder."""
        self._rest = np.zeros(0, dtype=np.int16)
