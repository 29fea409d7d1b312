"""The capture hand-over: microphone chunks to the conversation a period at a time, reference first.

:class:`CaptureFeed` is what the supervisor's capture task does with each chunk the source yields, as
one object the daemon, the tests and the bench's engaged figure share (issue 16: the bench drives the
product's objects, not a copy of them):

- at the start of each capture period (the source's backlog was empty before the chunk), the sink's
  echo reference goes to the canceller: once per period, not per 10 ms chunk, because the reference
  runs ahead of the device pointer by the device buffer and a slack, and each call asks the device
  where it is (a locked round trip through the pulse plugin's thread);
- and again before chunks go over whose reference the canceller does not hold yet, while something
  plays or the canceller still cancels the end of a sound: a loop that fell behind takes its backlog
  chunk after chunk with no period start in between, and a canceller left without reference for them
  passed their echo through uncancelled (found by the bench's engaged run on a busy loop: the FIFO
  empty for seconds of a reply, echo 1-2 dB under the microphone level, a false barge-in in half the
  runs). A sound that starts during such a catch-up counts too: the canceller is still bypassing then
  (found by the Pi tier inside one Pi Zero core: no reference at all 0.7 s into a reply);
- the chunks of one period go to the conversation together (one call while idle; the conversation
  splits them again when it must decide chunk by chunk), at most :data:`BURST_MAX_CHUNKS` at once;
- a gap in the positions (capture lost to an overrun or a reopened device) ends a run: the chunks on
  either side are never joined into one stretch.

No I/O and no event loop: the caller passes the time and the source's backlog.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from earshot.audio.backend import CAPTURE_CHUNK_SAMPLES

__all__ = ["BURST_MAX_CHUNKS", "CaptureFeed"]

BURST_MAX_CHUNKS = 25
"""At most this many capture chunks' worth (250 ms) go to the conversation in one call (a chunk the
source yields may hold several 10 ms frames: an idle period whole)."""


class _Conversation(Protocol):
    @property
    def echo(self) -> Any | None: ...

    @property
    def sounding(self) -> bool: ...

    def on_capture(self, pcm: NDArray[np.int16], position: int, now: float) -> None: ...


class _Reference(Protocol):
    def pop_reference(self) -> NDArray[np.int16]: ...


class CaptureFeed:
    """Hands capture to ``conversation`` (see the module docstring).

    Args:
        conversation: takes ``on_capture(pcm, position, now)``; its ``echo`` (or None) takes the reference.
        sink: the speaker, whose ``pop_reference()`` is what it played since the last call.
    """

    def __init__(self, conversation: _Conversation, sink: _Reference) -> None:
        self._conv = conversation
        self._sink = sink
        self._burst: list[NDArray[np.int16]] = []
        self._burst_samples = 0
        self._position = 0
        self._end = 0
        self._period_start = True

    def chunk(self, pcm: NDArray[np.int16], position: int, now: float, *, backlog: int) -> None:
        """One chunk at ``position``; ``backlog``: chunks the source holds after it (0: the period ends here)."""
        if self._period_start:
            self._take_reference()
        if self._burst and position != self._end:
            self.flush(now)  # a gap (lost capture): not one stretch
        if not self._burst:
            self._position = position
        self._burst.append(pcm)
        self._burst_samples += len(pcm)
        self._end = position + len(pcm)
        self._period_start = backlog == 0
        if self._period_start or self._burst_samples >= BURST_MAX_CHUNKS * CAPTURE_CHUNK_SAMPLES:
            self.flush(now)

    def flush(self, now: float) -> None:
        """Hand over the chunks held (the input ended, or a gap)."""
        burst, self._burst = self._burst, []
        self._burst_samples = 0
        if burst:
            pcm = burst[0] if len(burst) == 1 else np.concatenate(burst)
            echo = self._conv.echo
            # While idle and silent the canceller bypasses and the device is closed: no call. But a
            # sound that starts while the loop is behind must reach the canceller before its echo
            # does, or the canceller stays in bypass and the echo goes through whole (one Pi core: a
            # reply's echo at -22 dBFS with no reference, taken for the user 0.7 s into the reply).
            if echo is not None and (self._conv.sounding or not echo.bypassing) and echo.reference_queued < len(pcm):
                self._take_reference()  # the reference of these chunks, if the speaker has played it by now
            self._conv.on_capture(pcm, self._position, now)

    def _take_reference(self) -> None:
        ref = self._sink.pop_reference()
        echo = self._conv.echo
        if echo is not None and len(ref):
            echo.add_reference(ref)
