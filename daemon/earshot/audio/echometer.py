"""What the echo canceller measures, and the frame it reports for every capture chunk.

The echo return loss (ERL, reference power to microphone power) and the echo return loss
enhancement (ERLE, microphone power to cleaned power), both on echo-only stretches (reference
playing, no near-end speech); the noise floor of the cleaned signal (minimum statistics); and a low
percentile of the gap between the loudest recent reference frame and the cleaned level on echo-only
frames (:attr:`EchoMeter.peak_gap_db`), from which the residual echo's loudest moments are
predicted (see :mod:`earshot.audio.echo`). Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from earshot.audio.dsp import percentile

__all__ = [
    "FULL_SCALE_POWER",
    "IDLE_FRAME",
    "QUIET_ECHO_ERL_DB",
    "SILENCE_DBFS",
    "EchoFrame",
    "EchoMeter",
    "dbfs",
    "power",
]

FULL_SCALE_POWER = 32768.0**2
SILENCE_DBFS = -120.0
QUIET_ECHO_ERL_DB = 30.0
"""An echo return loss at or above this (the echo at least 30 dB below what is played) is a quiet
echo path: no echo worth cancelling reaches the microphone (full duplex is safe whatever the ERLE, and
there is no echo delay to measure)."""
# Recompute the peak-gap percentile after this many new frames (a partition of a few thousand floats).
_GAP_EVERY = 50


def dbfs(power: float) -> float:
    """Mean power of int16 samples (squared sample values) as dB relative to full scale, floored at -120."""
    if power <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(power / FULL_SCALE_POWER))


def power(pcm: NDArray[np.int16]) -> float:
    """Mean power of int16 samples (squared sample values, 0 for none)."""
    if pcm.size == 0:
        return 0.0
    x = pcm.astype(np.float32)
    return float(np.dot(x, x)) / pcm.size


@dataclass(frozen=True, slots=True)
class EchoFrame:
    """What the canceller knows about the capture chunk it just processed.

    Attributes:
        mic_dbfs: level of the raw microphone chunk.
        cleaned_dbfs: level of the echo-cancelled chunk.
        reference_dbfs: level of the reference over the filter span (the audio that can still echo).
        echo_dbfs: predicted echo level in the raw microphone (reference + measured ERL); the
            microphone level itself while the ERL is not measured yet; -120 with no reference.
        residual_echo_dbfs: predicted level of the cleaned signal without near-end speech: the echo
            left after cancellation (echo estimate - measured ERLE) plus the cleaned signal's noise
            floor; the echo estimate itself while the ERLE is not measured yet; -120 when bypassed.
        noise_floor_dbfs: tracked noise floor of the cleaned signal (minimum statistics).
        erle_db: the echo reduction measured so far (:attr:`~earshot.audio.echo.EchoCanceller.erle_db`), or None.
        reference_active: the reference had energy within the filter span.
        bypassed: the chunk was passed through untouched (no reference for a while).
        erl_db: the echo return loss measured so far (:attr:`~earshot.audio.echo.EchoCanceller.erl_db`), or None.
        reference_peak_dbfs: level of the loudest 10 ms of reference within the filter span.
        residual_peak_dbfs: the loudest the residual echo gets in this frame in all but about 2 % of
            echo-only frames (reference peak - :attr:`EchoMeter.peak_gap_db`); -120 when bypassed
            or with no reference, None while the gap is not measured yet.
        settling: a new pairing of reference and capture is not aligned yet (or was just moved) while
            loud reference plays: the echo may be far louder than the predictions say.
        echo_possible: some 10 ms of the reference within the filter span was above the reference
            floor, so this chunk can hold echo or what the filter predicts of it. Wider than
            ``reference_active`` (the span's mean above the floor), which ends while the quiet end of
            a sound is still in the span and the filter still subtracts an echo of it (measured: up
            to 54 LSB, -56 dBFS, out of a digitally silent microphone after an earcon).
        reference_short: the reference ran short for this chunk while its sound still played (the
            output underran, or the reference came late): the zero-padded reference said silence,
            so the echo in the chunk is unknown.
        residual_coherence: the largest normalised correlation of the cleaned chunk with the reference
            around the echo's delay (:mod:`earshot.audio.coherence`): near 1 when what is left is the
            echo itself, low for a voice over it; 0 when not measured (no reference, or a cleaned
            chunk at the noise floor).
    """

    mic_dbfs: float
    cleaned_dbfs: float
    reference_dbfs: float
    echo_dbfs: float
    residual_echo_dbfs: float
    noise_floor_dbfs: float
    erle_db: float | None
    reference_active: bool
    bypassed: bool
    erl_db: float | None = None
    reference_peak_dbfs: float = SILENCE_DBFS
    residual_peak_dbfs: float | None = None
    settling: bool = False
    echo_possible: bool = False
    residual_coherence: float = 0.0
    reference_short: bool = False


IDLE_FRAME = EchoFrame(
    mic_dbfs=SILENCE_DBFS,
    cleaned_dbfs=SILENCE_DBFS,
    reference_dbfs=SILENCE_DBFS,
    echo_dbfs=SILENCE_DBFS,
    residual_echo_dbfs=SILENCE_DBFS,
    noise_floor_dbfs=SILENCE_DBFS,
    erle_db=None,
    reference_active=False,
    bypassed=True,
)


class EchoMeter:
    """ERL and ERLE on echo-only frames, the residual's peak gap, and the cleaned signal's noise floor.

    Args:
        frames_per_s: capture chunks per second.
        erle_time_constant_s: forgetting time of the ERL/ERLE measurement, in echo-only audio.
        min_measure_s: echo-only audio needed before ERL/ERLE are reported.
        double_talk_margin_db: a frame whose microphone level exceeds the predicted echo by this much
            is taken as near-end speech and left out of the measurement.
        peak_gap_percentile: the percentile of the gap taken as :attr:`peak_gap_db`.
        peak_gap_frames: how many recent echo-only frames the percentile is taken over.
        min_peak_gap_frames: echo-only frames needed before :attr:`peak_gap_db` is reported.
    """

    def __init__(
        self,
        frames_per_s: float,
        *,
        erle_time_constant_s: float,
        min_measure_s: float,
        double_talk_margin_db: float,
        peak_gap_percentile: float,
        peak_gap_frames: int,
        min_peak_gap_frames: int,
    ) -> None:
        self._forget = math.exp(-1.0 / (erle_time_constant_s * frames_per_s))
        self._min_measure_frames = max(1, round(min_measure_s * frames_per_s))
        self._dt_margin = 10.0 ** (double_talk_margin_db / 10.0)
        self._sum_mic = 0.0
        self._sum_ref = 0.0
        self._sum_out = 0.0
        self._measured_frames = 0
        self.floor_dbfs = 0.0
        """The cleaned signal's noise floor (the first processed chunk pulls it down)."""
        self._floor_rise_db = 3.0 / frames_per_s  # 3 dB/s
        # The reference-peak-to-cleaned gap on recent echo-only frames with residual above the noise
        # (a ring), and its low percentile, recomputed every _GAP_EVERY new frames.
        self._gaps = np.zeros(max(1, peak_gap_frames), dtype=np.float32)
        self._gap_count = 0
        self._gap_pending = 0
        self._gap_percentile = peak_gap_percentile
        self._min_gap_frames = max(1, min(min_peak_gap_frames, self._gaps.size))
        self._peak_gap_db: float | None = None

    def follow_floor(self, cleaned_dbfs: float) -> None:
        """Minimum statistics: follow dips at once, rise slowly (speech never holds a floor up)."""
        self.floor_dbfs = min(self.floor_dbfs + self._floor_rise_db, cleaned_dbfs)

    def above_floor(self, echo_dbfs: float) -> float:
        """A residual echo level plus the noise the cleaned signal never goes below (powers add)."""
        return dbfs(FULL_SCALE_POWER * (10.0 ** (echo_dbfs / 10.0) + 10.0 ** (self.floor_dbfs / 10.0)))

    def observe_gap(self, gap_db: float) -> None:
        """One echo-only frame's gap between the loudest recent reference and the cleaned level."""
        self._gaps[self._gap_count % self._gaps.size] = gap_db
        self._gap_count += 1
        self._gap_pending += 1
        filled = min(self._gap_count, self._gaps.size)
        if filled >= self._min_gap_frames and (self._peak_gap_db is None or self._gap_pending >= _GAP_EVERY):
            self._gap_pending = 0
            self._peak_gap_db = percentile(self._gaps[:filled], self._gap_percentile)

    def measure(self, mic_power: float, ref_power: float, out_power: float) -> None:
        """One frame with the reference active and no near-end speech known: into the averages."""
        # Double talk (energy test against the measured echo path, Geigel-like): the microphone is far
        # louder than the reference can explain, so the user is speaking: keep it out of the averages.
        if self._measured_frames >= self._min_measure_frames and self._sum_ref > 0.0:
            predicted = ref_power * self._sum_mic / self._sum_ref
            if mic_power > predicted * self._dt_margin:
                return
        f = self._forget
        self._sum_mic = f * self._sum_mic + mic_power
        self._sum_ref = f * self._sum_ref + ref_power
        self._sum_out = f * self._sum_out + out_power
        self._measured_frames += 1

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement measured on echo-only audio (dB), or None until measured."""
        if self._measured_frames < self._min_measure_frames or self._sum_mic <= 0.0:
            return None
        return 10.0 * math.log10(self._sum_mic / max(self._sum_out, 1e-3))

    @property
    def erl_db(self) -> float | None:
        """Echo return loss (reference to microphone, dB; positive = the echo is quieter), or None.

        A microphone that stays silent while the speaker plays (no acoustic path, or digital silence)
        gives a very large finite ERL: there is no echo to cancel.
        """
        if self._measured_frames < self._min_measure_frames or self._sum_ref <= 0.0:
            return None
        return 10.0 * math.log10(self._sum_ref / max(self._sum_mic, 1e-3))

    @property
    def peak_gap_db(self) -> float | None:
        """How far below the loudest recent reference frame the cleaned signal stays on echo-only frames.

        The ``peak_gap_percentile`` (2nd by default) of the gap over the last ``peak_gap_frames``
        echo-only frames whose cleaned level stands above the noise floor, or None until
        ``min_peak_gap_frames`` of them were seen. It folds in the echo return loss and the echo
        reduction, and how much the latter swings.
        """
        return self._peak_gap_db
