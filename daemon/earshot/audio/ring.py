"""A fixed-capacity ring of recent capture audio addressed by sample position (the pre-roll)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["AudioRing"]


class AudioRing:
    """Keep the last ``capacity_samples`` of a mono int16 stream, addressed by absolute sample position.

    Positions are those of :class:`~earshot.audio.backend.CaptureChunk`. A gap (a position beyond the
    current end) is filled with silence so that positions stay exact; a position before the end
    (overlap) overwrites nothing: the overlapping samples are skipped.

    Args:
        capacity_samples: samples kept.
    """

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity_samples}")
        self.capacity_samples = capacity_samples
        self._buf = np.zeros(capacity_samples, dtype=np.int16)
        self._end: int | None = None  # absolute position one past the newest sample
        self._first = 0  # position of the first sample ever appended

    @property
    def end_position(self) -> int | None:
        """Position one past the newest sample kept (None while empty)."""
        return self._end

    @property
    def start_position(self) -> int | None:
        """Position of the oldest sample kept (None while empty)."""
        if self._end is None:
            return None
        return max(self._first, self._end - self.capacity_samples)

    def append(self, pcm: NDArray[np.int16], position: int) -> None:
        """Add samples whose first sample is at ``position``."""
        arr = np.asarray(pcm, dtype=np.int16)
        if self._end is None:
            self._first = position
            self._end = position
        if position > self._end:
            self._write(np.zeros(min(position - self._end, self.capacity_samples), dtype=np.int16))
            self._end = position
        skip = self._end - position
        if skip >= arr.size:
            return
        self._write(arr[skip:])

    def _write(self, arr: NDArray[np.int16]) -> None:
        assert self._end is not None
        if arr.size >= self.capacity_samples:
            self._end += arr.size - self.capacity_samples
            arr = arr[-self.capacity_samples :]
        n = arr.size
        start = self._end % self.capacity_samples
        first = min(n, self.capacity_samples - start)
        self._buf[start : start + first] = arr[:first]
        self._buf[: n - first] = arr[first:]
        self._end += n

    def since(self, position: int) -> NDArray[np.int16]:
        """Samples from ``position`` up to the newest, clamped to what is still kept."""
        if self._end is None:
            return np.zeros(0, dtype=np.int16)
        start = max(position, self.start_position or 0)
        n = self._end - start
        if n <= 0:
            return np.zeros(0, dtype=np.int16)
        idx = (np.arange(start, self._end) % self.capacity_samples).astype(np.intp)
        return self._buf[idx].copy()

    def clear(self) -> None:
        """Forget everything."""
        self._end = None
