"""The listening gate: VAD always, the wake-word engine only around speech.

Pure: capture chunks (16 kHz int16 and their sample positions) in, :data:`GateEvent` out. In a quiet
room only webrtcvad runs. When the VAD declares speech, the engine is reset and fed the audio from a
little before the speech start (kept in a ``ring_s`` ring, so it hears the phrase from its first
syllable), then every chunk until :data:`WAKE_TAIL_MS` after the speech ends (a wake-word model's
score peaks only after the phrase is over). What the app passes in is its choice: while the
device plays, it passes the echo-cancelled microphone (or suppresses the gate), so the device's own
voice does not wake it.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from earshot.config import GateConfig
from earshot.gate.vad import RATE_HZ, Vad, VadEnd, VadEndOfTurn, VadStart, build_silero
from earshot.gate.wakeword import WakeWordEngine

logger = logging.getLogger(__name__)

LEAD_IN_MS = 300
"""Audio before the VAD's speech start given to the engine (the VAD starts a little late); an engine
that needs more (microWakeWord's front end adapts to the room's noise for about a second) says so in
its ``lead_in_ms``, up to ``gate.wakeword.ring_s``."""
WAKE_TAIL_MS = 800
"""The engine keeps hearing audio this long after the speech's last frame, whatever ``vad.end_ms`` is:
openWakeWord's score peaks 0.1–0.4 s after the phrase ends."""


class ChunkLike(Protocol):
    """What the gate reads from ``earshot.audio.backend.CaptureChunk``."""

    @property
    def pcm(self) -> NDArray[np.int16]:
        """160 samples, 16 kHz mono."""
        ...

    @property
    def position(self) -> int:
        """16 kHz sample index of ``pcm[0]``."""
        ...


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD heard speech starting at ``position``."""

    position: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """Speech ended at ``position`` (after ``vad.end_ms`` of silence)."""

    position: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """``vad.end_of_turn_ms`` of silence followed speech that ended at ``position`` (local turn detection)."""

    position: int


@dataclass(frozen=True, slots=True)
class Wake:
    """The wake word was heard.

    Attributes:
        position: where it was decided (the end of the chunk that completed it).
        score: the engine's score.
        engine: the engine's name.
        start_position: where the speech containing it began (use for pre-roll).
    """

    position: int
    score: float
    engine: str
    start_position: int
    word: int = 0
    """Which wake word: 0 for ``gate.wakeword``'s own, ``i + 1`` for ``gate.wakeword.also[i]``."""


@dataclass(frozen=True, slots=True)
class StopWord:
    """The stop phrase was heard (only listened for while :meth:`Gate.set_stop_listening` says so).

    Attributes mean what :class:`Wake`'s do.
    """

    position: int
    score: float
    engine: str
    start_position: int


GateEvent = SpeechStarted | SpeechEnded | EndOfTurn | Wake | StopWord

STOP_HEARD_BACK_MS = 400
"""The stop engine starts this long before the user was first heard over the device's sound (the
detectors confirm a voice some 50-150 ms into it), or at the stretch's start if later."""
STOP_PACE_MS = 100
"""The stop engine is given at most this much audio per capture chunk: its lead-in (up to 0.7 s, 20 ms
of pocketsphinx here, 12 times that on a Pi 3 core) is caught up at ten times real time instead of
blocking the loop in one call."""
STOP_RUN_MAX_MS = 1500
"""The stop engine hears only the first 1.5 s of a stretch of speech: the stop phrase is said on its
own ("stop", "stop it"), not inside a sentence ("please don't stop the music"); a question spoken
over a reply, or the canceller's residual of a long reply, does not keep it running."""


class _Listener:
    """One engine's run around speech: started at a speech start (fed the ring's lead-in), until the tail."""

    def __init__(
        self, engine: WakeWordEngine, *, max_run_samples: int | None = None, pace_samples: int | None = None
    ) -> None:
        self.engine = engine
        self.pace_samples = pace_samples
        """Audio given to the engine per capture chunk at most (None: all at once): a costly engine
        catches up on its lead-in over a few chunks instead of blocking the loop in one call."""
        self.pending: deque[NDArray[np.int16]] = deque()
        self.fed_end = 0
        """Capture position just after the last sample the engine was given."""
        self.active = False
        self.until: int | None = None
        self.quiet_until = -1
        self.calls = 0
        self.max_run_samples = max_run_samples
        self.started_at = 0
        self.stretch = -1
        """The speech start of the stretch of the last run (one run per stretch)."""

    def lead_in_ms(self) -> int:
        return max(LEAD_IN_MS, int(getattr(self.engine, "lead_in_ms", LEAD_IN_MS)))

    def stop(self) -> None:
        peak = getattr(self.engine, "peak", None)
        if isinstance(peak, float):
            logger.debug("%s stopped after speech: peak score %.3f", self.engine.name, peak)
        self.active = False
        self.until = None
        self.pending.clear()
        self.engine.reset()


class Gate:
    """VAD plus wake word over the capture stream.

    Args:
        config: the ``gate`` section.
        wakeword: the engine (``build_wakeword``); ``None`` runs the VAD only (modes ``vad``/``manual``).
        vad: a ready VAD (tests); by default built from ``config.vad`` with the Silero stage it asks for.
    """

    def __init__(
        self,
        config: GateConfig,
        *,
        wakeword: WakeWordEngine | None,
        vad: Vad | None = None,
        stop_word: WakeWordEngine | None = None,
    ) -> None:
        self._config = config
        self._engine = wakeword if config.mode == "wakeword" else None
        self._wake = _Listener(self._engine) if self._engine is not None else None
        self._stop = (
            _Listener(
                stop_word,
                max_run_samples=RATE_HZ * STOP_RUN_MAX_MS // 1000,
                pace_samples=RATE_HZ * STOP_PACE_MS // 1000,
            )
            if stop_word is not None
            else None
        )
        self.vad = vad if vad is not None else Vad(config.vad, silero=build_silero(config.vad.silero))
        self._ring_samples = round(config.wakeword.ring_s * RATE_HZ)
        self._refractory_samples = round(config.wakeword.refractory_s * RATE_HZ)
        self._suppressed = False
        self._stop_listening = False
        self._stop_user: int | None = None  # where the user was first heard over the device's sound
        self.reset()

    @property
    def engine(self) -> WakeWordEngine | None:
        """The wake-word engine in use (``None`` unless ``mode: wakeword``)."""
        return self._engine

    @property
    def stop_engine(self) -> WakeWordEngine | None:
        """The stop phrase's engine, or None (``gate.stop_word``)."""
        return self._stop.engine if self._stop is not None else None

    @property
    def engine_calls(self) -> int:
        """Chunks given to the wake-word engine (statistics; zero in a silent room)."""
        return self._wake.calls if self._wake is not None else 0

    @property
    def stop_engine_calls(self) -> int:
        """Chunks given to the stop phrase's engine (statistics)."""
        return self._stop.calls if self._stop is not None else 0

    @property
    def stop_listening(self) -> bool:
        """Whether a stretch of speech starting now would start the stop phrase's engine."""
        return self._stop_listening

    def set_stop_listening(self, listening: bool) -> None:
        """Listen for the stop phrase (over a reply, a ring); a run under way finishes its stretch of speech.

        Listening only keeps the audio: the engine starts on a stretch of speech once the caller says
        the user is heard in it (:meth:`stop_user_heard`), from the stretch's start. Over the device's
        own sound the VAD also starts on the canceller's residual; the stop phrase's engine (costly on
        a Pi core) runs only for the user's speech.
        """
        self._stop_listening = listening and self._stop is not None
        if not self._stop_listening:
            self._stop_user = None

    def stop_user_heard(self, position: int) -> None:
        """The user is heard over the device's sound at ``position`` (the barge-in or over-sound detector says so)."""
        if self._stop_listening and self._stop_user is None:
            self._stop_user = position

    @property
    def suppressed(self) -> bool:
        """True while wakes are ignored."""
        return self._suppressed

    def set_suppressed(self, suppressed: bool) -> None:
        """Ignore (and stop computing) wakes, e.g. while engaged or while the device plays.

        The VAD keeps running and its events are still reported.
        """
        if suppressed and not self._suppressed and self._wake is not None and self._wake.active:
            self._wake.stop()
        self._suppressed = suppressed

    def reset(self) -> None:
        """Forget the stream (after a capture restart)."""
        self.vad.reset()
        self._ring: deque[tuple[int, NDArray[np.int16]]] = deque()
        self._ring_len = 0
        self._speech_start: int | None = None
        self._stop_user = None
        for listener in (self._wake, self._stop):
            if listener is not None:
                listener.active = False
                listener.until = None
                listener.quiet_until = -1
                listener.stretch = -1
                listener.engine.reset()

    def process(self, chunk: ChunkLike) -> list[GateEvent]:
        """Consume one capture chunk; return what it completed, in order."""
        pcm = np.asarray(chunk.pcm, dtype=np.int16)
        position = int(chunk.position)
        end = position + len(pcm)
        events: list[GateEvent] = []
        wake, stop = self._wake, self._stop
        may = [listener for listener, on in ((wake, not self._suppressed),) if listener is not None and on]
        stop_on = stop is not None and self._stop_listening
        if may or stop_on or (stop is not None and stop.active):
            self._remember(pcm, position)
        if stop is not None and stop_on and self._stop_user is not None:
            may.append(stop)
        fed: list[_Listener] = []
        active = [x for x in (wake, stop) if x is not None and x.active]
        for ev in self.vad.process(pcm, position):
            if isinstance(ev, VadStart):
                events.append(SpeechStarted(ev.position))
                self._speech_start = ev.position
                for listener in (wake, stop):
                    if listener is None:
                        continue
                    if listener.active:
                        # Speech again within the tail: the engine is still listening to this stream.
                        listener.until = None
                    elif listener in may:
                        # The ring already holds this chunk, so starting the engine feeds it too.
                        self._start(listener, ev.position, events, end)
                        listener.stretch = ev.position
                        fed.append(listener)
                        active.append(listener)
            elif isinstance(ev, VadEnd):
                events.append(SpeechEnded(ev.position))
                self._stop_user = None
                for listener in active:
                    if listener.active:
                        listener.until = ev.position + RATE_HZ * WAKE_TAIL_MS // 1000
            elif isinstance(ev, VadEndOfTurn):
                events.append(EndOfTurn(ev.position))
        start = self.vad.speech_start
        if stop is not None and stop in may and not stop.active and start is not None and start > stop.stretch:
            # The user was heard in a stretch already under way (it may have begun on the canceller's
            # residual): the engine hears it from a little before the user was first heard.
            heard = self._stop_user if self._stop_user is not None else start
            self._start(stop, max(start, heard - RATE_HZ * STOP_HEARD_BACK_MS // 1000), events, end)
            stop.stretch = start
            fed.append(stop)
        for listener in (wake, stop):
            if listener is None or not listener.active:
                continue
            if listener not in fed:
                self._feed(listener, pcm, end, events)
            heard = listener.fed_end if listener.pace_samples is not None else end
            too_long = listener.max_run_samples is not None and heard - listener.started_at >= listener.max_run_samples
            if (listener.until is not None and heard >= listener.until) or too_long:
                listener.stop()
        return events

    # ------------------------------------------------------------------------------ internals

    def _remember(self, pcm: NDArray[np.int16], position: int) -> None:
        self._ring.append((position, pcm))
        self._ring_len += len(pcm)
        while self._ring and self._ring_len - len(self._ring[0][1]) >= self._ring_samples:
            self._ring_len -= len(self._ring.popleft()[1])

    def _start(self, listener: _Listener, speech_start: int, events: list[GateEvent], end: int) -> None:
        listener.engine.reset()
        listener.active = True
        listener.until = None
        listener.started_at = speech_start
        first = speech_start - RATE_HZ * listener.lead_in_ms() // 1000
        past = [pcm if pos >= first else pcm[first - pos :] for pos, pcm in self._ring if pos + len(pcm) > first]
        listener.pending.clear()
        if past:
            lead = np.concatenate(past)
            listener.fed_end = end - len(lead)
            self._feed(listener, lead, end, events)

    def _feed(self, listener: _Listener, pcm: NDArray[np.int16], end: int, events: list[GateEvent]) -> None:
        pace = listener.pace_samples
        if pace is not None:
            # Queue it, and give the engine the oldest audio, at most a pace's worth.
            listener.pending.append(pcm)
            take: list[NDArray[np.int16]] = []
            size = 0
            while listener.pending and size < pace:
                head = listener.pending.popleft()
                if size + len(head) > pace:
                    listener.pending.appendleft(head[pace - size :])
                    head = head[: pace - size]
                take.append(head)
                size += len(head)
            pcm = np.concatenate(take) if len(take) > 1 else take[0]
            listener.fed_end += size
            end = listener.fed_end
        engine = listener.engine
        listener.calls += 1
        score = engine.process(pcm)
        if score is None:
            return
        stop = listener is self._stop
        what = "stop word" if stop else "wake word"
        if end < listener.quiet_until:
            logger.debug("%s ignored in the refractory period (score %.2f)", what, score)
            return
        listener.quiet_until = end + self._refractory_samples
        start = self._speech_start if self._speech_start is not None else end
        logger.info("%s heard (%s, score %.2f)", what, engine.name, score)
        if stop:
            events.append(StopWord(position=end, score=score, engine=engine.name, start_position=start))
        else:
            word = int(getattr(engine, "word", 0))
            events.append(Wake(position=end, score=score, engine=engine.name, start_position=start, word=word))
        # Start afresh so the same phrase cannot fire twice.
        engine.reset()
