"""Local barge-in detection while the device speaks, the duplex policy, and the wake guard.

All three are pure: they take 10 ms chunks, the echo canceller's per-chunk :class:`EchoFrame` and
16 kHz sample positions, and return decisions. The app wires them:

- every capture chunk goes through :class:`~earshot.audio.echo.EchoCanceller` first; while the
  device is SPEAKING, :meth:`BargeInDetector.process` gets the cleaned and raw chunks and returns a
  :class:`BargeIn` (with the onset position of the user's speech, so the pre-roll before it can be
  sent first) when the user talks over the reply;
- the wake-word engine is fed the *cleaned* signal (never the raw microphone) and every wake is
  checked with :meth:`WakeGuard.accept`, which rejects wakes the residual echo can explain: the
  device saying "Jarvis" in a reply never wakes it.

The duplex policy (:func:`choose_duplex`) picks how much to trust the cancelled signal from the
echo reduction (ERLE) measured at run time, unless the echo path itself is quiet (the measured echo
return loss, ERL, says the microphone hardly hears the speaker: then ERLE means nothing and FULL is
safe):

- FULL: VAD on the cleaned signal, just above the predicted residual echo, barges in;
- GATED: only clearly louder speech (cleaned above the predicted residual echo by
  ``energy_margin_db``: the playback-relative energy gate) or the wake word barges in;
- HALF: the microphone is muted while speaking; only the wake word or the button interrupt.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad
from numpy.typing import NDArray

from earshot.audio.dsp import percentile
from earshot.audio.echo import QUIET_ECHO_ERL_DB, EchoFrame
from earshot.config import BargeInConfig

__all__ = [
    "QUIET_ECHO_ERL_DB",
    "BargeIn",
    "BargeInDetector",
    "DuplexDecision",
    "DuplexMode",
    "WakeGuard",
    "choose_duplex",
]

logger = logging.getLogger(__name__)

_FULL_SCALE_POWER = 32768.0**2
_SILENCE_DBFS = -120.0
# Below this the cleaned signal is room noise whatever the VAD says (webrtcvad mode 3 fires on
# very quiet noise now and then).
_SPEECH_FLOOR_DBFS = -55.0
# In FULL duplex, until that bound is measured, VAD frames must be this much above the average
# prediction of the residual echo. 3 dB let the device's own voice through twice in 30 s of echo at
# -6 dB (scripts/bench); a user talking over playback stands 13-15 dB above it in most chunks.
_FULL_RESIDUAL_MARGIN_DB = 8.0
# In FULL duplex, once the canceller has measured how far its residual stays below the loudest
# recent reference (EchoFrame.residual_peak_dbfs, a bound that about 2 % of echo-only frames
# exceed), VAD frames must stand this much above that bound. Measured over 10 minutes of speech
# echo at -6 dB: the 0.05th percentile of echo-only frames stays 1-3 dB under the 1st, while a
# user talking over the reply stands 6-17 dB above the bound from its third 10 ms chunk on. With the
# VAD hearing every chunk (it then also calls the residual's louder bursts speech), 2 dB let the
# device's own voice through once, in the first reply of 10 minutes while the bound was young;
# 3 dB and more none (scripts/bench's echo-only run replayed offline).
_FULL_PEAK_MARGIN_DB = 4.0
# Hysteresis: barge in when min_speech_ms of speech frames fall within a window this many times
# longer (syllable gaps, fricatives and double-talk dips break up the VAD's runs of speech).
_WINDOW_FACTOR = 2
# ... and never shorter than this: a short word ("stop", "excuse me") is two syllables with a gap.
_MIN_WINDOW_MS = 240
# Only the part of a chunk the reference does not explain can be the user: the level tested against the
# residual bound is the cleaned level less its share coherent with the reference (EchoFrame.
# residual_coherence, echo the filter has not learned yet). Measured: on the bench's engaged run a
# reply's last syllable (all under 500 Hz) stood 5 dB over the bound at a coherence of 0.47-0.82 (a
# false barge-in in most runs); users talking over replies there at 0.08-0.19 (under 1 dB less). In 20
# new replies after a warm-up on another voice (tests/echo/test_coherence.py) 6 barged in on themselves
# without it and 1 with it (a soft clip's harmonics have no linear relation to the reference); the 12
# interruptions of tests/echo/test_bargein.py are detected on the same chunk, cold canceller or warm.
# A plain veto at a fixed coherence was tried first: a user over a poorly cancelled reply (GATED) makes
# the mixture coherent too, and a veto would drop them altogether, where this only takes off the echo.
_MIN_UNEXPLAINED = 1e-3
USE_COHERENCE = True
"""Take the coherent share off (see above); tests switch it off to show what it changes."""
# In auto duplex, FULL falls back to GATED mid-reply only this far below full_duplex_erle_db.
_DUPLEX_HYSTERESIS_DB = 3.0


class DuplexMode(enum.Enum):
    """How the microphone is used while the device speaks."""

    FULL = "full"
    GATED = "gated"
    HALF = "half"


@dataclass(frozen=True, slots=True)
class DuplexDecision:
    """A duplex mode and why it was chosen (for status and logs)."""

    mode: DuplexMode
    reason: str

    def __str__(self) -> str:
        return f"{self.mode.value} ({self.reason})"


def choose_duplex(
    config: BargeInConfig,
    erle_db: float | None,
    *,
    canceller: bool = True,
    erl_db: float | None = None,
) -> DuplexDecision:
    """Pick the duplex mode from the configuration and the measured echo reduction.

    Args:
        config: the barge-in section (``duplex``, ``echo_cancel``, ``full_duplex_erle_db``, ``gated_erle_db``).
        erle_db: the echo reduction measured at run time, or None while not measured yet.
        canceller: an echo canceller is running on the microphone.
        erl_db: the echo return loss measured at run time (``EchoCanceller.erl_db``), or None.

    Returns:
        The decision. ``duplex: full|gated|half`` is obeyed as configured, except that full or gated
        without a working canceller falls back to half (the raw microphone hears the reply). With
        ``auto``: FULL when the echo path is quiet (ERL at or above :data:`QUIET_ECHO_ERL_DB`: with
        no echo in the microphone the echo reduction is meaningless) or at or above
        ``full_duplex_erle_db``, GATED at or above ``gated_erle_db`` or while not yet measured, HALF
        below that or without a canceller.
    """
    if not config.echo_cancel or not canceller:
        why = "echo cancellation off" if not config.echo_cancel else "no echo canceller"
        return DuplexDecision(DuplexMode.HALF, why)
    if config.duplex != "auto":
        return DuplexDecision(DuplexMode(config.duplex), "configured")
    if erl_db is not None and erl_db >= QUIET_ECHO_ERL_DB:
        return DuplexDecision(DuplexMode.FULL, f"echo path quiet: echo {erl_db:.0f} dB below playback")
    if erle_db is None or not math.isfinite(erle_db):
        return DuplexDecision(DuplexMode.GATED, "echo reduction not measured yet")
    if erle_db >= config.full_duplex_erle_db:
        return DuplexDecision(DuplexMode.FULL, f"echo reduction {erle_db:.1f} dB >= {config.full_duplex_erle_db:g} dB")
    if erle_db >= config.gated_erle_db:
        return DuplexDecision(
            DuplexMode.GATED,
            f"echo reduction {erle_db:.1f} dB < {config.full_duplex_erle_db:g} dB",
        )
    return DuplexDecision(DuplexMode.HALF, f"echo reduction {erle_db:.1f} dB < {config.gated_erle_db:g} dB")


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The user spoke over the reply.

    Attributes:
        position: 16 kHz sample position of the first speech chunk (the onset; send pre-roll from here).
        detected_position: position of the chunk that confirmed it (onset + ``min_speech_ms`` or more).
        mode: the duplex mode in force.
        level_dbfs: mean level of the cleaned speech chunks in the run.
        margin_db: that level above the predicted residual echo.
    """

    position: int
    detected_position: int
    mode: DuplexMode
    level_dbfs: float
    margin_db: float


def _dbfs(pcm: NDArray[np.int16]) -> float:
    if pcm.size == 0:
        return _SILENCE_DBFS
    x = pcm.astype(np.float32)
    power = float(np.dot(x, x)) / pcm.size
    return _SILENCE_DBFS if power <= 0.0 else max(_SILENCE_DBFS, 10.0 * math.log10(power / _FULL_SCALE_POWER))


class BargeInDetector:
    """Decides, chunk by chunk while the device speaks, whether the user is talking over it.

    Usage: :meth:`start` when playback of a reply starts (this picks the duplex mode), then
    :meth:`process` for every capture chunk until it returns a :class:`BargeIn` or :meth:`stop` is
    called when the reply has played out. After a barge-in it stays quiet until the next :meth:`start`.

    Args:
        config: the barge-in section.
        rate_hz: capture rate (webrtcvad takes 8, 16, 32 or 48 kHz).
        frame_samples: samples per chunk (10, 20 or 30 ms for webrtcvad).
    """

    def __init__(self, config: BargeInConfig, *, rate_hz: int = 16000, frame_samples: int = 160) -> None:
        self.config = config
        self.rate_hz = rate_hz
        self.frame_samples = frame_samples
        self._vad = webrtcvad.Vad(config.vad_aggressiveness)
        frame_ms = 1000 * frame_samples / rate_hz
        self._min_speech_frames = max(1, math.ceil(config.min_speech_ms / frame_ms))
        window_frames = max(_WINDOW_FACTOR * self._min_speech_frames, math.ceil(_MIN_WINDOW_MS / frame_ms))
        self._window_samples = window_frames * frame_samples
        self._holdoff_samples = config.holdoff_ms * rate_hz // 1000
        self._decision = choose_duplex(config, None)
        self._canceller = True
        self._follow = False
        self._armed = False
        self._start_position = 0
        self._reset_run()
        self.user_speaking = False
        """The last chunk counted as user speech (a near-end hint for the echo canceller)."""

    def _reset_run(self) -> None:
        # (position, level, margin) of the speech frames within the window, oldest first.
        self._run: deque[tuple[int, float, float]] = deque()

    @property
    def duplex(self) -> DuplexDecision:
        """The duplex mode in force and why (for status and logs)."""
        return self._decision

    @property
    def armed(self) -> bool:
        """Between :meth:`start` and :meth:`stop` (or a barge-in)."""
        return self._armed

    @property
    def mic_open(self) -> bool:
        """False while speaking in HALF duplex: the app sends no microphone audio upstream."""
        return not (self._armed and self._decision.mode is DuplexMode.HALF)

    def start(
        self, position: int, *, erle_db: float | None, canceller: bool = True, erl_db: float | None = None
    ) -> DuplexDecision:
        """Playback of a reply started at capture position ``position``: arm and pick the duplex mode.

        Args:
            position: 16 kHz capture position at which the speaker started playing.
            erle_db: the canceller's measured echo reduction (``EchoCanceller.erle_db``).
            canceller: an echo canceller is running.
            erl_db: the canceller's measured echo return loss (``EchoCanceller.erl_db``).

        Returns:
            The duplex decision in force for this reply.
        """
        decision = choose_duplex(self.config, erle_db, canceller=canceller, erl_db=erl_db)
        if decision.mode is not self._decision.mode:
            logger.info("duplex mode: %s", decision)
        self._decision = decision
        self._canceller = canceller
        self._follow = self.config.duplex == "auto" and decision.mode is not DuplexMode.HALF
        self._armed = True
        self._start_position = position
        self.user_speaking = False
        self._reset_run()
        return decision

    def stop(self) -> None:
        """The reply played out (or was interrupted by other means): disarm."""
        self._armed = False
        self.user_speaking = False
        self._reset_run()

    def process(
        self,
        cleaned: NDArray[np.int16],
        raw: NDArray[np.int16],
        echo: EchoFrame | None,
        position: int,
    ) -> BargeIn | None:
        """Judge one capture chunk.

        Args:
            cleaned: the echo-cancelled chunk (``frame_samples`` int16).
            raw: the raw microphone chunk (used for levels when there is no canceller).
            echo: the canceller's :attr:`~earshot.audio.echo.EchoCanceller.frame` for this chunk,
                or None without a canceller.
            position: 16 kHz capture position of the chunk's first sample.

        Returns:
            A :class:`BargeIn` on the chunk that confirms the user's speech, else None.
        """
        if not self._armed:
            return None
        if self._decision.mode is DuplexMode.HALF:
            return None
        if self._follow and echo is not None:
            self._follow_echo(echo.erle_db, echo.erl_db)
        signal = cleaned if echo is not None else raw
        # The VAD hears every chunk, hold-off included: it adapts to the signal and smooths over
        # frames, so fed only the chunks that passed the level test it came to a word cold and
        # took 50 ms longer to call its onset.
        voiced = self._is_speech(signal)
        if position < self._start_position + self._holdoff_samples or (
            echo is not None and (echo.settling or echo.reference_short)
        ):
            # The canceller is (re)converging on the start of the reply, has not yet found where this
            # reply's echo lies behind its reference (on a device that moves from reply to reply), or
            # had no reference for this chunk while the reply played (an underrunning output).
            self.user_speaking = False
            self._reset_run()
            return None

        level = echo.cleaned_dbfs if echo is not None else _dbfs(raw)
        residual = echo.residual_echo_dbfs if echo is not None else level
        peak = echo.residual_peak_dbfs if echo is not None else None
        if peak is not None:
            # The measured bound on the residual's swings: the reliable test once it is known.
            residual = max(residual, peak)
            full_margin = _FULL_PEAK_MARGIN_DB
        else:
            full_margin = _FULL_RESIDUAL_MARGIN_DB
        # Only what the reference does not explain can be the user: the share of the cleaned power that
        # is coherent with it is echo the filter has not learned (EchoFrame.residual_coherence).
        coherence = echo.residual_coherence if echo is not None and USE_COHERENCE else 0.0
        unexplained = level + 10.0 * math.log10(max(_MIN_UNEXPLAINED, 1.0 - coherence))
        margin = unexplained - residual
        needed = self.config.energy_margin_db if self._decision.mode is DuplexMode.GATED else full_margin
        speech = voiced and level >= _SPEECH_FLOOR_DBFS and margin >= needed
        self.user_speaking = speech
        window_start = position - self._window_samples
        while self._run and self._run[0][0] <= window_start:
            self._run.popleft()
        if speech:
            self._run.append((position, level, margin))
        if len(self._run) < self._min_speech_frames:
            return None
        count = len(self._run)
        event = BargeIn(
            position=self._run[0][0],
            detected_position=position,
            mode=self._decision.mode,
            level_dbfs=sum(f[1] for f in self._run) / count,
            margin_db=sum(f[2] for f in self._run) / count,
        )
        logger.info(
            "barge-in (%s): speech from %d, confirmed at %d, %.1f dB over residual echo "
            "(last chunk: mic %.1f, reference %.1f, cleaned %.1f, residual %.1f dBFS; ERLE %s, ERL %s dB)",
            event.mode.value,
            event.position,
            event.detected_position,
            event.margin_db,
            echo.mic_dbfs if echo is not None else _dbfs(raw),
            echo.reference_dbfs if echo is not None else float("nan"),
            level,
            residual,
            f"{echo.erle_db:.1f}" if echo is not None and echo.erle_db is not None else "-",
            f"{echo.erl_db:.1f}" if echo is not None and echo.erl_db is not None else "-",
        )
        self._armed = False
        self._reset_run()
        return event

    def observe_erle(self, erle_db: float | None, erl_db: float | None = None) -> None:
        """Re-pick the duplex mode from a new ERLE (and ERL) between replies (when not armed)."""
        if self._armed:
            return
        decision = choose_duplex(self.config, erle_db, canceller=self._canceller, erl_db=erl_db)
        if decision.mode is not self._decision.mode:
            logger.info("duplex mode: %s", decision)
        self._decision = decision

    def _follow_echo(self, erle_db: float | None, erl_db: float | None) -> None:
        # The echo reduction keeps improving while the canceller converges (and drops when the room
        # changes): follow it during the reply between GATED and FULL, with hysteresis so the mode
        # does not flap at the threshold. HALF is never entered mid-reply: muting the microphone in
        # the middle of a reply would drop a user already talking; the next start() applies it.
        # A quiet echo path (large ERL, e.g. no echo in the microphone at all) is FULL whatever the ERLE.
        full = self.config.full_duplex_erle_db
        mode = self._decision.mode
        still_quiet = erl_db is not None and erl_db >= QUIET_ECHO_ERL_DB - _DUPLEX_HYSTERESIS_DB
        if mode is DuplexMode.GATED and erl_db is not None and erl_db >= QUIET_ECHO_ERL_DB:
            decision = DuplexDecision(DuplexMode.FULL, f"echo path quiet: echo {erl_db:.0f} dB below playback")
        elif mode is DuplexMode.GATED and erle_db is not None and erle_db >= full:
            decision = DuplexDecision(DuplexMode.FULL, f"echo reduction {erle_db:.1f} dB >= {full:g} dB")
        elif (
            mode is DuplexMode.FULL
            and not still_quiet
            and erle_db is not None
            and erle_db < full - _DUPLEX_HYSTERESIS_DB
        ):
            decision = DuplexDecision(
                DuplexMode.GATED, f"echo reduction {erle_db:.1f} dB < {full - _DUPLEX_HYSTERESIS_DB:g} dB"
            )
        else:
            return
        logger.info("duplex mode: %s", decision)
        self._decision = decision

    def _is_speech(self, pcm: NDArray[np.int16]) -> bool:
        if pcm.size != self.frame_samples:
            return False
        try:
            return bool(self._vad.is_speech(pcm.astype("<i2", copy=False).tobytes(), self.rate_hz))
        except Exception:  # noqa: BLE001 - webrtcvad raises a bare Error on odd frames; odd input is not speech
            return False


class WakeGuard:
    """Rejects wakes that the device's own voice (the residual echo) can explain.

    Feed :meth:`observe` with the canceller's frame for every capture chunk; when the wake-word
    engine (fed the cleaned signal) fires, ask :meth:`accept`. The wake phrase is the last
    ``span_s`` before the detection; the chunks of it that overlap playback (reference active) are
    compared with the residual echo predicted for them. The user's voice stands far above that
    prediction in most of its chunks; the device's own voice, cancelled, sits around it. So the wake
    is accepted when the 90th percentile of the per-chunk margins (cleaned level minus predicted
    residual echo and noise) reaches ``margin_db``, or when too little of the phrase overlaps playback.

    Measured here (speexdsp canceller, echo at -6 dB, flite voices): echo-only 1.5 s windows reach a
    90th-percentile margin of 9-10 dB at worst, a user saying the wake word over playback 7-28 dB; so
    this guard is a second line only. The first is that the engine hears the cleaned signal, on
    which the device's own "hey jarvis" did not fire at all in the tests.

    Args:
        margin_db: 90th-percentile margin over the predicted residual echo needed during playback.
        span_s: length of the wake phrase window before the detection.
        min_overlap_frames: fewer playback chunks than this in the window: accept (no echo to blame).
        frame_samples: samples per chunk.
        rate_hz: capture rate.
    """

    def __init__(
        self,
        *,
        margin_db: float = 8.0,
        span_s: float = 1.5,
        min_overlap_frames: int = 5,
        frame_samples: int = 160,
        rate_hz: int = 16000,
    ) -> None:
        self.margin_db = margin_db
        self.frame_samples = frame_samples
        self.min_overlap_frames = min_overlap_frames
        self._span_samples = round(span_s * rate_hz)
        frames = max(1, -(-self._span_samples // frame_samples) + 1)
        # (position, margin of cleaned over predicted residual echo in dB, reference active)
        self._history: deque[tuple[int, float, bool]] = deque(maxlen=frames)
        self.last_reason = ""
        """Why the last :meth:`accept` decided as it did (for logs)."""

    def observe(self, echo: EchoFrame, position: int) -> None:
        """Record one processed capture chunk (call it for every chunk, speaking or not)."""
        self._history.append((position, echo.cleaned_dbfs - echo.residual_echo_dbfs, echo.reference_active))

    def accept(self, end_position: int, start_position: int | None = None) -> bool:
        """Decide whether a wake detected at ``end_position`` is the user's.

        Args:
            end_position: 16 kHz position where the engine fired.
            start_position: where the speech containing it began, if known; the window never
                reaches before it.

        Returns:
            True to wake; False when the phrase overlaps playback and the cleaned signal does not
            stand ``margin_db`` above the predicted residual echo (the device heard itself).
        """
        first = end_position - self._span_samples
        if start_position is not None:
            first = max(first, start_position)
        margins = [
            m for pos, m, act in self._history if act and pos + self.frame_samples > first and pos < end_position
        ]
        if len(margins) < self.min_overlap_frames:
            self.last_reason = f"{len(margins)} chunks of the wake word overlap playback"
            return True
        upper = percentile(np.asarray(margins), 90)
        ok = upper >= self.margin_db
        self.last_reason = (
            f"cleaned signal {upper:.1f} dB over the predicted residual echo during playback "
            f"({'>=' if ok else '<'} {self.margin_db:g} dB)"
        )
        if not ok:
            logger.info("wake rejected: %s", self.last_reason)
        return ok
