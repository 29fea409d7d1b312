"""The template wake-word engine: your own phrase, enrolled as a few takes, matched by MFCC and DTW.

``earshot enroll`` records the takes (:mod:`earshot.gate.enroll`); :class:`TemplateEngine` matches
the live MFCC stream against each by subsequence DTW. Pure numpy and webrtcvad (for trimming takes).
"""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.errors import ConfigError
from earshot.gate.mfcc import MfccStream, dtw_distance, mfcc, unit_rows
from earshot.gate.trigger import RATE_HZ, Trigger

__all__ = [
    "MIN_TEMPLATES",
    "TEMPLATE_DEFAULT_THRESHOLD",
    "TemplateEngine",
    "load_templates",
    "read_template_wav",
    "trim_silence",
]

logger = logging.getLogger("earshot.gate.wakeword")

MIN_TEMPLATES = 3
TEMPLATE_DEFAULT_THRESHOLD = 0.16
"""template: largest normalised DTW distance (cosine, 0 = identical) that still counts as the phrase."""


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
        self._trigger = Trigger(trigger_level)
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
