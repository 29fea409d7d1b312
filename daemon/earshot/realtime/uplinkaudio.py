"""The uplink ledger: every sample a session was given for the server, and the turn not yet answered.

Samples are *pending* until the session is ready (and a replayed turn is decided), bounded by the
offline buffer (the oldest go first); then *streamed* in ``append_ms`` batches. Every streamed sample
has a position on the server's input timeline (``input_samples`` so far), the same timeline the
server's ``audio_start_ms``/``audio_end_ms`` count on. The ledger keeps the most recent turn's worth
of streamed audio (:data:`MAX_REPLAY_S` or the offline buffer, the longer) so that a turn cut by a
lost connection can be sent again: :meth:`unsettled_audio` starts where the last answered turn ended.

Pure: no clock, no I/O; the session turns batches into ``input_audio_buffer.append`` messages.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_REPLAY_S", "UplinkAudio"]

logger = logging.getLogger("earshot.realtime.session")

MAX_REPLAY_S = 60.0
"""A user turn longer than this is replayed from its last 60 s."""

_NOTHING: tuple[NDArray[np.int16], ...] = ()


@dataclass(slots=True)
class _Chunk:
    start: int
    pcm: NDArray[np.int16] = field(repr=False)


class UplinkAudio:
    """Pending, batched and recently streamed input audio of one session (input wire rate).

    Args:
        batch_samples: samples per ``input_audio_buffer.append`` message.
        max_buffer_samples: the offline bound on pending audio.
        max_turn_samples: the longest turn kept for replay.
        replay: a turn cut by the previous connection, queued first and held until :meth:`decide_replay`.
        replay_offline_samples: how much of ``replay`` arrived while disconnected (counts against the bound).
    """

    def __init__(
        self,
        *,
        batch_samples: int,
        max_buffer_samples: int,
        max_turn_samples: int,
        replay: NDArray[np.int16] | None = None,
        replay_offline_samples: int = 0,
    ) -> None:
        self._batch_samples = batch_samples
        self._max_buffer_samples = max_buffer_samples
        self._max_turn_samples = max_turn_samples
        self.dropped_samples = 0
        """Pending samples dropped at the offline bound."""

        self._pending: deque[NDArray[np.int16]] = deque()
        self._pending_samples = 0
        self._batch: list[NDArray[np.int16]] = []
        self._batch_len = 0
        self.input_samples = 0
        """Every sample streamed, in order: the server's input audio timeline."""
        self.uncommitted_samples = 0
        """Samples streamed since the last commit."""
        self._turn_chunks: deque[_Chunk] = deque()
        self._turn_chunk_samples = 0
        self._settled_sample = 0
        self._speech_start_sample: int | None = None
        self._speech_end_sample: int | None = None
        self._commit_sample = 0
        self._response_turn_end = 0
        self._replay_allowance = 0
        self.replay_undecided = False
        """A replayed turn waits for :meth:`decide_replay` (and every sample queued behind it)."""
        self._replay_samples = 0  # the replay at the front of _pending, until decided
        if replay is not None and replay.size:
            replay = np.asarray(replay, dtype=np.int16).reshape(-1)[-max_turn_samples:]
            # The part of the replay a server already heard is not offline audio: only what arrived
            # while disconnected (``replay_offline_samples`` of it, and what comes now) counts
            # against the offline bound.
            self._replay_allowance = max(0, replay.size - replay_offline_samples)
            self._max_buffer_samples += self._replay_allowance
            self.queue(replay)
            self.replay_undecided = True
            self._replay_samples = replay.size

    # ----------------------------------------------------------------------------------- pending

    def queue(self, pcm: NDArray[np.int16]) -> None:
        """Hold ``pcm`` until the session is ready; past the offline bound the oldest is dropped."""
        self._pending.append(pcm)
        self._pending_samples += pcm.size
        while self._pending_samples > self._max_buffer_samples and len(self._pending) > 1:
            dropped = self._pending.popleft()
            if self._replay_samples:
                self._replay_samples = 0  # the replay was the oldest: it went first
            self._pending_samples -= dropped.size
            self.dropped_samples += dropped.size
            logger.warning("audio waiting for the session exceeds the bound: %d samples dropped", dropped.size)

    def offline_samples(self, ready: bool) -> int:
        """Pending samples no server heard: audio that arrived while disconnected."""
        if ready and not self.replay_undecided:
            return 0
        return max(0, self._pending_samples - self._replay_allowance)

    def decide_replay(self, replay: bool) -> int:
        """Keep (``replay``) or forget the previous connection's turn; returns the samples kept."""
        if not self.replay_undecided:
            return 0
        self.replay_undecided = False
        samples, self._replay_samples = self._replay_samples, 0
        if not replay and samples:
            self._pending.popleft()
            self._pending_samples -= samples
            self._max_buffer_samples -= self._replay_allowance
            self._replay_allowance = 0
            samples = 0
        return samples

    def stream_pending(self) -> list[NDArray[np.int16]]:
        """Stream everything pending, in order: the full batches to send."""
        out: list[NDArray[np.int16]] = []
        while self._pending:
            out.extend(self.stream(self._pending.popleft()))
        self._pending_samples = 0
        return out

    # --------------------------------------------------------------------------------- streaming

    def stream(self, pcm: NDArray[np.int16]) -> tuple[NDArray[np.int16], ...] | list[NDArray[np.int16]]:
        """Put ``pcm`` on the server's timeline: the full batches now due (a partial one waits)."""
        self._turn_chunks.append(_Chunk(self.input_samples, pcm))
        self._turn_chunk_samples += pcm.size
        while self._turn_chunks and self._turn_chunk_samples - self._turn_chunks[0].pcm.size >= self._max_turn_samples:
            self._turn_chunk_samples -= self._turn_chunks.popleft().pcm.size
        self.input_samples += pcm.size
        self.uncommitted_samples += pcm.size
        self._batch.append(pcm)
        self._batch_len += pcm.size
        if self._batch_len < self._batch_samples:
            return _NOTHING
        data = np.concatenate(self._batch)
        whole = data.size - data.size % self._batch_samples
        out = [data[start : start + self._batch_samples] for start in range(0, whole, self._batch_samples)]
        rest = data[whole:]
        self._batch = [rest] if rest.size else []
        self._batch_len = rest.size
        return out

    def flush(self) -> NDArray[np.int16] | None:
        """The partial batch, to send now (end of a turn, before a commit)."""
        if not self._batch_len:
            return None
        data = np.concatenate(self._batch)
        self._batch, self._batch_len = [], 0
        return data

    def clear_uncommitted(self) -> None:
        """The input buffer is cleared (local turn detection, barge-in): the partial batch goes too."""
        self._batch, self._batch_len = [], 0
        self.uncommitted_samples = 0

    # -------------------------------------------------------------------------------- the turn

    def speech_started(self, start_sample: int) -> None:
        """The server heard speech start at ``start_sample`` of the timeline."""
        if self._speech_start_sample is None or self._speech_start_sample < self._settled_sample:
            self._speech_start_sample = start_sample

    def speech_stopped(self, end_sample: int) -> None:
        """The server heard speech stop at ``end_sample`` of the timeline."""
        self._speech_end_sample = end_sample

    def mark_committed(self, server_vad: bool) -> None:
        """The input buffer was committed: the turn ends here (or where the server's VAD heard it stop)."""
        self.uncommitted_samples = 0
        end = self.input_samples
        if server_vad and self._speech_end_sample is not None:
            end = min(end, self._speech_end_sample)
        self._commit_sample = max(self._commit_sample, end)

    def response_created(self) -> None:
        """A response started: it answers the audio committed so far."""
        self._response_turn_end = self._commit_sample

    def response_settled(self) -> None:
        """That response is done: the turn it answered will not be replayed."""
        self._settled_sample = max(self._settled_sample, self._response_turn_end)
        self._speech_start_sample = None

    def unsettled_audio(self) -> NDArray[np.int16]:
        """The audio of the user turn not yet answered, for replay after a drop.

        It starts where the last answered turn ended (or at the server's speech start when it is
        later) and holds at most ``max_turn_samples`` (the most recent part).
        """
        start = self._settled_sample
        if self._speech_start_sample is not None and self._speech_start_sample > start:
            start = self._speech_start_sample
        parts: list[NDArray[np.int16]] = []
        for chunk in self._turn_chunks:
            end = chunk.start + chunk.pcm.size
            if end <= start:
                continue
            parts.append(chunk.pcm[max(0, start - chunk.start) :])
        # A session that never became ready still holds everything it was given (the previous
        # connection's replay included) in its pending queue: that is the turn too, in order.
        parts.extend(self._pending)
        if not parts:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(parts)
        return audio[-self._max_turn_samples :] if audio.size > self._max_turn_samples else audio
