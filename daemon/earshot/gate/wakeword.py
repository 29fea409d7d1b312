"""Wake-word engines behind one interface: microwakeword (the default), template, openwakeword, pocketsphinx.

Every engine takes 16 kHz mono int16 in pieces of any length and returns a score when it fires.
Threshold and trigger level (consecutive scores over the threshold) are applied inside the engine;
the refractory period is the gate's (it knows sample positions). All run offline: nothing is
downloaded at run time.
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from earshot.config import WakewordConfig
from earshot.errors import ConfigError
from earshot.gate.mfcc import MfccStream, dtw_distance, mfcc, unit_rows

logger = logging.getLogger(__name__)

RATE_HZ = 16000
MIN_TEMPLATES = 3
TEMPLATE_DEFAULT_THRESHOLD = 0.16
"""template: largest normalised DTW distance (cosine, 0 = identical) that still counts as the phrase."""
OPENWAKEWORD_DEFAULT_THRESHOLD = 0.5
"""openwakeword: model probability."""
OPENWAKEWORD_RESCAN_LEVEL = 0.15
"""openwakeword: a peak at or above this (but under the threshold) is re-scored at other hop phases."""
OPENWAKEWORD_RESCAN_PHASES_MS = (10, 20, 30, 40, 50, 60, 70)
"""openwakeword: offsets (within its 80 ms hop) at which a near miss is re-scored."""
_OWW_RESCAN_AFTER_WINDOWS = 4
"""openwakeword: windows (80 ms) under the rescan level after a near-miss peak before re-scoring, so the
other alignments' peaks (up to a hop later) are in the audio."""
_OWW_HISTORY_SAMPLES = 3 * RATE_HZ
"""openwakeword: audio kept since the last reset for re-scoring (the model looks at ~2 s)."""
MICROWAKEWORD_DEFAULT_THRESHOLD = 0.85
"""microwakeword: the windowed mean probability to exceed. The models' own cutoff (hey_jarvis: 0.97) is
tuned for ESPHome's always-running stream; here the engine restarts at each speech start, and on 20
flite takes of "hey jarvis" (4 voices, tempo and pitch varied) through the gate it heard 15 at 0.97,
18 at 0.9 and 19 at 0.85, while real human prompts and other sentences stayed under 0.31 (only the
rhyme "hey travis" passes, at 0.99, as it does for openWakeWord)."""
MICROWAKEWORD_LEAD_IN_MS = 1000
"""microwakeword: audio before the speech start fed after a reset. The micro front end's noise
reduction and gain control settle on the room over about a second; from a cold start a phrase right
after the reset scores under the cutoff for some voices (measured: 17/20 flite takes after 0.3 s,
19/20 after 1 s)."""
POCKETSPHINX_DEFAULT_THRESHOLD = 1e-20
"""pocketsphinx: ``kws_threshold`` (smaller accepts more)."""


class WakeWordEngine(Protocol):
    """A wake-word detector fed with consecutive 16 kHz audio.

    An engine may also have ``lead_in_ms``: the audio from before the speech start it wants after a
    reset (the gate's default is 300 ms).
    """

    name: str

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Consume more audio; return a detection score when the wake word has just been heard."""
        ...

    def reset(self) -> None:
        """Forget the audio heard so far (the next call starts a fresh stream)."""
        ...


class _Trigger:
    """Threshold plus trigger level: fire on the ``level``-th consecutive score over the threshold."""

    def __init__(self, level: int) -> None:
        self.level = max(1, level)
        self.run = 0
        self.best = 0.0

    def update(self, hit: bool, score: float) -> float | None:
        if not hit:
            self.run = 0
            self.best = 0.0
            return None
        self.run += 1
        self.best = max(self.best, score)
        if self.run >= self.level:
            best = self.best
            self.run = 0
            self.best = 0.0
            return best
        return None


# ------------------------------------------------------------------------------------- template


def trim_silence(pcm16k: NDArray[np.int16], *, margin_ms: int = 50) -> NDArray[np.int16]:
    """Cut leading and trailing silence with webrtcvad (mode 2, 30 ms frames), keeping ``margin_ms``.

    Returns the input unchanged when no speech is found.
    """
    import webrtcvad

    vad = webrtcvad.Vad(2)
    n = RATE_HZ * 30 // 1000
    voiced = [
        i
        for i in range(0, len(pcm16k) - n + 1, n)
        if vad.is_speech(np.ascontiguousarray(pcm16k[i : i + n]).tobytes(), RATE_HZ)
    ]
    if not voiced:
        return pcm16k
    margin = RATE_HZ * margin_ms // 1000
    return pcm16k[max(0, voiced[0] - margin) : min(len(pcm16k), voiced[-1] + n + margin)]


def read_template_wav(path: Path) -> NDArray[np.int16]:
    """Read a template take: a 16 kHz mono 16-bit WAV.

    Raises:
        ConfigError: the file is not in that format.
    """
    try:
        with wave.open(str(path), "rb") as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (RATE_HZ, 1, 2):
                raise ConfigError(f"{path}: templates must be 16 kHz mono 16-bit WAV")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(f"{path}: cannot read template: {exc}") from exc


class _SubsequenceDtw:
    """Streaming subsequence DTW of one template against the stream (free start, free end).

    One column per stream frame: ``D[i]`` is the cheapest path cost of template frames ``0..i``
    ending at the current stream frame, ``start[i]`` the stream frame where that path began.
    """

    def __init__(self, template: NDArray[np.float64]) -> None:
        self.template = template
        self.length = len(template)
        self._index = np.arange(self.length)
        self.reset()

    def reset(self) -> None:
        self.d = np.full(self.length, np.inf)
        self.start = np.zeros(self.length, dtype=np.int64)

    def step(self, frame: NDArray[np.float64], j: int) -> tuple[float, int]:
        """Advance by one (unit-length) stream frame ``j``; return (path cost, start frame) of a full match."""
        c = 1.0 - self.template @ frame
        prev_d, prev_s = self.d, self.start
        # From the left (stream advances, template stays) or the diagonal; row 0 may start afresh.
        diag_d = np.concatenate(([np.inf], prev_d[:-1]))
        diag_s = np.concatenate(([j], prev_s[:-1]))
        take_diag = diag_d < prev_d
        a = c + np.where(take_diag, diag_d, prev_d)
        a_s = np.where(take_diag, diag_s, prev_s)
        a[0], a_s[0] = c[0], j
        # Downwards (template advances, stream stays): D[i] = min(A[i], D[i-1] + c[i]) in closed form.
        s = np.cumsum(c)
        b = a - s
        m = np.minimum.accumulate(b)
        k = np.maximum.accumulate(np.where(b <= m, self._index, 0))
        self.d = s + m
        self.start = a_s[k]
        return float(self.d[-1]), int(self.start[-1])


class TemplateEngine:
    """MFCC + DTW against the user's own recordings, in the manner of Rhasspy's Raven.

    Each stream frame advances a subsequence DTW per template (cheap: a few vector operations); a
    match whose normalised cost comes near the threshold is confirmed by a full DTW with a
    Sakoe-Chiba band between the template and the matched stretch (cosine distance, normalised by
    the summed lengths). The engine fires when the best template's banded distance is at most
    ``threshold``.

    Args:
        templates: trimmed takes of the wake phrase (16 kHz int16); at least :data:`MIN_TEMPLATES`.
        threshold: largest normalised distance accepted.
        trigger_level: consecutive frames under the threshold needed.
        band: Sakoe-Chiba band as a fraction of the longer sequence.

    Raises:
        ConfigError: fewer than :data:`MIN_TEMPLATES` usable templates.
    """

    name = "template"

    def __init__(
        self,
        templates: list[NDArray[np.int16]],
        *,
        threshold: float = TEMPLATE_DEFAULT_THRESHOLD,
        trigger_level: int = 1,
        band: float = 0.3,
    ) -> None:
        feats = [mfcc(t) for t in templates]
        feats = [f for f in feats if len(f) >= 10]
        if len(feats) < MIN_TEMPLATES:
            raise ConfigError(
                f"gate.wakeword: the template engine needs at least {MIN_TEMPLATES} enrolled takes, "
                f"found {len(feats)} (run `earshot enroll`)"
            )
        self.threshold = threshold
        self.band = band
        self._templates = [unit_rows(f) for f in feats]
        self._dtws = [_SubsequenceDtw(t) for t in self._templates]
        self._max_len = max(len(t) for t in self._templates)
        self._ring_frames = 2 * self._max_len + 10
        self._trigger = _Trigger(trigger_level)
        self._mfcc = MfccStream()
        self.frames_processed = 0
        self.last_distance = float("inf")
        self.reset()

    def reset(self) -> None:
        """Forget the stream."""
        self._mfcc.reset()
        for d in self._dtws:
            d.reset()
        self._ring = np.zeros((self._ring_frames, self._templates[0].shape[1]))
        self._j = 0
        self._trigger.run = 0
        self._cooldown = 0

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Consume audio; return ``1 - distance`` when the phrase has just ended in it."""
        fired: float | None = None
        for frame in unit_rows(self._mfcc.process(pcm16k)):
            self._ring[self._j % self._ring_frames] = frame
            score = self._step(frame)
            self._j += 1
            self.frames_processed += 1
            if score is not None and fired is None:
                fired = score
        return fired

    def _step(self, frame: NDArray[np.float64]) -> float | None:
        best = float("inf")
        for dtw in self._dtws:
            cost, start = dtw.step(frame, self._j)
            length = self._j - start + 1
            if not 0.6 * dtw.length <= length <= 1.7 * dtw.length or length > self._j + 1:
                continue
            # Candidate: confirm with the banded DTW (Raven's comparison) on the matched stretch.
            if cost / (dtw.length + length) <= self.threshold * 1.15:
                idx = np.arange(start, self._j + 1) % self._ring_frames
                best = min(best, dtw_distance(dtw.template, self._ring[idx], band=self.band))
        self.last_distance = best
        hit = best <= self.threshold
        return self._trigger.update(hit, 1.0 - best if hit else 0.0)


def load_templates(directory: Path) -> list[NDArray[np.int16]]:
    """The enrolled takes in ``directory`` (``*.wav``, sorted by name), silence trimmed."""
    if not directory.is_dir():
        return []
    return [trim_silence(read_template_wav(p)) for p in sorted(directory.glob("*.wav"))]


# -------------------------------------------------------------------------------- microwakeword


class MicroWakeWordEngine:
    """microWakeWord models through ``pymicro-wakeword`` (the TFLite C library is in its wheel).

    The engine Home Assistant Voice PE and linux-voice-assistant run on far smaller machines: a
    streaming model over 10 ms micro-frontend features, one inference per 30 ms, costing a fraction
    of a percent of a core here. The probability is the mean over the model's sliding window (its
    JSON ``sliding_window_size``); see :data:`MICROWAKEWORD_DEFAULT_THRESHOLD` for the default threshold.

    Args:
        model: a bundled model name (``hey_jarvis``, ``okay_nabu``, ``hey_mycroft``, ``alexa``) or
            the path of a model's ``.json`` (beside its ``.tflite``).
        threshold: mean probability above which a window counts; None uses
            :data:`MICROWAKEWORD_DEFAULT_THRESHOLD`.
        trigger_level: consecutive windows (30 ms each) over the threshold needed.

    Raises:
        ConfigError: the package or the model is missing.
    """

    def __init__(self, model: str, *, threshold: float | None = None, trigger_level: int = 1) -> None:
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError as exc:  # a core dependency: only a broken install gets here
            raise ConfigError("gate.wakeword.engine microwakeword: pymicro-wakeword is not installed") from exc
        try:
            builtin = Model(model)
        except ValueError:
            builtin = None
        try:
            if builtin is not None:
                self._mww: Any = MicroWakeWord.from_builtin(builtin)
            else:
                path = Path(model).expanduser()
                if path.suffix != ".json" or not path.is_file():
                    raise ConfigError(
                        f"gate.wakeword.model: {model!r} is neither a bundled microWakeWord model "
                        f"({', '.join(m.value for m in Model)}) nor an existing model .json"
                    )
                self._mww = MicroWakeWord.from_config(path)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"gate.wakeword.model: cannot load {model!r}: {exc}") from exc
        self._features: Any = MicroWakeWordFeatures()
        self.name = f"microwakeword:{self._mww.id}"
        self.lead_in_ms = MICROWAKEWORD_LEAD_IN_MS
        self.threshold = MICROWAKEWORD_DEFAULT_THRESHOLD if threshold is None else threshold
        self._trigger = _Trigger(trigger_level)
        self.last_score = 0.0
        self.peak = 0.0
        """The highest score since the last reset (the gate logs it at debug level: threshold tuning)."""

    def reset(self) -> None:
        """Start a fresh stream (the model's streaming state is reloaded: ~0.1 ms)."""
        self._features.reset()
        self._mww.reset()
        self._trigger.run = 0
        self._trigger.best = 0.0
        self.last_score = 0.0
        self.peak = 0.0

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Consume audio; return the mean probability when the model fires."""
        pcm = np.ascontiguousarray(pcm16k, dtype="<i2")
        fired: float | None = None
        for features in self._features.process_streaming(pcm.tobytes()):
            prob = self._mww.process_streaming_prob(features)
            if prob is None:
                continue
            self.last_score = float(prob)
            self.peak = max(self.peak, self.last_score)
            hit = self._trigger.update(self.last_score > self.threshold, self.last_score)
            if hit is not None and fired is None:
                fired = hit
        return fired


# ---------------------------------------------------------------------------------- openwakeword


class OpenWakeWordEngine:
    """openWakeWord models through ``pyopen-wakeword`` (TFLite C library bundled in the wheel).

    openWakeWord scores one window per 80 ms hop, and where the hop falls within the phrase matters:
    a take that scores 0.8 at one alignment may score 0.4 at another 20 ms away. The engine scores
    the stream at one alignment; when a peak rises to :data:`OPENWAKEWORD_RESCAN_LEVEL` but stays under
    the threshold, it re-scores the audio heard since the last reset at the offsets of
    :data:`OPENWAKEWORD_RESCAN_PHASES_MS` (the same model and threshold at a finer hop) and fires if
    one of them crosses. The extra work happens only on near misses, never in a quiet room.

    Args:
        model: a bundled model name (``hey_jarvis``, ``alexa``, ``hey_mycroft``, ``hey_rhasspy``,
            ``okay_nabu``) or the path of a ``.tflite`` model.
        threshold: probability at or above which a window counts.
        trigger_level: consecutive windows (80 ms each) over the threshold needed.

    Raises:
        ConfigError: the package or the model is missing.
    """

    def __init__(
        self, model: str, *, threshold: float = OPENWAKEWORD_DEFAULT_THRESHOLD, trigger_level: int = 1
    ) -> None:
        try:
            from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures
        except ImportError as exc:
            raise ConfigError("gate.wakeword.engine openwakeword: install the extra earshot[openwakeword]") from exc
        try:
            builtin = Model(model)
        except ValueError:
            builtin = None
        try:
            if builtin is not None:
                self._oww: Any = OpenWakeWord.from_builtin(builtin)
            else:
                path = Path(model).expanduser()
                if not path.is_file():
                    raise ConfigError(
                        f"gate.wakeword.model: {model!r} is neither a bundled model "
                        f"({', '.join(m.value for m in Model)}) nor an existing file"
                    )
                self._oww = OpenWakeWord.from_model(path)
            self._features: Any = OpenWakeWordFeatures.from_builtin()
        except OSError as exc:
            raise ConfigError(f"gate.wakeword.model: cannot load {model!r}: {exc}") from exc
        self.name = f"openwakeword:{self._oww.id}"
        self.threshold = threshold
        self.trigger_level = trigger_level
        self._trigger = _Trigger(trigger_level)
        self.last_score = 0.0
        self.rescans = 0
        """Near misses re-scored at other hop phases (statistics)."""
        self._history: list[NDArray[np.int16]] = []
        self._history_len = 0
        self._peak = 0.0
        self._since_peak = 0
        # The feature extractor starts with 8 s of digital silence to compute; do it once and keep
        # that settled state, so reset() (at every speech start) is a copy, not 100 model calls.
        for emb in self._features.process_streaming(np.zeros(1280, dtype=np.int16).tobytes()):
            for _ in self._oww.process_streaming(emb):
                pass
        self._snapshot = self._state()

    def _state(self) -> tuple[Any, ...]:
        f, o = self._features, self._oww
        return (f.audio.copy(), f.new_audio_samples, f.mels.copy(), f.new_mels, o.embeddings.copy(), o.new_embeddings)

    def reset(self) -> None:
        """Return to the settled silent state."""
        self._restore(self._snapshot)
        self._trigger.run = 0
        self._trigger.best = 0.0
        self.last_score = 0.0
        self._history = []
        self._history_len = 0
        self._peak = 0.0
        self._since_peak = 0

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Consume audio; return the probability when the model fires."""
        pcm = np.ascontiguousarray(pcm16k, dtype=np.int16)
        if len(pcm) == 0:
            return None
        self._remember(pcm)
        fired: float | None = None
        for prob in self._scores(pcm):
            self.last_score = prob
            hit = self._trigger.update(prob >= self.threshold, prob)
            if hit is not None and fired is None:
                fired = hit
            if fired is not None:
                continue
            if prob >= OPENWAKEWORD_RESCAN_LEVEL:
                self._peak = max(self._peak, prob)
                self._since_peak = 0
            elif self._peak > 0.0:
                self._since_peak += 1
                if self._since_peak >= _OWW_RESCAN_AFTER_WINDOWS:
                    # A near miss is well past its peak: look again at the other alignments.
                    self._peak = 0.0
                    fired = self._rescan()
        return fired

    def _scores(self, pcm: NDArray[np.int16]) -> list[float]:
        return [
            float(prob)
            for emb in self._features.process_streaming(pcm.astype("<i2", copy=False).tobytes())
            for prob in self._oww.process_streaming(emb)
        ]

    def _remember(self, pcm: NDArray[np.int16]) -> None:
        self._history.append(pcm.copy())
        self._history_len += len(pcm)
        while self._history_len - len(self._history[0]) >= _OWW_HISTORY_SAMPLES:
            self._history_len -= len(self._history.pop(0))

    def _rescan(self) -> float | None:
        """Score the remembered audio again at other hop phases; the best firing score, if any."""
        self.rescans += 1
        live = self._state()
        audio = np.concatenate(self._history)
        best: float | None = None
        try:
            for offset_ms in OPENWAKEWORD_RESCAN_PHASES_MS:
                self._restore(self._snapshot)
                trigger = _Trigger(self.trigger_level)
                for prob in self._scores(audio[RATE_HZ * offset_ms // 1000 :]):
                    hit = trigger.update(prob >= self.threshold, prob)
                    if hit is not None:
                        best = hit if best is None else max(best, hit)
        finally:
            self._restore(live)
        if best is not None:
            logger.debug("openwakeword: near miss confirmed at another hop phase (%.2f)", best)
        return best

    def _restore(self, state: tuple[Any, ...]) -> None:
        audio, new_audio, mels, new_mels, emb, new_emb = state
        f, o = self._features, self._oww
        f.audio[:] = audio
        f.new_audio_samples = new_audio
        f.mels[:] = mels
        f.new_mels = new_mels
        o.embeddings[:] = emb
        o.new_embeddings = new_emb


# ---------------------------------------------------------------------------------- pocketsphinx


class PocketsphinxEngine:
    """Keyphrase spotting with pocketsphinx's English model: any phrase of its dictionary, no training.

    Args:
        keyphrase: the phrase, in words of the CMU dictionary.
        threshold: ``kws_threshold`` (1e-50 … 1e-5; smaller accepts more).
        trigger_level: unused by the spotter beyond 1 (it reports each keyphrase once).

    Raises:
        ConfigError: the package is missing or a word is not in the dictionary.
    """

    name = "pocketsphinx"

    def __init__(
        self, keyphrase: str, *, threshold: float = POCKETSPHINX_DEFAULT_THRESHOLD, trigger_level: int = 1
    ) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise ConfigError("gate.wakeword.engine pocketsphinx: install the extra earshot[pocketsphinx]") from exc
        phrase = " ".join(keyphrase.lower().split())
        if not phrase:
            raise ConfigError("gate.wakeword.keyphrase: empty")
        try:
            self._decoder: Any = Decoder(keyphrase=phrase, kws_threshold=threshold, loglevel="FATAL")
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"gate.wakeword.keyphrase {phrase!r}: {exc}") from exc
        missing = [w for w in phrase.split() if self._decoder.lookup_word(w) is None]
        if missing:
            raise ConfigError(f"gate.wakeword.keyphrase: not in the dictionary: {', '.join(missing)}")
        self.keyphrase = phrase
        self._trigger = _Trigger(trigger_level)
        self._in_utt = False

    def reset(self) -> None:
        """End the current utterance; the next audio starts a new one."""
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        self._trigger.run = 0

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Consume audio; return 1.0 when the keyphrase was spotted."""
        if not self._in_utt:
            self._decoder.start_utt()
            self._in_utt = True
        self._decoder.process_raw(np.ascontiguousarray(pcm16k, dtype="<i2").tobytes(), False, False)
        if self._decoder.hyp() is None:
            return None
        # Restart the utterance so one phrase is reported once.
        self._decoder.end_utt()
        self._decoder.start_utt()
        return self._trigger.update(True, 1.0)


# ------------------------------------------------------------------------------------- factory


def build_wakeword(config: WakewordConfig, state_dir: Path) -> WakeWordEngine:
    """The engine ``gate.wakeword`` names, ready to run.

    Args:
        config: the ``gate.wakeword`` section.
        state_dir: the daemon's state directory (templates default to ``<state_dir>/wakeword``).

    Raises:
        ConfigError: the engine cannot be built (missing extra, model, or enrolment).
    """
    if config.engine == "template":
        directory = config.templates_dir or state_dir / "wakeword"
        templates = load_templates(directory)
        return TemplateEngine(
            templates,
            threshold=config.threshold if config.threshold is not None else TEMPLATE_DEFAULT_THRESHOLD,
            trigger_level=config.trigger_level,
        )
    if config.engine == "microwakeword":
        return MicroWakeWordEngine(config.model, threshold=config.threshold, trigger_level=config.trigger_level)
    if config.engine == "openwakeword":
        return OpenWakeWordEngine(
            config.model,
            threshold=config.threshold if config.threshold is not None else OPENWAKEWORD_DEFAULT_THRESHOLD,
            trigger_level=config.trigger_level,
        )
    return PocketsphinxEngine(
        config.keyphrase,
        threshold=config.threshold if config.threshold is not None else POCKETSPHINX_DEFAULT_THRESHOLD,
        trigger_level=config.trigger_level,
    )
