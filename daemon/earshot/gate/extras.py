"""The optional wake-word engines: openWakeWord and pocketsphinx.

They come with the extras ``earshot[openwakeword]`` and ``earshot[pocketsphinx]``; each library is
imported only when its engine is configured.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.errors import ConfigError
from earshot.gate.trigger import RATE_HZ, Trigger, bundled_or_file

__all__ = [
    "OPENWAKEWORD_DEFAULT_THRESHOLD",
    "POCKETSPHINX_DEFAULT_THRESHOLD",
    "OpenWakeWordEngine",
    "PocketsphinxEngine",
]

logger = logging.getLogger("earshot.gate.wakeword")

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
POCKETSPHINX_DEFAULT_THRESHOLD = 1e-20
"""pocketsphinx: ``kws_threshold`` (smaller accepts more)."""


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
        found = bundled_or_file(model, Model, kind="")
        try:
            if isinstance(found, Path):
                self._oww: Any = OpenWakeWord.from_model(found)
            else:
                self._oww = OpenWakeWord.from_builtin(found)
            self._features: Any = OpenWakeWordFeatures.from_builtin()
        except OSError as exc:
            raise ConfigError(f"gate.wakeword.model: cannot load {model!r}: {exc}") from exc
        self.name = f"openwakeword:{self._oww.id}"
        self.threshold = threshold
        self.trigger_level = trigger_level
        self._trigger = Trigger(trigger_level)
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
                trigger = Trigger(self.trigger_level)
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
            from pocketsphinx import Decoder, get_model_path
        except ImportError as exc:
            raise ConfigError("gate.wakeword.engine pocketsphinx: install the extra earshot[pocketsphinx]") from exc
        phrase = " ".join(keyphrase.lower().split())
        if not phrase:
            raise ConfigError("gate.wakeword.keyphrase: empty")
        try:
            prons = _pronunciations(Path(get_model_path()) / "en-us" / "cmudict-en-us.dict", phrase.split())
        except OSError as exc:
            raise ConfigError(f"gate.wakeword.keyphrase: the dictionary cannot be read: {exc}") from exc
        missing = [w for w in phrase.split() if not any(p[0] == w for p in prons)]
        if missing:
            raise ConfigError(f"gate.wakeword.keyphrase: not in the dictionary: {', '.join(missing)}")
        try:
            # Keyphrase search needs neither the language model (27 MB) nor the whole dictionary
            # (3 MB): the phrase's own words only, so the decoder costs ~6 MB instead of ~28 MB.
            self._decoder: Any = Decoder(lm=None, dict=None, kws_threshold=threshold, loglevel="FATAL")
            for i, (word, phones) in enumerate(prons):
                self._decoder.add_word(word, phones, i == len(prons) - 1)
            self._decoder.add_keyphrase("keyphrase", phrase)
            self._decoder.activate_search("keyphrase")
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"gate.wakeword.keyphrase {phrase!r}: {exc}") from exc
        self.keyphrase = phrase
        self._trigger = Trigger(trigger_level)
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


def _pronunciations(dictionary: Path, words: list[str]) -> list[tuple[str, str]]:
    """Every pronunciation (``word``, ``word(2)``…) of ``words`` in a CMU dictionary file, in one pass."""
    data = dictionary.read_bytes()
    out: list[tuple[str, str]] = []
    for word in dict.fromkeys(words):
        pattern = rb"^(" + re.escape(word.encode()) + rb"(?:\(\d+\))?) ([^\n]+)$"
        out += [(w.decode(), p.decode().strip()) for w, p in re.findall(pattern, data, re.M)]
    return out
