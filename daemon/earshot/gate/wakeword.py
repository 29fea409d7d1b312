"""Wake-word engines behind one interface: microwakeword (the default), template, openwakeword, pocketsphinx.

Every engine takes 16 kHz mono int16 in pieces of any length and returns a score when it fires.
Threshold and trigger level (consecutive scores over the threshold) are applied inside the engine;
the refractory period is the gate's (it knows sample positions). All run offline: nothing is
downloaded at run time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from earshot.config import StopWordConfig, WakewordConfig, WakewordEntryConfig
from earshot.errors import ConfigError
from earshot.gate.extras import (
    OPENWAKEWORD_DEFAULT_THRESHOLD,
    POCKETSPHINX_DEFAULT_THRESHOLD,
    OpenWakeWordEngine,
    PocketsphinxEngine,
)
from earshot.gate.template import (
    MIN_TEMPLATES,
    TEMPLATE_DEFAULT_THRESHOLD,
    TemplateEngine,
    load_templates,
    read_template_wav,
    trim_silence,
)
from earshot.gate.trigger import RATE_HZ, Trigger, bundled_or_file

__all__ = [
    "MICROWAKEWORD_DEFAULT_THRESHOLD",
    "MIN_TEMPLATES",
    "OPENWAKEWORD_DEFAULT_THRESHOLD",
    "POCKETSPHINX_DEFAULT_THRESHOLD",
    "RATE_HZ",
    "STOP_POCKETSPHINX_THRESHOLD",
    "STOP_TEMPLATE_THRESHOLD",
    "TEMPLATE_DEFAULT_THRESHOLD",
    "MicroWakeWordEngine",
    "OpenWakeWordEngine",
    "PocketsphinxEngine",
    "TemplateEngine",
    "WakeWordEngine",
    "WakeWords",
    "build_stop_word",
    "build_wakeword",
    "load_templates",
    "read_template_wav",
    "trim_silence",
]

logger = logging.getLogger(__name__)

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


STOP_TEMPLATE_THRESHOLD = 0.11
"""template engine, stop phrase: a single syllable matches more of other speech than a wake phrase does.
Measured on flite takes (4 voices, each enrolled with three takes of "stop"): 24/24 other takes of
"stop" heard at 0.10–0.16, while 7 other sentences per voice fired 5/28 times at the wake word's 0.16,
2/28 at 0.14 and 0/28 at 0.12 (9 real human prompts against each enrolment: none fired at any)."""


STOP_POCKETSPHINX_THRESHOLD = 1e-10
"""pocketsphinx, stop phrase: on flite takes (4 voices, tempo and pitch varied) 14/16 heard at 1e-10,
as at 1e-15; 1/9 real human prompts and one reply sentence ("the rest of the week") fired at 1e-15
and none at 1e-10 (sentences that contain "stop", and "shop", fire at every threshold). Through the
canceller's residual suppressor, which distorts a user talking over the reply (0.47 correlation with
what was said), it still hears "stop" where the template engine does not."""


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
        found = bundled_or_file(model, Model, kind="microWakeWord ", suffix=".json")
        try:
            if isinstance(found, Path):
                self._mww: Any = MicroWakeWord.from_config(found)
            else:
                self._mww = MicroWakeWord.from_builtin(found)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"gate.wakeword.model: cannot load {model!r}: {exc}") from exc
        self._features: Any = MicroWakeWordFeatures()
        self.name = f"microwakeword:{self._mww.id}"
        self.lead_in_ms = MICROWAKEWORD_LEAD_IN_MS
        self.threshold = MICROWAKEWORD_DEFAULT_THRESHOLD if threshold is None else threshold
        self._trigger = Trigger(trigger_level)
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


# --------------------------------------------------------------------------------------- factory


class WakeWords:
    """Several wake words heard at once: each its own engine, fed the same audio (``gate.wakeword.also``).

    :attr:`word` says which one fired last: 0 for ``gate.wakeword``'s own, ``i + 1`` for ``also[i]``;
    the core picks that word's profile. When two fire on the same audio, the higher score wins.
    """

    def __init__(self, engines: list[WakeWordEngine]) -> None:
        if not engines:
            raise ValueError("no wake word")
        self._engines = engines
        self.names = [e.name for e in engines]
        self.word = 0
        self.name = engines[0].name
        self.lead_in_ms = max(int(getattr(e, "lead_in_ms", 0)) for e in engines)

    @property
    def peak(self) -> float:
        """The highest score since the last reset, over the words (threshold tuning)."""
        return max((float(getattr(e, "peak", 0.0)) for e in self._engines), default=0.0)

    def reset(self) -> None:
        """Start every word's engine afresh."""
        for engine in self._engines:
            engine.reset()

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        """Feed every word's engine; the best score among those that fired (:attr:`word`, :attr:`name`)."""
        best: float | None = None
        for i, engine in enumerate(self._engines):
            score = engine.process(pcm16k)
            if score is not None and (best is None or score > best):
                best, self.word, self.name = score, i, engine.name
        return best


def build_wakeword(config: WakewordConfig, state_dir: Path) -> WakeWordEngine:
    """The engine ``gate.wakeword`` names, ready to run: one word, or :class:`WakeWords` with ``also``.

    Args:
        config: the ``gate.wakeword`` section.
        state_dir: the daemon's state directory (templates default to ``<state_dir>/wakeword``).

    Raises:
        ConfigError: the engine cannot be built (missing extra, model, or enrolment).
    """
    first = _build_one(
        config.engine,
        model=config.model,
        keyphrase=config.keyphrase,
        templates_dir=config.templates_dir or state_dir / "wakeword",
        threshold=config.threshold,
        trigger_level=config.trigger_level,
        key="gate.wakeword",
    )
    if not config.also:
        return first
    engines = [first]
    for i, entry in enumerate(config.also):
        engines.append(_build_entry(config, entry, f"gate.wakeword.also[{i}]"))
    return WakeWords(engines)


def build_stop_word(config: StopWordConfig, state_dir: Path) -> WakeWordEngine | None:
    """The engine that listens for the stop phrase (``gate.stop_word``), or None (off, or auto with no takes).

    Raises:
        ConfigError: an engine named explicitly cannot be built.
    """
    directory = config.templates_dir or state_dir / "stopword"
    engine = config.engine
    if engine == "off":
        return None
    if engine == "auto":
        # Not pocketsphinx, even when installed: 300 us per 10 ms chunk here while it hears speech, 12
        # times that on a Pi Zero 2 W / Pi 3 core (about a third of it), and 8.8 MB more RSS in the
        # pi tier (70.6 MB against 61.8). It is a choice for a Pi 4 or 5.
        if len(load_templates(directory)) < MIN_TEMPLATES:
            logger.info("stop word: none (enrol one with `earshot enroll --stop`, or set gate.stop_word.engine)")
            return None
        engine = "template"
    threshold = config.threshold
    if threshold is None and engine == "template":
        threshold = STOP_TEMPLATE_THRESHOLD
    if threshold is None and engine == "pocketsphinx":
        threshold = STOP_POCKETSPHINX_THRESHOLD
    built = _build_one(
        engine,
        model=config.model or "",
        keyphrase=config.keyphrase,
        templates_dir=directory,
        threshold=threshold,
        trigger_level=1,
        key="gate.stop_word",
    )
    logger.info("stop word: %s", built.name)
    return built


def _build_entry(config: WakewordConfig, entry: WakewordEntryConfig, key: str) -> WakeWordEngine:
    return _build_one(
        config.engine,
        model=entry.model,
        keyphrase=entry.keyphrase,
        templates_dir=entry.templates_dir,
        threshold=entry.threshold if entry.threshold is not None else config.threshold,
        trigger_level=config.trigger_level,
        key=key,
    )


def _build_one(
    engine: str,
    *,
    model: str,
    keyphrase: str,
    templates_dir: Path | None,
    threshold: float | None,
    trigger_level: int,
    key: str,
) -> WakeWordEngine:
    try:
        if engine == "template":
            templates = load_templates(templates_dir) if templates_dir is not None else []
            tpl = TemplateEngine(
                templates,
                threshold=threshold if threshold is not None else TEMPLATE_DEFAULT_THRESHOLD,
                trigger_level=trigger_level,
            )
            if templates_dir is not None and key != "gate.wakeword":
                tpl.name = f"template:{templates_dir.name}"
            return tpl
        if engine == "microwakeword":
            return MicroWakeWordEngine(model, threshold=threshold, trigger_level=trigger_level)
        if engine == "openwakeword":
            return OpenWakeWordEngine(
                model,
                threshold=threshold if threshold is not None else OPENWAKEWORD_DEFAULT_THRESHOLD,
                trigger_level=trigger_level,
            )
        return PocketsphinxEngine(
            keyphrase,
            threshold=threshold if threshold is not None else POCKETSPHINX_DEFAULT_THRESHOLD,
            trigger_level=trigger_level,
        )
    except ConfigError as exc:
        # The engines name gate.wakeword; say which word of which section could not be built.
        message = str(exc)
        if key != "gate.wakeword":
            message = message.replace("gate.wakeword", key, 1) if message.startswith("gate.wakeword") else message
            if not message.startswith(key):
                message = f"{key}: {message}"
            if key == "gate.stop_word":
                message = message.replace("`earshot enroll`", "`earshot enroll --stop`")
        raise ConfigError(message) from exc
