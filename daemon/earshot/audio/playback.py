"""The playback task: reply audio to an :class:`~earshot.audio.backend.AudioSink`, with a jitter prebuffer.

The sink's clock is the truth: the played position is "samples handed to the sink − samples the sink
still holds" (``AudioSink.queued_samples``), and every sample handed over is entered in the pure
:class:`~earshot.audio.ledger.HeardLedger` with the key (item id) it belongs to, so the samples heard
of each item are exact at any moment, including the instant of a barge-in.

Keys starting with ``earcon:`` are cues: played like replies and fed to the echo reference by the
sink, but never counted as heard (they are not part of any truncation).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio.backend import PLAYBACK_RATE_HZ, AudioSink
from earshot.audio.dsp import fade_out
from earshot.audio.ledger import (
    EARCON_PREFIX,
    HeardLedger,
    PlaybackEvent,
    PlaybackFinished,
    PlaybackStarted,
    is_earcon,
)
from earshot.audio.resample import StreamResampler

__all__ = [
    "EARCON_PREFIX",
    "MAX_FADE_MS",
    "MAX_QUEUED_S",
    "Playback",
    "PlaybackEvent",
    "PlaybackFinished",
    "PlaybackStarted",
]

logger = logging.getLogger(__name__)

MAX_FADE_MS = 12
_CHUNK_SAMPLES = PLAYBACK_RATE_HZ // 100
"""Samples handed to a sink per write unless it says otherwise (its ``write_samples``): 10 ms."""
MAX_QUEUED_S = 180
"""Reply audio queued ahead of the speaker at most (8.6 MB at 24 kHz): longer than any spoken reply
(the model's output-token cap ends one within a few minutes); audio past it is dropped and counted."""


@dataclass(frozen=True, slots=True)
class _EndOfReply:
    keys: tuple[str, ...]


class Playback:
    """Feed reply audio to a sink with a jitter prebuffer, and account for what was heard.

    Args:
        sink: the loudspeaker (24 kHz mono int16 in).
        prebuffer_ms: audio gathered before playing starts while the device is idle (jitter margin).
        on_event: called with :class:`PlaybackStarted` / :class:`PlaybackFinished` from the :meth:`run` task.
        max_queued_s: the byte bound on audio waiting to be played (:data:`MAX_QUEUED_S`).
    """

    def __init__(
        self,
        sink: AudioSink,
        *,
        prebuffer_ms: int,
        on_event: Callable[[PlaybackEvent], None] | None = None,
        max_queued_s: float = MAX_QUEUED_S,
    ) -> None:
        self._sink = sink
        self.on_sound: Callable[[], None] | None = None
        """Called when any sound is queued (a reply's audio, a cue, a ring): the daemon's ducking."""
        self._chunk = max(1, int(sink.write_samples))
        self._max_pending = int(max_queued_s * PLAYBACK_RATE_HZ)
        self.dropped_samples = 0
        self._dropping = False  # warned during this reply
        """Samples refused because the queue was full (a server sending faster than any reply)."""
        self._prebuffer_samples = prebuffer_ms * PLAYBACK_RATE_HZ // 1000
        self._on_event = on_event or (lambda _event: None)
        self._pending: deque[tuple[str, NDArray[np.int16]] | _EndOfReply] = deque()
        self._pending_samples = 0
        self._open_keys: list[str] = []  # keys of the reply being enqueued (before finish())
        self._ledger = HeardLedger()
        self._fade: list[tuple[NDArray[np.int16]]] = []
        self._flowing = False
        self._io: asyncio.Future[None] | None = None
        self._io_samples = 0
        self._wake = asyncio.Event()
        self._resampler: StreamResampler | None = None  # wire rate -> 24 kHz, for G.711's 8 kHz

    # ------------------------------------------------------------------ producer side (non-blocking)

    def fit(self, pcm: NDArray[np.int16], rate_hz: int) -> NDArray[np.int16]:
        """``pcm`` (at ``rate_hz``) cut to what the queue still takes; the rest is dropped and counted.

        Call it before resampling, so that a hostile delta never grows on the loop.
        """
        room = max(0, self._max_pending - self._pending_samples) * rate_hz // PLAYBACK_RATE_HZ
        if pcm.size <= room:
            return pcm
        if not self._dropping:
            self._dropping = True
            ahead_s = self._max_pending // PLAYBACK_RATE_HZ
            logger.warning("playback queue full (%d s ahead): reply audio dropped", ahead_s)
        self.dropped_samples += (int(pcm.size) - room) * PLAYBACK_RATE_HZ // rate_hz
        return pcm[:room]

    def play(self, key: str, pcm: NDArray[np.int16], rate_hz: int) -> None:
        """Queue reply audio of ``key`` at ``rate_hz`` (the wire rate).

        It is cut to what the queue takes first, then resampled to the speaker's 24 kHz (one stream
        across the calls: no seams between deltas).
        """
        arr = self.fit(np.asarray(pcm, dtype=np.int16).reshape(-1), rate_hz)
        if rate_hz != PLAYBACK_RATE_HZ:
            if self._resampler is None or self._resampler.in_hz != rate_hz:
                self._resampler = StreamResampler(rate_hz, PLAYBACK_RATE_HZ)
            arr = self._resampler.process(arr)
        self.enqueue(key, arr)

    def enqueue(self, key: str, pcm24k: NDArray[np.int16]) -> None:
        """Queue audio of ``key`` (an item id, or ``earcon:<name>``); never blocks.

        What does not fit under the bound is dropped (counted in :attr:`dropped_samples`): the
        heard accounting stays exact, since only what is handed to the device counts.
        """
        arr = self.fit(np.asarray(pcm24k, dtype=np.int16).reshape(-1), PLAYBACK_RATE_HZ)
        if arr.size == 0:
            return
        if not is_earcon(key):
            if key not in self._open_keys:
                self._open_keys.append(key)
            self._ledger.expect(key)
        if self.on_sound is not None:
            self.on_sound()
        self._pending.append((key, arr))
        self._pending_samples += int(arr.size)
        self._wake.set()

    def finish(self) -> None:
        """No more audio for the current reply: play out what is queued, then fire :class:`PlaybackFinished`."""
        self._pending.append(_EndOfReply(tuple(self._open_keys)))
        self._open_keys = []
        self._dropping = False
        self._wake.set()

    def stop(self, fade_ms: int = 10) -> dict[str, int]:
        """Barge-in: fade out over at most 12 ms, drop everything else.

        Returns:
            Samples (24 kHz) heard of each reply key enqueued and not yet reported by a
            :class:`PlaybackFinished`, including the faded samples. Earcons are left out.
        """
        played = self._played_position()
        self._ledger.account(played)
        if self._io is not None and not self._io.done():
            self._io.cancel()  # an atomic sink write: cancelled means nothing was queued
        self._io = None
        self._io_samples = 0
        fade_samples = max(0, min(fade_ms, MAX_FADE_MS)) * PLAYBACK_RATE_HZ // 1000
        pieces = self._unheard_audio(played, fade_samples)
        self._sink.drop()
        self._ledger.cut(played)
        reported: list[str] = list(self._open_keys)
        for entry in self._pending:
            if isinstance(entry, _EndOfReply):
                reported[:0] = [k for k in entry.keys if k not in reported]
        self._pending.clear()
        self._pending_samples = 0
        self._open_keys = []
        self._fade = []
        total = sum(int(p.size) for _, p in pieces)
        if total:
            ramp = fade_out(np.concatenate([p for _, p in pieces]))
            self._fade.append((ramp,))
            for key, piece in pieces:
                self._ledger.add_heard(key, int(piece.size))
        self._flowing = False
        self._wake.set()
        heard = {key: self._ledger.heard(key) for key in reported if not is_earcon(key)}
        logger.debug("playback stopped: heard %s", heard)
        self._ledger.trim(set(self._open_keys))
        return heard

    def heard_samples(self, key: str) -> int:
        """Samples (24 kHz) of ``key`` heard so far."""
        self._ledger.account(self._played_position())
        return self._ledger.heard(key)

    def handed_samples(self, key: str) -> int:
        """Samples (24 kHz) of ``key`` handed to the device so far (heard or still in its buffer)."""
        return self._ledger.handed(key)

    @property
    def active(self) -> bool:
        """Something is queued, being written, or still in the device."""
        return bool(
            self._pending_samples
            or self._fade
            or (self._io is not None and not self._io.done())
            or self._sink.queued_samples() > 0
        )

    # ------------------------------------------------------------------ accounting

    def _played_position(self) -> int:
        inflight = self._io_samples if self._io is not None and not self._io.done() else 0
        return self._ledger.played(self._sink.queued_samples() + inflight)

    def _unheard_audio(self, played: int, n: int) -> list[tuple[str, NDArray[np.int16]]]:
        """The next ``n`` samples that would have been heard after ``played``, with their keys."""
        out = self._ledger.unheard(played, n)
        n -= sum(int(p.size) for _, p in out)
        for entry in self._pending:
            if n <= 0 or isinstance(entry, _EndOfReply):
                break
            key, pcm = entry
            piece = pcm[:n]
            out.append((key, piece))
            n -= int(piece.size)
        return out

    # ------------------------------------------------------------------ the task

    def _ready_to_write(self) -> bool:
        if not self._pending or isinstance(self._pending[0], _EndOfReply):
            return False
        if self._flowing and self._sink.queued_samples() > 0:
            return True
        key = self._pending[0][0]
        if is_earcon(key) or self._pending_samples >= self._prebuffer_samples:
            return True
        return any(isinstance(e, _EndOfReply) for e in self._pending)

    def _take_chunk(self) -> tuple[str, NDArray[np.int16]]:
        entry = self._pending[0]
        assert not isinstance(entry, _EndOfReply)
        key, pcm = entry
        chunk = pcm[: self._chunk]
        if pcm.size > self._chunk:
            self._pending[0] = (key, pcm[self._chunk :])
        else:
            self._pending.popleft()
        self._pending_samples -= int(chunk.size)
        return key, chunk

    async def _sink_io(self, call: Coroutine[Any, Any, None], samples: int) -> bool:
        """Run a sink call that :meth:`stop` may cancel; False when it was cancelled by stop()."""
        self._io = asyncio.ensure_future(call)
        self._io_samples = samples
        io = self._io
        try:
            await io
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                io.cancel()
                raise
            return False
        finally:
            if self._io is io:
                self._io = None
                self._io_samples = 0
        return True

    async def run(self) -> None:
        """Feed the sink until cancelled. Cancellation-safe: the sink is left as it is (call stop first to silence)."""
        while True:
            if self._fade:
                (ramp,) = self._fade.pop(0)
                self._ledger.hand(None, ramp)
                await self._sink_io(self._sink.write(ramp), int(ramp.size))
                continue
            if self._pending and isinstance(self._pending[0], _EndOfReply):
                marker = self._pending[0]
                if await self._sink_io(self._sink.drain(), 0):
                    if self._pending and self._pending[0] is marker:
                        self._pending.popleft()
                    self._ledger.account(self._played_position())
                    self._flowing = False
                    heard = {k: self._ledger.heard(k) for k in marker.keys}
                    self._on_event(PlaybackFinished(heard))
                    self._ledger.trim(set(self._open_keys))
                continue
            if self._ready_to_write():
                key, chunk = self._take_chunk()
                self._flowing = True
                if self._ledger.hand(key, chunk):
                    self._on_event(PlaybackStarted(key))
                await self._sink_io(self._sink.write(chunk), int(chunk.size))
                continue
            self._wake.clear()
            await self._wake.wait()
