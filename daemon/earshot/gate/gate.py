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


GateEvent = SpeechStarted | SpeechEnded | EndOfTurn | Wake


class Gate:
    """VAD plus wake word over the capture stream.

    Args:
        config: the ``gate`` section.
        wakeword: the engine (``build_wakeword``); ``None`` runs the VAD only (modes ``vad``/``manual``).
        vad: a ready VAD (tests); by default built from ``config.vad`` with the Silero stage it asks for.
    """

    def __init__(self, config: GateConfig, *, wakeword: WakeWordEngine | None, vad: Vad | None = None) -> None:
        self._config = config
        self._engine = wakeword if config.mode == "wakeword" else None
        self.vad = vad if vad is not None else Vad(config.vad, silero=build_silero(config.vad.silero))
        self._ring_samples = round(config.wakeword.ring_s * RATE_HZ)
        self._refractory_samples = round(config.wakeword.refractory_s * RATE_HZ)
        self._suppressed = False
        self.engine_calls = 0
        """Chunks given to the wake-word engine (statistics; zero in a silent room)."""
        self.reset()

    @property
    def engine(self) -> WakeWordEngine | None:
        """The wake-word engine in use (``None`` unless ``mode: wakeword``)."""
        return self._engine

    @property
    def suppressed(self) -> bool:
        """True while wakes are ignored."""
        return self._suppressed

    def set_suppressed(self, suppressed: bool) -> None:
        """Ignore (and stop computing) wakes, e.g. while engaged or while the device plays.

        The VAD keeps running and its events are still reported.
        """
        if suppressed and not self._suppressed and self._engine_active:
            self._stop_engine()
        self._suppressed = suppressed

    def reset(self) -> None:
        """Forget the stream (after a capture restart)."""
        self.vad.reset()
        self._ring: deque[tuple[int, NDArray[np.int16]]] = deque()
        self._ring_len = 0
        self._engine_active = False
        self._engine_until: int | None = None
        self._speech_start: int | None = None
        self._quiet_until = -1
        if self._engine is not None:
            self._engine.reset()

    def process(self, chunk: ChunkLike) -> list[GateEvent]:
        """Consume one capture chunk; return what it completed, in order."""
        pcm = np.asarray(chunk.pcm, dtype=np.int16)
        position = int(chunk.position)
        end = position + len(pcm)
        events: list[GateEvent] = []
        running = self._engine is not None and not self._suppressed
        if running:
            self._remember(pcm, position)
        fed = False
        for ev in self.vad.process(pcm, position):
            if isinstance(ev, VadStart):
                events.append(SpeechStarted(ev.position))
                self._speech_start = ev.position
                if self._engine_active:
                    # Speech again within the tail: the engine is still listening to this stream.
                    self._engine_until = None
                elif running:
                    # The ring already holds this chunk, so starting the engine feeds it too.
                    self._start_engine(ev.position, events, end)
                    fed = True
            elif isinstance(ev, VadEnd):
                events.append(SpeechEnded(ev.position))
                if self._engine_active:
                    self._engine_until = ev.position + RATE_HZ * WAKE_TAIL_MS // 1000
            elif isinstance(ev, VadEndOfTurn):
                events.append(EndOfTurn(ev.position))
        if self._engine_active and not fed:
            self._feed(pcm, end, events)
        if self._engine_active and self._engine_until is not None and end >= self._engine_until:
            self._stop_engine()
        return events

    # ------------------------------------------------------------------------------ internals

    def _remember(self, pcm: NDArray[np.int16], position: int) -> None:
        self._ring.append((position, pcm))
        self._ring_len += len(pcm)
        while self._ring and self._ring_len - len(self._ring[0][1]) >= self._ring_samples:
            self._ring_len -= len(self._ring.popleft()[1])

    def _start_engine(self, speech_start: int, events: list[GateEvent], end: int) -> None:
        assert self._engine is not None
        self._engine.reset()
        self._engine_active = True
        self._engine_until = None
        lead_in_ms = max(LEAD_IN_MS, getattr(self._engine, "lead_in_ms", LEAD_IN_MS))
        first = speech_start - RATE_HZ * lead_in_ms // 1000
        past = [pcm if pos >= first else pcm[first - pos :] for pos, pcm in self._ring if pos + len(pcm) > first]
        if past:
            self._feed(np.concatenate(past), end, events)

    def _stop_engine(self) -> None:
        assert self._engine is not None
        peak = getattr(self._engine, "peak", None)
        if isinstance(peak, float):
            logger.debug("wake-word engine stopped after speech: peak score %.3f", peak)
        self._engine_active = False
        self._engine_until = None
        self._engine.reset()

    def _feed(self, pcm: NDArray[np.int16], end: int, events: list[GateEvent]) -> None:
        assert self._engine is not None
        self.engine_calls += 1
        score = self._engine.process(pcm)
        if score is None:
            return
        if end < self._quiet_until:
            logger.debug("wake ignored in the refractory period (score %.2f)", score)
            return
        self._quiet_until = end + self._refractory_samples
        start = self._speech_start if self._speech_start is not None else end
        logger.info("wake word heard (%s, score %.2f)", self._engine.name, score)
        events.append(Wake(position=end, score=score, engine=self._engine.name, start_position=start))
        # Start afresh so the same phrase cannot fire twice.
        self._engine.reset()
