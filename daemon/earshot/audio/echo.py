"""Acoustic echo cancellation of the microphone against what the speaker played.

The canceller is speexdsp's MDF adaptive filter plus its residual echo suppressor, reached through
pyaec's C library. pyaec's Python wrapper marshals every frame through Python lists, which was most
of its cost; :class:`EchoCanceller` calls the C entry point directly on numpy buffers instead.

Alignment: the playback side calls :meth:`EchoCanceller.add_reference` with exactly the samples the
speaker played (16 kHz mono, in play order, from ``AudioSink.pop_reference()``); the capture side
calls :meth:`EchoCanceller.process` once per 10 ms capture chunk, which consumes the same number of
reference samples from a FIFO. The adaptive filter absorbs the remaining acoustic and device delay,
as long as it is shorter than the filter (``filter_ms``).

Besides the cleaned signal, the canceller measures at run time how well it works: the echo return
loss (ERL, reference power to microphone power) and the echo return loss enhancement (ERLE, microphone
power to cleaned power), both on echo-only stretches (reference playing, no near-end speech). From
those it predicts, per frame, the residual echo left in the cleaned signal (:attr:`EchoFrame.residual_echo_dbfs`),
which the barge-in detector and the wake guard compare the cleaned signal against.

That average prediction is not a bound: the canceller's residual swings by 10 dB and more from one
frame to the next (an echo onset after a pause, a loud syllable), and the loudest 0.1 % of
echo-only frames stood as loud over it as a user talking over the reply. What does bound it is the
loudest reference frame within the filter span: measured here over 10 minutes of speech echo at
-6 dB, the gap between that peak and the cleaned level stayed within 2-4 dB between its 1st and
0.05th percentiles, for filter lengths of 100 and 200 ms and delays of 0-20 ms. So the canceller
also tracks a low percentile of that gap on echo-only frames (:attr:`EchoCanceller.peak_gap_db`)
and reports :attr:`EchoFrame.residual_peak_dbfs`, the loudest the residual echo gets in all but
about 2 % of frames (the 2nd percentile by default).
"""

from __future__ import annotations

import ctypes
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.errors import AudioDeviceError

__all__ = ["EchoCanceller", "EchoFrame", "dbfs"]

logger = logging.getLogger(__name__)

_FULL_SCALE_POWER = 32768.0**2
_SILENCE_DBFS = -120.0
_C_INT16_P = ctypes.POINTER(ctypes.c_int16)
# Only frames whose cleaned level stands this far above the noise floor enter the peak-gap statistic:
# the residual that matters is the one that can pass for speech.
_GAP_ABOVE_FLOOR_DB = 6.0
# Recompute the peak-gap percentile after this many new frames (a partition of a few thousand floats).
_GAP_EVERY = 50


def dbfs(power: float) -> float:
    """Mean power of int16 samples (squared sample values) as dB relative to full scale, floored at -120."""
    if power <= 0.0:
        return _SILENCE_DBFS
    return max(_SILENCE_DBFS, 10.0 * math.log10(power / _FULL_SCALE_POWER))


def _power(pcm: NDArray[np.int16]) -> float:
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
        erle_db: the echo reduction measured so far (:attr:`EchoCanceller.erle_db`), or None.
        reference_active: the reference had energy within the filter span.
        bypassed: the chunk was passed through untouched (no reference for a while).
        erl_db: the echo return loss measured so far (:attr:`EchoCanceller.erl_db`), or None.
        reference_peak_dbfs: level of the loudest 10 ms of reference within the filter span.
        residual_peak_dbfs: the loudest the residual echo gets in this frame in all but about 2 % of
            echo-only frames (reference peak - :attr:`EchoCanceller.peak_gap_db`); -120 when bypassed
            or with no reference, None while the gap is not measured yet.
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
    reference_peak_dbfs: float = _SILENCE_DBFS
    residual_peak_dbfs: float | None = None


_IDLE_FRAME = EchoFrame(
    mic_dbfs=_SILENCE_DBFS,
    cleaned_dbfs=_SILENCE_DBFS,
    reference_dbfs=_SILENCE_DBFS,
    echo_dbfs=_SILENCE_DBFS,
    residual_echo_dbfs=_SILENCE_DBFS,
    noise_floor_dbfs=_SILENCE_DBFS,
    erle_db=None,
    reference_active=False,
    bypassed=True,
)


def _load_library() -> Any:
    """Load pyaec's C library and declare the entry points used here."""
    try:
        import pyaec  # imported lazily: its import loads a shared library
    except (ImportError, OSError, AttributeError) as exc:  # pyaec sets up lib at import; None when it failed
        raise AudioDeviceError("echo canceller", f"pyaec unavailable: {exc}") from exc
    lib = getattr(pyaec, "lib", None)
    if lib is None:
        raise AudioDeviceError("echo canceller", "pyaec could not load libaec")
    lib.AecCancelEcho.argtypes = [ctypes.c_void_p, _C_INT16_P, _C_INT16_P, _C_INT16_P, ctypes.c_size_t]
    lib.AecCancelEcho.restype = None
    return lib


class EchoCanceller:
    """Echo canceller on 10 ms capture chunks with a reference FIFO aligned to capture.

    Not thread-safe: call :meth:`add_reference` and :meth:`process` from the same thread (the loop).

    Args:
        frame_samples: samples per capture chunk (and per canceller frame).
        rate_hz: sample rate of capture and reference.
        filter_ms: adaptive filter length: the longest echo path (device delay + room tail) it can cancel.
        max_reference_ms: reference FIFO bound; on overflow the oldest samples are dropped and counted.
        bypass_after_ms: pass capture through untouched after this long without reference energy
            (at least the filter length, so the filter only ever resumes from a silent history).
        residual_suppression: run speexdsp's residual echo suppressor (and its noise suppressor) after
            the linear filter.
        reference_floor_dbfs: reference quieter than this counts as silence.
        erle_time_constant_s: forgetting time of the ERL/ERLE measurement, in echo-only audio.
        min_measure_s: echo-only audio needed before ERL/ERLE are reported.
        double_talk_margin_db: a frame whose microphone level exceeds the predicted echo by this much
            is taken as near-end speech and left out of the measurement.
        peak_gap_percentile: the percentile of the reference-peak-to-cleaned gap, over echo-only
            frames, taken as :attr:`peak_gap_db`.
        peak_gap_frames: how many recent echo-only frames the percentile is taken over.
        min_peak_gap_frames: echo-only frames needed before :attr:`peak_gap_db` is reported.
        converge_s: the first this much filtered audio is left out of the peak gap (the fresh filter's
            residual while it converges says nothing about the converged one).

    Raises:
        AudioDeviceError: pyaec's library cannot be loaded or the canceller cannot be created.
    """

    def __init__(
        self,
        frame_samples: int = 160,
        rate_hz: int = 16000,
        filter_ms: int = 200,
        *,
        max_reference_ms: int = 2000,
        bypass_after_ms: int = 500,
        residual_suppression: bool = True,
        reference_floor_dbfs: float = -65.0,
        erle_time_constant_s: float = 3.0,
        min_measure_s: float = 1.0,
        double_talk_margin_db: float = 10.0,
        peak_gap_percentile: float = 2.0,
        peak_gap_frames: int = 4096,
        min_peak_gap_frames: int = 200,
        converge_s: float = 1.5,
    ) -> None:
        if frame_samples <= 0 or rate_hz <= 0 or filter_ms <= 0:
            raise ValueError("frame_samples, rate_hz and filter_ms must be positive")
        self.frame_samples = frame_samples
        self.rate_hz = rate_hz
        self.filter_samples = max(frame_samples, rate_hz * filter_ms // 1000)
        self._lib = _load_library()
        self._handle: Any = self._lib.AecNew(frame_samples, self.filter_samples, rate_hz, residual_suppression)
        if not self._handle:
            raise AudioDeviceError("echo canceller", "AecNew failed")

        # Reference FIFO: a ring of int16 with read/write counts (no per-chunk allocation).
        self._fifo = np.zeros(max(frame_samples, rate_hz * max_reference_ms // 1000), dtype=np.int16)
        self._fifo_read = 0
        self._fifo_len = 0
        self._ref_chunk = np.zeros(frame_samples, dtype=np.int16)
        self._deficit = 0  # zero-padded reference samples whose real samples are still to come (then dropped)
        self._max_deficit = max(frame_samples, rate_hz * filter_ms // 1000)
        self._out = np.zeros(frame_samples, dtype=np.int16)
        self._mic = np.zeros(frame_samples, dtype=np.int16)

        filter_frames = max(1, -(-self.filter_samples // frame_samples))
        self._ref_powers: deque[float] = deque([0.0] * filter_frames, maxlen=filter_frames)
        self._ref_power_sum = 0.0
        self._ref_floor_power = _FULL_SCALE_POWER * 10.0 ** (reference_floor_dbfs / 10.0)
        self._bypass_after_frames = max(filter_frames + 1, -(-rate_hz * bypass_after_ms // 1000) // frame_samples)
        self._silent_frames = self._bypass_after_frames  # start bypassed

        frames_per_s = rate_hz / frame_samples
        self._forget = math.exp(-1.0 / (erle_time_constant_s * frames_per_s))
        self._min_measure_frames = max(1, round(min_measure_s * frames_per_s))
        self._dt_margin = 10.0 ** (double_talk_margin_db / 10.0)
        self._sum_mic = 0.0
        self._sum_ref = 0.0
        self._sum_out = 0.0
        self._measured_frames = 0
        self._floor_dbfs = 0.0  # the first processed chunk pulls it down
        self._floor_rise_db = 3.0 / frames_per_s  # 3 dB/s

        # The reference-peak-to-cleaned gap on recent echo-only frames with residual above the noise
        # (a ring), and its low percentile, recomputed every _GAP_EVERY new frames.
        self._gaps = np.zeros(max(1, peak_gap_frames), dtype=np.float32)
        self._gap_count = 0
        self._gap_pending = 0
        self._gap_percentile = peak_gap_percentile
        self._min_gap_frames = max(1, min(min_peak_gap_frames, self._gaps.size))
        self._peak_gap_db: float | None = None
        self._converge_frames = round(converge_s * frames_per_s)

        self.dropped_reference_samples = 0
        """Reference samples dropped because the FIFO was full (capture stalled while playing)."""
        self.underflow_samples = 0
        """Reference samples zero-padded because capture ran ahead of the reference while active."""
        self.processed_frames = 0
        """Chunks run through the adaptive filter (not bypassed)."""
        self.frame: EchoFrame = _IDLE_FRAME
        """Levels and predictions for the last processed chunk."""

    # ------------------------------------------------------------------ reference

    def add_reference(self, pcm16k: NDArray[np.int16]) -> None:
        """Queue what the speaker just played (16 kHz mono int16, in play order).

        Call it as the sink reports played audio. When the FIFO is full the oldest samples are
        dropped (counted in :attr:`dropped_reference_samples`): capture has stalled and the new audio
        is what will echo next.
        """
        pcm = np.asarray(pcm16k).reshape(-1)
        if pcm.dtype != np.int16:
            pcm = np.clip(pcm, -32768, 32767).astype(np.int16)
        cap = self._fifo.size
        if pcm.size >= cap:
            self.dropped_reference_samples += self._fifo_len + pcm.size - cap
            pcm = pcm[-cap:]
            self._fifo_read = 0
            self._fifo_len = 0
        overflow = self._fifo_len + pcm.size - cap
        if overflow > 0:
            self.dropped_reference_samples += overflow
            self._fifo_read = (self._fifo_read + overflow) % cap
            self._fifo_len -= overflow
        write = (self._fifo_read + self._fifo_len) % cap
        first = min(pcm.size, cap - write)
        self._fifo[write : write + first] = pcm[:first]
        self._fifo[: pcm.size - first] = pcm[first:]
        self._fifo_len += pcm.size

    @property
    def reference_queued(self) -> int:
        """Reference samples waiting for their capture chunk."""
        return self._fifo_len

    def _take_reference(self) -> NDArray[np.int16]:
        n = self.frame_samples
        if self._deficit and self._fifo_len:
            # Samples that arrived after their capture chunk had gone by (zero-padded then): late
            # for their slot. Dropping them keeps every later sample paired with its own chunk,
            # instead of each burst of the reference shifting the rest later for good.
            skip = min(self._deficit, self._fifo_len)
            self._fifo_read = (self._fifo_read + skip) % self._fifo.size
            self._fifo_len -= skip
            self._deficit -= skip
        take = min(n, self._fifo_len)
        chunk = self._ref_chunk
        cap = self._fifo.size
        first = min(take, cap - self._fifo_read)
        chunk[:first] = self._fifo[self._fifo_read : self._fifo_read + first]
        chunk[first:take] = self._fifo[: take - first]
        chunk[take:] = 0
        self._fifo_read = (self._fifo_read + take) % cap
        self._fifo_len -= take
        if take < n and self._silent_frames < self._bypass_after_frames:
            # Capture ran ahead of the reference while something may still be playing.
            self.underflow_samples += n - take
            self._deficit = min(self._deficit + n - take, self._max_deficit)
        elif take < n:
            self._deficit = 0  # silence (between replies): the next reference starts a new timeline
        return chunk

    # ------------------------------------------------------------------ processing

    def process(self, mic: NDArray[np.int16], *, near_end: bool = False) -> NDArray[np.int16]:
        """Cancel the echo from one capture chunk and consume one chunk of reference.

        Args:
            mic: the raw capture chunk (``frame_samples`` int16 samples; shorter is zero-padded,
                longer is cut).
            near_end: the caller believes the user is speaking now (e.g. the barge-in detector's
                VAD on the previous chunks); such chunks are left out of the ERL/ERLE measurement.

        Returns:
            The echo-cancelled chunk (a new array, ``frame_samples`` long). While the reference has
            been silent for ``bypass_after_ms`` this is the microphone chunk unchanged.
        """
        n = self.frame_samples
        src = np.asarray(mic).reshape(-1)
        if src.size != n or src.dtype != np.int16:
            src = np.clip(src[:n], -32768, 32767).astype(np.int16)
            if src.size < n:
                src = np.concatenate([src, np.zeros(n - src.size, dtype=np.int16)])
        ref = self._take_reference()
        ref_power = _power(ref)
        self._ref_power_sum += ref_power - self._ref_powers[0]
        self._ref_powers.append(ref_power)
        span_power = max(0.0, self._ref_power_sum) / len(self._ref_powers)
        peak_power = max(self._ref_powers)
        self._silent_frames = 0 if ref_power >= self._ref_floor_power else self._silent_frames + 1
        mic_power = _power(src)

        if self._silent_frames >= self._bypass_after_frames or not self._handle:
            self.frame = EchoFrame(
                mic_dbfs=dbfs(mic_power),
                cleaned_dbfs=dbfs(mic_power),
                reference_dbfs=dbfs(span_power),
                echo_dbfs=_SILENCE_DBFS,
                residual_echo_dbfs=_SILENCE_DBFS,
                noise_floor_dbfs=self._floor_dbfs,
                erle_db=self.erle_db,
                reference_active=False,
                bypassed=True,
                erl_db=self.erl_db,
                reference_peak_dbfs=dbfs(peak_power),
                residual_peak_dbfs=_SILENCE_DBFS,
            )
            return src.copy()

        self._mic[:] = src
        self._lib.AecCancelEcho(
            self._handle,
            self._mic.ctypes.data_as(_C_INT16_P),
            ref.ctypes.data_as(_C_INT16_P),
            self._out.ctypes.data_as(_C_INT16_P),
            n,
        )
        self.processed_frames += 1
        out = self._out.copy()
        out_power = _power(out)
        active = span_power >= self._ref_floor_power
        converged = self.processed_frames > self._converge_frames
        if active and not near_end and converged:
            # Not the fresh filter's first converge_s: its residual while it converges says nothing
            # about the converged one, and in a smoothed ERLE it held full duplex off for seconds.
            self._measure(mic_power, span_power, out_power)
        erl = self.erl_db
        erle = self.erle_db
        if not active:
            echo = _SILENCE_DBFS
        elif erl is None:
            echo = dbfs(mic_power)
        else:
            echo = dbfs(span_power) - erl
        cleaned_dbfs = dbfs(out_power)
        peak_dbfs = dbfs(peak_power)
        if active and not near_end and converged and cleaned_dbfs >= self._floor_dbfs + _GAP_ABOVE_FLOOR_DB:
            self._observe_gap(peak_dbfs - cleaned_dbfs)
        # Minimum statistics: follow dips at once, rise slowly (speech never holds a floor up).
        self._floor_dbfs = min(self._floor_dbfs + self._floor_rise_db, cleaned_dbfs)
        # Echo left after cancellation, plus the noise the cleaned signal never goes below.
        residual = echo if erle is None or not active else self._above_floor(echo - erle)
        self.frame = EchoFrame(
            mic_dbfs=dbfs(mic_power),
            cleaned_dbfs=cleaned_dbfs,
            reference_dbfs=dbfs(span_power),
            echo_dbfs=echo,
            residual_echo_dbfs=residual,
            noise_floor_dbfs=self._floor_dbfs,
            erle_db=erle,
            reference_active=active,
            bypassed=False,
            erl_db=erl,
            reference_peak_dbfs=peak_dbfs,
            residual_peak_dbfs=self._residual_peak(active, peak_dbfs),
        )
        return out

    def _residual_peak(self, active: bool, peak_dbfs: float) -> float | None:
        if not active:
            return _SILENCE_DBFS
        gap = self._peak_gap_db
        if gap is None:
            return None
        return self._above_floor(peak_dbfs - gap)

    def _above_floor(self, echo_dbfs: float) -> float:
        # A residual echo level plus the noise the cleaned signal never goes below (powers add).
        return dbfs(_FULL_SCALE_POWER * (10.0 ** (echo_dbfs / 10.0) + 10.0 ** (self._floor_dbfs / 10.0)))

    def _observe_gap(self, gap_db: float) -> None:
        self._gaps[self._gap_count % self._gaps.size] = gap_db
        self._gap_count += 1
        self._gap_pending += 1
        filled = min(self._gap_count, self._gaps.size)
        if filled >= self._min_gap_frames and (self._peak_gap_db is None or self._gap_pending >= _GAP_EVERY):
            self._gap_pending = 0
            self._peak_gap_db = float(np.percentile(self._gaps[:filled], self._gap_percentile))

    def _measure(self, mic_power: float, ref_power: float, out_power: float) -> None:
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

    # ------------------------------------------------------------------ measurements

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

    @property
    def active(self) -> bool:
        """The canceller is running (not bypassed) on the current capture."""
        return self._silent_frames < self._bypass_after_frames

    def reset(self) -> None:
        """Forget the queued reference (e.g. after playback was dropped); the filter and measurements stay."""
        self._fifo_read = 0
        self._fifo_len = 0
        self._deficit = 0

    def close(self) -> None:
        """Free the native canceller; the object is unusable afterwards."""
        if self._handle:
            self._lib.AecDestroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.AecDestroy(handle)
            self._handle = None
