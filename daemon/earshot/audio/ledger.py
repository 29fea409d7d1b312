"""The playback ledger: every sample handed to the speaker, by key, and how much of each was heard.

Pure: the played position comes in as an argument (``written − what the device still holds``), so the
same ledger counts for the ALSA sink and the file backend, and a barge-in's truncation is exact to the
sample. The playback events and the earcon key rule live here too, so that the conversation core can
read them without importing the playback task.

Keys starting with ``earcon:`` are cues: played like replies, but never counted as heard (they are
not part of any truncation).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "EARCON_PREFIX",
    "HeardLedger",
    "PlaybackEvent",
    "PlaybackFinished",
    "PlaybackStarted",
    "is_earcon",
]

EARCON_PREFIX = "earcon:"
KEEP_KEYS = 256
"""Heard counts kept after their reply is over (for ``heard_samples``); the oldest go first."""


def is_earcon(key: str) -> bool:
    """Whether ``key`` names a cue rather than a reply item."""
    return key.startswith(EARCON_PREFIX)


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The first samples of ``key`` were handed to the device."""

    key: str


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """A reply (everything enqueued before ``Playback.finish``) has really been played out.

    Attributes:
        heard: samples (24 kHz) heard per item key of that reply; earcons are not included.
    """

    heard: dict[str, int] = field(default_factory=dict)


PlaybackEvent = PlaybackStarted | PlaybackFinished


@dataclass(slots=True)
class _Span:
    """Samples handed to the device: device positions ``start`` to ``start + len(pcm)``."""

    start: int
    key: str | None  # None: a barge-in fade, already counted
    pcm: NDArray[np.int16]

    @property
    def end(self) -> int:
        return self.start + int(self.pcm.size)


class HeardLedger:
    """What was handed to the device and what of it was heard. See the module docstring.

    Positions are 24 kHz samples on the device's timeline: ``written`` is one past the last sample
    handed over, and the played position is what the caller computes from it (:meth:`played`).
    """

    def __init__(self, keep_keys: int = KEEP_KEYS) -> None:
        self._keep_keys = keep_keys
        self._spans: deque[_Span] = deque()  # handed over, not yet fully heard
        self.written = 0
        self._accounted = 0  # position up to which the heard counts are up to date
        self._heard: dict[str, int] = {}
        self._handed: dict[str, int] = {}
        self._started: set[str] = set()

    def played(self, held_by_device: int) -> int:
        """The played position, given the samples the device (and any queue in front of it) still holds."""
        return max(self._accounted, self.written - held_by_device)

    def expect(self, key: str) -> None:
        """``key`` is a reply item about to be played: it is reported (heard 0) even if never handed over."""
        if not is_earcon(key):
            self._heard.setdefault(key, 0)
            self._handed.setdefault(key, 0)

    def hand(self, key: str | None, pcm: NDArray[np.int16]) -> bool:
        """``pcm`` of ``key`` goes to the device now (``None``: a fade, counted already). True on its first samples."""
        self._spans.append(_Span(self.written, key, pcm))
        self.written += int(pcm.size)
        if key is None:
            return False
        if not is_earcon(key):
            self._handed[key] = self._handed.get(key, 0) + int(pcm.size)
        if key in self._started:
            return False
        self._started.add(key)
        return True

    def account(self, played: int) -> None:
        """Count as heard everything before ``played``."""
        while self._spans and self._accounted < played:
            span = self._spans[0]
            upto = min(played, span.end)
            if span.key is not None and not is_earcon(span.key):
                self._heard[span.key] = self._heard.get(span.key, 0) + (upto - max(self._accounted, span.start))
            self._accounted = upto
            if upto >= span.end:
                self._spans.popleft()
        self._accounted = max(self._accounted, played)

    def unheard(self, played: int, n: int) -> list[tuple[str, NDArray[np.int16]]]:
        """Up to ``n`` samples handed over that would be heard after ``played``, with their keys."""
        out: list[tuple[str, NDArray[np.int16]]] = []
        for span in self._spans:
            if n <= 0:
                break
            if span.end <= played or span.key is None:
                continue
            piece = span.pcm[max(0, played - span.start) :][:n]
            if piece.size:
                out.append((span.key, piece))
                n -= int(piece.size)
        return out

    def cut(self, played: int) -> None:
        """Everything after ``played`` was dropped from the device (a barge-in): the timeline ends there."""
        self.account(played)
        self._spans.clear()
        self.written = played
        self._accounted = played

    def add_heard(self, key: str, samples: int) -> None:
        """``samples`` more of ``key`` heard outside the timeline (a barge-in's fade of unplayed audio)."""
        if not is_earcon(key):
            self._heard[key] = self._heard.get(key, 0) + samples

    def heard(self, key: str) -> int:
        """Samples of ``key`` heard so far (as of the last :meth:`account`)."""
        return self._heard.get(key, 0)

    def handed(self, key: str) -> int:
        """Samples of ``key`` handed to the device so far."""
        return self._handed.get(key, 0)

    def trim(self, live: set[str]) -> None:
        """Forget the oldest keys past the bound, except ``live`` ones (still playing or being enqueued)."""
        live = live | {s.key for s in self._spans if s.key}
        while len(self._heard) > self._keep_keys:
            oldest = next((k for k in self._heard if k not in live), None)
            if oldest is None:
                break
            del self._heard[oldest]
            self._handed.pop(oldest, None)
            self._started.discard(oldest)
