"""The echo reference FIFO: what the speaker played, waiting for the capture chunk it pairs with.

A ring of int16 with a read index and a length: no allocation per chunk, a byte bound that drops the
oldest samples (capture stalled while playing: the newest audio is what will echo next), and the two
moves the canceller's alignment needs (take samples back from the front, put samples back in front).
Pure: no I/O, no threads.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["ReferenceFifo"]


class ReferenceFifo:
    """A bounded FIFO of int16 samples.

    Args:
        capacity: samples it holds at most (its byte bound is twice that).
    """

    def __init__(self, capacity: int) -> None:
        self._ring = np.zeros(max(1, capacity), dtype=np.int16)
        self._read = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def push(self, pcm: NDArray[np.int16]) -> int:
        """Append ``pcm``; return how many of the oldest samples were dropped to make room."""
        cap = self._ring.size
        dropped = 0
        if pcm.size >= cap:
            dropped = self._len + pcm.size - cap
            pcm = pcm[-cap:]
            self._read = 0
            self._len = 0
        overflow = self._len + pcm.size - cap
        if overflow > 0:
            dropped += overflow
            self._read = (self._read + overflow) % cap
            self._len -= overflow
        write = (self._read + self._len) % cap
        first = min(pcm.size, cap - write)
        self._ring[write : write + first] = pcm[:first]
        self._ring[: pcm.size - first] = pcm[first:]
        self._len += pcm.size
        return dropped

    def read(self, out: NDArray[np.int16], count: int) -> int:
        """Move up to ``count`` samples from the front into ``out``; return how many."""
        take = min(count, self._len)
        cap = self._ring.size
        first = min(take, cap - self._read)
        out[:first] = self._ring[self._read : self._read + first]
        out[first:take] = self._ring[: take - first]
        self._read = (self._read + take) % cap
        self._len -= take
        return take

    def skip(self, count: int) -> int:
        """Drop up to ``count`` samples from the front; return how many."""
        take = min(count, self._len)
        self._read = (self._read + take) % self._ring.size
        self._len -= take
        return take

    def unread(self, pcm: NDArray[np.int16]) -> None:
        """Put ``pcm`` back in front of the queue (the newest of them win if it is full)."""
        cap = self._ring.size
        pcm = pcm[-max(0, cap - self._len) :] if pcm.size else pcm
        if not pcm.size:
            return
        self._read = (self._read - pcm.size) % cap
        first = min(pcm.size, cap - self._read)
        self._ring[self._read : self._read + first] = pcm[:first]
        self._ring[: pcm.size - first] = pcm[first:]
        self._len += pcm.size

    def clear(self) -> None:
        """Forget everything queued."""
        self._read = 0
        self._len = 0
