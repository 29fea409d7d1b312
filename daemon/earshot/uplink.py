"""The rule that the server never hears the device: what of the capture may go upstream.

Everything the device plays is echo: a reply, an earcon, a tool sound, an announcement. While any of
it can be in the microphone (the echo canceller's reference was loud within its filter span, which
is the longest echo path it models: the measured tail), the capture is *held*: nothing of it goes
upstream yet. How the held stretch is decided:

- the stretch ends with nobody talking over it: it goes upstream as digital silence, so the server
  keeps its timeline but never hears the device (no false server turn, no reply cancelled by the
  device's own end-of-turn earcon);
- local detection on the echo-cancelled signal (the barge-in detector) confirms the user talking over
  the device's sound: from ``lead_samples`` before the speech onset on, the cleaned signal goes up.

The same holds for the local VAD's events: a speech start inside a held stretch is held with it, and
released when the user is confirmed, or when the VAD still hears speech ``confirm_samples`` after the
stretch's end (longer than the VAD's own hangover, so a start the device's echo caused has ended by
then); a speech end inside the stretch or that window takes the held start away. So the device's own
sound never starts a turn locally either: a VAD that fired on the reply's residual and was still
"speaking" in its hangover when the reply ended once turned FOLLOW_UP into a turn of nobody's.

One case is the user's already: a stretch that begins while the user's own speech is in progress
(the VAD's start was released before the device sounded, and the user's turn is open: the engagement
earcon over the first words in vad mode, or a question that follows the wake word without a pause).
The device's sound cannot have started that speech, so the stretch is the user's while the VAD keeps
hearing it: up to where the VAD's speech ends inside the stretch (the rest is held as above), or all
of it when the VAD still hears speech ``confirm_samples`` after the stretch (it is kept undecided until
then). Silencing it lost the question's first half second (a flite question's first word, matched
at 0.68 against what the server received).

This holds in every phase and duplex mode; while the device speaks a reply the uplink is stopped
anyway (:mod:`earshot.engage`) and a barge-in releases it through :meth:`UplinkGuard.user_speech`.

Pure: positions (16 kHz capture samples) in, decisions out.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from numpy.typing import NDArray

__all__ = ["UplinkGuard"]

_MAX_SPANS = 64
"""Silenced spans remembered (the oldest are forgotten first): a byte bound, far above what the ring holds."""


class UplinkGuard:
    """Holds and silences the capture the device's own sound can be in. See the module docstring.

    Usage per capture chunk: :meth:`chunk` first (with whether the device's sound can be in it),
    then :meth:`speech_started` / :meth:`speech_ended` for the local VAD's events,
    :meth:`user_speech` when local detection confirms the user over the device's sound, and
    :meth:`released` for the speech starts that became the user's. The uplink sends only up to
    :meth:`decided_upto`, through :meth:`apply`.

    Args:
        lead_samples: audio let through before a confirmed speech onset (its pre-roll).
        keep_samples: how far back silenced spans are remembered (the uplink's ring).
        confirm_samples: how long after a stretch's end the VAD must still hear speech for a start held
            in it to be the user's (the VAD's end hangover plus its start time).
    """

    def __init__(self, *, lead_samples: int, keep_samples: int, confirm_samples: int = 0) -> None:
        self.lead_samples = lead_samples
        self.keep_samples = keep_samples
        self.confirm_samples = confirm_samples
        self._pending: tuple[int, int] | None = None  # (held start, position it is confirmed at)
        self._end = 0  # capture position one past the last chunk seen
        self._held_from: int | None = None  # start of the stretch being held (undecided)
        self._open = False  # the current stretch was opened by the user's confirmed speech
        self._spans: deque[tuple[int, int]] = deque(maxlen=_MAX_SPANS)  # silenced [start, end)
        self._held_start: int | None = None  # a VAD speech start inside the held stretch
        self._vad_speaking = False
        self._into = False  # the held stretch began while the user's released speech was in progress
        self._deferred: tuple[int, int, int] | None = None  # (start, end, confirmed at) of such a stretch
        self._released: list[int] = []
        self.silenced_samples = 0
        """Capture samples replaced by silence so far (statistics)."""

    # ------------------------------------------------------------------ inputs

    @property
    def audible(self) -> bool:
        """The last chunk could hold the device's own sound."""
        return self._held_from is not None or self._open

    @property
    def user_speaking(self) -> bool:
        """The VAD hears speech that was let through as the user's (not a start held in the device's sound)."""
        return self._vad_speaking and self._held_start is None and self._pending is None

    @property
    def holding(self) -> bool:
        """A stretch is held, undecided."""
        return self._held_from is not None

    @property
    def users_stretch(self) -> bool:
        """The held stretch began while the user's released speech was in progress (theirs while the VAD hears it)."""
        return self._held_from is not None and self._into

    @property
    def settled(self) -> bool:
        """Nothing held, open, pending or deferred: a run of chunks with no sound changes nothing but the end."""
        return self._held_from is None and not self._open and self._pending is None and self._deferred is None

    def chunk(self, position: int, samples: int, *, audible: bool, user_turn: bool = False) -> None:
        """One capture chunk ``[position, position + samples)``: can the device's sound be in it?

        ``user_turn``: the user's turn is open (connecting or listening), so speech in progress when
        the device starts to sound is the user's going on (see the module docstring).
        """
        end = position + samples
        if audible:
            if self._held_from is None and not self._open:
                if self._deferred is not None:
                    # The device sounds again before the stretch the user talked into was decided:
                    # one stretch, still theirs while the VAD hears them.
                    self._held_from = self._deferred[0]
                    self._deferred = None
                    self._into = True
                else:
                    self._held_from = position
                    self._into = user_turn and self._vad_speaking and self._held_start is None and self._pending is None
                if self._pending is not None:
                    # The device sounds again before the start was confirmed: it is held again.
                    self._held_start = self._pending[0]
                    self._pending = None
        elif self._held_from is not None or self._open:
            # The stretch is over (its echo tail too): what was not let through is silence.
            if self._held_from is not None:
                if self._into and self._vad_speaking:
                    # The user talked into it and the VAD still hears them: theirs, if it goes on.
                    self._deferred = (self._held_from, position, position + self.confirm_samples)
                else:
                    self._silence(self._held_from, position)
                self._held_from = None
                if self._held_start is not None and self._vad_speaking:
                    # The VAD still hears speech: the user's, if it goes on past the VAD's hangover.
                    self._pending = (self._held_start, position + self.confirm_samples)
                self._held_start = None
            self._open = False
            self._into = False
        if self._pending is not None and not audible and end >= self._pending[1]:
            self._released.append(self._pending[0])
            self._pending = None
        if self._deferred is not None and not audible and end >= self._deferred[2]:
            self._deferred = None  # the VAD heard the user past its hangover: the stretch was theirs
        self._end = end

    def user_speech(self, onset: int) -> None:
        """Local detection confirmed the user talking over the device's sound, from ``onset``."""
        start = max(0, onset - self.lead_samples)
        if self._held_from is not None:
            if start > self._held_from and not self._into:  # a stretch the user talked into is theirs
                self._silence(self._held_from, start)
            self._held_from = None
            self._open = True
            self._into = False
            self._held_start = None
            self._pending = None
            self._released.append(onset)

    def speech_started(self, position: int) -> bool:
        """The local VAD's speech start; False when it is held (inside the device's sound)."""
        self._vad_speaking = True
        if self._held_from is not None:
            if self._held_start is None:
                self._held_start = position
            return False
        return True

    def speech_ended(self, position: int) -> bool:
        """The local VAD's speech end; False when it ends a held start (both are dropped)."""
        self._vad_speaking = False
        if self._into and self._held_from is not None:
            # The user's speech ended inside the stretch they talked into: theirs up to its end, the
            # rest of the stretch is held as any other.
            self._held_from = max(self._held_from, min(position, self._end))
            self._into = False
            return True
        if self._deferred is not None:
            # It ended before the VAD's hangover after the stretch was over. Speech frames after the
            # stretch were the user's (no echo can be there), so all of it was theirs; an end inside
            # the stretch makes it theirs up to that end, as above.
            start, stretch_end, _ = self._deferred
            self._deferred = None
            if position < stretch_end:
                self._silence(max(start, position), stretch_end)
            return True
        if self._held_start is not None or self._pending is not None:
            self._held_start = None
            self._pending = None
            return False
        return self._held_from is None or self._open

    # ------------------------------------------------------------------ outputs

    def released(self) -> list[int]:
        """Return and clear the speech starts released as the user's (onset positions)."""
        out, self._released = self._released, []
        return out

    def decided_upto(self) -> int:
        """Capture position up to which the uplink may send: the start of a held stretch, else all seen."""
        if self._held_from is not None:
            return self._held_from
        return self._end if self._deferred is None else self._deferred[0]

    def apply(self, pcm: NDArray[np.int16], start: int) -> NDArray[np.int16]:
        """``pcm`` (capture from ``start``, all decided) with the silenced spans zeroed (a copy if changed)."""
        end = start + int(pcm.size)
        out = pcm
        for s, e in self._spans:
            if e <= start or s >= end:
                continue
            if out is pcm:
                out = pcm.copy()
            out[max(s, start) - start : min(e, end) - start] = 0
        return out

    # ------------------------------------------------------------------ internals

    def _silence(self, start: int, end: int) -> None:
        if end <= start:
            return
        self.silenced_samples += end - start
        self._spans.append((start, end))
        horizon = self._end - self.keep_samples
        while self._spans and self._spans[0][1] <= horizon:
            self._spans.popleft()
