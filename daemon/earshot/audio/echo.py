"""Acoustic echo cancellation of the microphone against what the speaker played.

The canceller is speexdsp's MDF adaptive filter plus its residual echo suppressor, reached through
pyaec's C library or the system's libspeexdsp (:mod:`earshot.audio.aeclib`). Around it: the
reference FIFO (:mod:`earshot.audio.reffifo`), the alignment of each new pairing
(:mod:`earshot.audio.align`), and the measurements the barge-in detector relies on
(:mod:`earshot.audio.echometer`, and the residual's coherence with the reference,
:mod:`earshot.audio.coherence`).

Alignment: the playback side calls :meth:`EchoCanceller.add_reference` with exactly the samples the
speaker played (16 kHz mono, in play order, from ``AudioSink.pop_reference()``); the capture side
calls :meth:`EchoCanceller.process` once per 10 ms capture chunk, which consumes the same number of
reference samples from a FIFO. The adaptive filter absorbs the remaining acoustic and device delay,
as long as it is shorter than the filter (``filter_ms``).

That count pairing starts afresh with every reply (the sink hands no reference while idle), and where
it starts depends on capture bursts and device buffering, so each new pairing (the first reference
after the FIFO ran dry, or after :meth:`EchoCanceller.reset`) is aligned by
:class:`~earshot.audio.align.PairingAligner`: the echo's delay is measured and the reference moved so
that the echo always follows it where the filter has converged. Until then
:attr:`EchoFrame.settling` tells the barge-in detector not to trust the cleaned signal. Within a
pairing the echo can still jump later (an output underrun's gap): the aligner watches poorly cancelled
chunks for it and moves the reference after it (:meth:`~earshot.audio.align.PairingAligner.watch`),
settling again until the filter's span has passed the move.

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

import logging
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio.aeclib import C_INT16_P, library_name, load_library
from earshot.audio.align import Chunk, PairingAligner
from earshot.audio.coherence import EchoCoherence
from earshot.audio.echometer import (
    FULL_SCALE_POWER,
    IDLE_FRAME,
    QUIET_ECHO_ERL_DB,
    SILENCE_DBFS,
    EchoFrame,
    EchoMeter,
    dbfs,
    power,
)
from earshot.audio.reffifo import ReferenceFifo
from earshot.errors import AudioDeviceError

__all__ = ["QUIET_ECHO_ERL_DB", "EchoCanceller", "EchoFrame", "dbfs"]

logger = logging.getLogger(__name__)

# Only frames whose cleaned level stands this far above the noise floor enter the peak-gap statistic:
# the residual that matters is the one that can pass for speech.
_GAP_ABOVE_FLOOR_DB = 6.0
# A new pairing of reference and capture: the reference FIFO ran dry for this many chunks in a row.
# Within a reply the reference comes in bursts (a pulse transfer, ~20 ms) over a FIFO holding the
# device buffer's lead, so it never runs dry that long unless playback stopped.
_NEW_TIMELINE_FRAMES = 5
_FILTER_LAG_FRAMES = 3
"""Chunks the canceller's output keeps an echo prediction after the reference left its span."""

_DIVERGED_DB = 10.0
"""A filtered chunk this much louder than its microphone chunk came from a diverged filter."""
_DIVERGED_FLOOR_DBFS = -75.0
"""...and that loud at least, to count towards a reset (a silent microphone's rounding is no divergence)."""
_DIVERGED_WINDOW = 30
_DIVERGED_RESET_FRAMES = 15
"""The filter is started afresh when this many of the last ``_DIVERGED_WINDOW`` filtered chunks diverged.
A converged filter in a real room diverges on a few chunks now and then (an echo path that moved at a
sentence's onset: 0-13 chunks of a 15 s reply, never 5 in a row), and a reset there cost it a false
barge-in; one that learned the user's voice diverges on nearly every chunk the reference is loud."""


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
        align_target_ms: each new pairing of reference and capture is moved so that the echo follows
            its reference by this much (None: no alignment, the pairing stays where it starts).
        library: ``auto`` (pyaec, else the system's libspeexdsp), ``pyaec`` or ``speexdsp``.

    Raises:
        AudioDeviceError: no canceller library can be loaded or the canceller cannot be created.
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
        align_target_ms: float | None = 20.0,
        library: str = "auto",
    ) -> None:
        if frame_samples <= 0 or rate_hz <= 0 or filter_ms <= 0:
            raise ValueError("frame_samples, rate_hz and filter_ms must be positive")
        self.frame_samples = frame_samples
        self.rate_hz = rate_hz
        self.filter_samples = max(frame_samples, rate_hz * filter_ms // 1000)
        self._lib = load_library(library)
        self.library = library_name(self._lib)
        """Which canceller library runs: ``pyaec`` or ``speexdsp`` (the system's)."""
        self._handle: Any = self._lib.AecNew(frame_samples, self.filter_samples, rate_hz, residual_suppression)
        if not self._handle:
            raise AudioDeviceError("echo canceller", "AecNew failed")

        self._fifo = ReferenceFifo(max(frame_samples, rate_hz * max_reference_ms // 1000))
        self._ref_chunk = np.zeros(frame_samples, dtype=np.int16)
        self._deficit = 0  # zero-padded reference samples whose real samples are still to come (then dropped)
        self._max_deficit = max(frame_samples, rate_hz * filter_ms // 1000)
        self._out = np.zeros(frame_samples, dtype=np.int16)
        self._mic = np.zeros(frame_samples, dtype=np.int16)
        self._ref = np.zeros(frame_samples, dtype=np.int16)
        # The C call's buffers stay put: their pointers are made once (data_as costs more than the copies in).
        self._mic_p = self._mic.ctypes.data_as(C_INT16_P)
        self._ref_p = self._ref.ctypes.data_as(C_INT16_P)
        self._out_p = self._out.ctypes.data_as(C_INT16_P)

        filter_frames = max(1, -(-self.filter_samples // frame_samples))
        self._ref_powers: deque[float] = deque([0.0] * filter_frames, maxlen=filter_frames)
        self._zero_frames = filter_frames  # trailing all-zero reference frames in _ref_powers
        self._ref_power_sum = 0.0
        self._ref_floor_power = FULL_SCALE_POWER * 10.0 ** (reference_floor_dbfs / 10.0)
        self._bypass_after_frames = max(filter_frames + 1, -(-rate_hz * bypass_after_ms // 1000) // frame_samples)
        self._silent_frames = self._bypass_after_frames  # start bypassed

        frames_per_s = rate_hz / frame_samples
        self._meter = EchoMeter(
            frames_per_s,
            erle_time_constant_s=erle_time_constant_s,
            min_measure_s=min_measure_s,
            double_talk_margin_db=double_talk_margin_db,
            peak_gap_percentile=peak_gap_percentile,
            peak_gap_frames=peak_gap_frames,
            min_peak_gap_frames=min_peak_gap_frames,
        )
        self._converge_frames = round(converge_s * frames_per_s)

        # Alignment of each new pairing (see the module docstring).
        self._starved = _NEW_TIMELINE_FRAMES  # the first reference starts a pairing
        self._aligner = PairingAligner(
            self._fifo,
            frame_samples=frame_samples,
            rate_hz=rate_hz,
            filter_samples=self.filter_samples,
            target=None if align_target_ms is None else round(align_target_ms * rate_hz / 1000),
            # speexdsp's preprocessor hands each chunk out a chunk late (tests/echo/test_align.py measures it)
            output_lag=frame_samples if residual_suppression else 0,
        )
        self._coherence = EchoCoherence(self.filter_samples // 2)

        self.dropped_reference_samples = 0
        """Reference samples dropped because the FIFO was full (capture stalled while playing)."""
        self.underflow_samples = 0
        """Reference samples zero-padded because capture ran ahead of the reference while active."""
        self.processed_frames = 0
        """Chunks run through the adaptive filter (not bypassed)."""
        self.diverged_frames = 0
        """Filtered chunks that came out far louder than they went in (passed through raw instead)."""
        self.filter_resets = 0
        """Times the filter was started afresh because it diverged."""
        self.reference_short_frames = 0
        """Chunks whose reference ran short while their sound still played (echo unknown: :meth:`_reference_short`)."""
        self._sounded = False  # a sound plays and its reference has begun
        self._short = False  # the last chunk's reference ran short
        self._diverged_recent: deque[bool] = deque(maxlen=_DIVERGED_WINDOW)
        self._diverged_ratio = 10.0 ** (_DIVERGED_DB / 10.0)
        self._diverged_floor = FULL_SCALE_POWER * 10.0 ** (_DIVERGED_FLOOR_DBFS / 10.0)
        self._create_args = (frame_samples, self.filter_samples, rate_hz, residual_suppression)
        self.frame: EchoFrame = IDLE_FRAME
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
        self.dropped_reference_samples += self._fifo.push(pcm)

    @property
    def reference_queued(self) -> int:
        """Reference samples waiting for their capture chunk."""
        return len(self._fifo)

    def _take_reference(self) -> NDArray[np.int16]:
        n = self.frame_samples
        queued = len(self._fifo)
        if queued and self._starved >= _NEW_TIMELINE_FRAMES:
            # Playback (re)started: the reference begins a new pairing with capture. Samples owed from the
            # old one belong to it; the new one is aligned afresh.
            self._deficit = 0
            self._coherence.clear()
            self._aligner.begin()
        self._starved = 0 if queued else self._starved + 1
        if self._deficit and queued:
            # Samples that arrived after their capture chunk had gone by (zero-padded then): late
            # for their slot. Dropping them keeps every later sample paired with its own chunk,
            # instead of each burst of the reference shifting the rest later for good.
            self._deficit -= self._fifo.skip(self._deficit)
        chunk = self._ref_chunk
        take = self._fifo.read(chunk, n)
        chunk[take:] = 0
        self._short = take < n
        if take < n and self._silent_frames < self._bypass_after_frames:
            # Capture ran ahead of the reference while something may still be playing.
            self.underflow_samples += n - take
            self._deficit = min(self._deficit + n - take, self._max_deficit)
        elif take < n:
            self._deficit = 0  # silence (between replies): the next reference starts a new timeline
        return chunk

    # ------------------------------------------------------------------ processing

    @property
    def bypassing(self) -> bool:
        """Nothing has played for longer than the filter span: :meth:`process` passes the microphone through."""
        return (
            not self._fifo
            and not self._aligner.aligning
            and self._silent_frames >= self._bypass_after_frames
            and self._zero_frames >= len(self._ref_powers)
        )

    def pass_through(self, mic: NDArray[np.int16]) -> None:
        """Account for ``mic`` (any whole number of chunks) passed through while :attr:`bypassing`.

        The bookkeeping of that many :meth:`process` calls at once, and one :attr:`frame` for all of
        it: an idle device's capture is handled a period at a time, not 10 ms at a time.
        """
        k = max(1, -(-len(mic) // self.frame_samples))
        self._starved += k
        self._deficit = 0
        self._silent_frames += k
        self._ref_power_sum = 0.0
        self.frame = self._raw_frame(dbfs(power(mic)), SILENCE_DBFS, SILENCE_DBFS, held=False)

    def process(self, mic: NDArray[np.int16], *, near_end: bool = False, sounding: bool = False) -> NDArray[np.int16]:
        """Cancel the echo from one capture chunk and consume one chunk of reference.

        Args:
            mic: the raw capture chunk (``frame_samples`` int16 samples; shorter is zero-padded,
                longer is cut).
            near_end: the caller believes the user is speaking now (e.g. the barge-in detector's
                VAD on the previous chunks); such chunks are left out of the ERL/ERLE measurement.
            sounding: the speaker is playing a sound now (``Playback.active``). Once that sound's
                reference has begun, a chunk the reference runs short for is not taken for silence:
                its :attr:`frame` says the echo in it is unknown (see :meth:`_reference_short`).

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
        # A sound whose reference has begun: from then on until it ends, reference is owed for every chunk.
        self._sounded = sounding and (self._sounded or bool(self._fifo))
        if self._sounded:
            self._short = False
            out = self._process(src, near_end)
            if self._short:
                self._reference_short()
            return out
        return self._process(src, near_end)

    def _reference_short(self) -> None:
        """This chunk's reference ran short while the sound it belongs to still plays: its echo is unknown.

        The reference stops coming while the speaker still sounds when the output underruns (a slow
        core: the device plays in bursts, and its pointer, which paces the reference, stalls) or the
        loop hands it over late. The zero-padded reference says "silence" for audio that echoes, and
        once the span of it ran silent the canceller passes the echo through as if nothing played
        (measured inside one Pi Zero core: a reply's echo at -27 dBFS with the reference at
        -120 dBFS, taken for the user 4-10 s into the first reply, in three runs of three). The frame
        says so (:attr:`EchoFrame.reference_short`), and the barge-in detector does not judge it.
        """
        self.reference_short_frames += 1
        self.frame = replace(self.frame, reference_short=True)

    def _process(self, src: NDArray[np.int16], near_end: bool) -> NDArray[np.int16]:
        if self.bypassing and not self._sounded:
            # Nothing has played for longer than the filter span (an idle device): the same outcome
            # as the full path below (raw chunk, bypassed), without its per-chunk bookkeeping.
            self.pass_through(src)
            return src.copy()
        ref = self._take_reference()
        if self._aligner.aligning:
            erl = self.erl_db
            step = self._aligner.take(
                src, ref, near_end, quiet_echo=erl is not None and erl >= QUIET_ECHO_ERL_DB, starved=self._starved > 0
            )
            out = self._filter_all(step.release)
            if step.held:
                # Held back until this pairing's echo delay is known: the raw chunk, all of it maybe echo.
                ref_dbfs = dbfs(power(ref))
                self.frame = self._raw_frame(dbfs(power(src)), ref_dbfs, ref_dbfs, held=True)
                return src.copy()
            if step.current and out is not None:
                return out  # the held chunks, this one last, went through the filter just now
        return self._filter(src, ref, near_end)

    def _filter_all(self, chunks: tuple[Chunk, ...]) -> NDArray[np.int16] | None:
        """Run chunks through the filter in order; the last one's output (None if none)."""
        out = None
        for mic, ref, near_end in chunks:
            out = self._filter(mic, ref, near_end)
        return out

    def _filter(self, src: NDArray[np.int16], ref: NDArray[np.int16], near_end: bool) -> NDArray[np.int16]:
        ref_power = power(ref)
        self._ref_power_sum += ref_power - self._ref_powers[0]
        self._ref_powers.append(ref_power)
        self._zero_frames = self._zero_frames + 1 if ref_power == 0.0 else 0
        span_power = max(0.0, self._ref_power_sum) / len(self._ref_powers)
        peak_power = max(self._ref_powers)
        self._silent_frames = 0 if ref_power >= self._ref_floor_power else self._silent_frames + 1
        mic_power = power(src)

        if self._silent_frames >= self._bypass_after_frames or not self._handle:
            self.frame = self._raw_frame(dbfs(mic_power), dbfs(span_power), dbfs(peak_power), held=False)
            self._coherence.push(ref, src)
            return src.copy()

        erl_db = self.erl_db
        if erl_db is not None and erl_db >= QUIET_ECHO_ERL_DB:
            # The microphone hardly hears the speaker: nothing to cancel, and the filter and its residual
            # suppressor only distort a user talking over the device's sound (a question spoken over the
            # engagement earcon reached the server at 0.67 correlation with what was said). The raw chunk
            # goes on, and the echo path is still measured, so a speaker moved closer is noticed.
            out = src.copy()
            out_power = mic_power
            filtered = False
        else:
            self._mic[:] = src
            self._ref[:] = ref
            self._lib.AecCancelEcho(self._handle, self._mic_p, self._ref_p, self._out_p, self.frame_samples)
            self.processed_frames += 1
            out = self._out.copy()
            self._aligner.track(src, ref, ref_power, near_end)
            out_power = power(out)
            if out_power > mic_power * self._diverged_ratio:
                out_power = self._diverged(out, src, mic_power, out_power)
            else:
                self._diverged_recent.append(False)
            filtered = True
        converged = self.processed_frames > self._converge_frames
        if filtered:
            self._aligner.watch(src, out, ref, ref_power, mic_power, out_power, converged=converged)
        self._coherence.push(ref, out)
        active = span_power >= self._ref_floor_power
        if active and not near_end and converged:
            # Not the fresh filter's first converge_s: its residual while it converges says nothing
            # about the converged one, and in a smoothed ERLE it held full duplex off for seconds.
            self._meter.measure(mic_power, span_power, out_power)
        erl = self.erl_db
        erle = self.erle_db
        if not active:
            echo = SILENCE_DBFS
        elif erl is None:
            echo = dbfs(mic_power)
        else:
            echo = dbfs(span_power) - erl
        cleaned_dbfs = dbfs(out_power)
        peak_dbfs = dbfs(peak_power)
        if active and not near_end and converged and cleaned_dbfs >= self._meter.floor_dbfs + _GAP_ABOVE_FLOOR_DB:
            self._meter.observe_gap(peak_dbfs - cleaned_dbfs)
        self._meter.follow_floor(cleaned_dbfs)
        # Echo left after cancellation, plus the noise the cleaned signal never goes below.
        residual = echo if erle is None or not active else self._meter.above_floor(echo - erle)
        if active:
            coherence = self._coherence.update(self._aligner.echo_lag or 0)
        else:
            coherence = 0.0
            self._coherence.reset_spectra()
        self.frame = EchoFrame(
            mic_dbfs=dbfs(mic_power),
            cleaned_dbfs=cleaned_dbfs,
            reference_dbfs=dbfs(span_power),
            echo_dbfs=echo,
            residual_echo_dbfs=residual,
            noise_floor_dbfs=self._meter.floor_dbfs,
            erle_db=erle,
            reference_active=active,
            bypassed=False,
            erl_db=erl,
            reference_peak_dbfs=peak_dbfs,
            residual_peak_dbfs=self._residual_peak(active, peak_dbfs),
            echo_possible=self._echo_possible(),
            residual_coherence=coherence,
            settling=self._aligner.settling,
        )
        return out

    def _diverged(self, out: NDArray[np.int16], src: NDArray[np.int16], mic_power: float, out_power: float) -> float:
        """A filtered chunk far louder than its microphone chunk: pass the microphone through instead.

        Subtracting a true echo estimate can only make a chunk quieter. One that comes out 10 dB louder
        holds what the filter predicts from the reference, not what the microphone heard: the filter
        adapted during double talk and learned the user's voice as an echo path (measured: a user
        talking over the wake earcon with no echo path at all; the filter then played the reply,
        inverted, at -53 dBFS, peaks of 512 LSB, out of a -82 dBFS microphone, and the reply
        interrupted itself).
        A filter that keeps diverging is started afresh. The raw chunk is not marked settling: in a
        real room a few chunks of a reply diverge now and then, and holding the uplink on each of them
        cut 0.8 s out of a question the user spoke over the engagement earcon.
        """
        out[:] = src
        self.diverged_frames += 1
        self._diverged_recent.append(out_power >= self._diverged_floor)
        # _restart_filter forgets the recent divergence too
        if sum(self._diverged_recent) >= _DIVERGED_RESET_FRAMES and self._restart_filter():
            log = logger.info if self.filter_resets == 1 else logger.debug  # once at INFO: it can recur
            log("echo canceller: the filter diverged (louder out than in); started afresh (%d)", self.filter_resets)
        return mic_power

    def _restart_filter(self) -> bool:
        """Replace the adaptive filter by a fresh one; False when that could not be made (the old one stays)."""
        new = self._lib.AecNew(*self._create_args)
        if not new:
            return False
        self._lib.AecDestroy(self._handle)
        self._handle = new
        self.filter_resets += 1
        self.processed_frames = 0  # the fresh filter converges again before its residual is measured
        self._diverged_recent.clear()
        return True

    def _raw_frame(self, level: float, reference_dbfs: float, peak_dbfs: float, *, held: bool) -> EchoFrame:
        # A chunk passed through unfiltered: bypassed (no reference: no echo), or held for alignment
        # (loud reference: all of the chunk may be echo).
        echo = level if held else SILENCE_DBFS
        return EchoFrame(
            mic_dbfs=level,
            cleaned_dbfs=level,
            reference_dbfs=reference_dbfs,
            echo_dbfs=echo,
            residual_echo_dbfs=echo,
            noise_floor_dbfs=self._meter.floor_dbfs,
            erle_db=self.erle_db,
            reference_active=held,
            bypassed=not held,
            erl_db=self.erl_db,
            reference_peak_dbfs=peak_dbfs,
            residual_peak_dbfs=(None if self._meter.peak_gap_db is None else level) if held else SILENCE_DBFS,
            settling=held,
            echo_possible=held or self._echo_possible(),
        )

    def _echo_possible(self) -> bool:
        # Reference above the floor within the span, or a few chunks more: the filter's output lags
        # its reference window (speexdsp's blocks), and a digitally silent microphone still got up to
        # -74 dBFS of predicted echo out of it two chunks after the last loud reference left the span.
        return self._silent_frames < len(self._ref_powers) + _FILTER_LAG_FRAMES

    def _residual_peak(self, active: bool, peak_dbfs: float) -> float | None:
        if not active:
            return SILENCE_DBFS
        gap = self._meter.peak_gap_db
        if gap is None:
            return None
        return self._meter.above_floor(peak_dbfs - gap)

    # ------------------------------------------------------------------ measurements

    @property
    def delay_samples(self) -> int | None:
        """The echo's delay behind its reference as last measured on a new pairing (before the move)."""
        return self._aligner.delay_samples

    @property
    def alignments(self) -> int:
        """New pairings whose echo delay was measured (and the reference moved to the target)."""
        return self._aligner.alignments

    @property
    def erle_db(self) -> float | None:
        """Echo return loss enhancement measured on echo-only audio (dB), or None until measured."""
        return self._meter.erle_db

    @property
    def erl_db(self) -> float | None:
        """Echo return loss (reference to microphone, dB; positive = the echo is quieter), or None.

        A microphone that stays silent while the speaker plays (no acoustic path, or digital silence)
        gives a very large finite ERL: there is no echo to cancel.
        """
        return self._meter.erl_db

    @property
    def peak_gap_db(self) -> float | None:
        """How far below the loudest recent reference frame the cleaned signal stays on echo-only frames.

        See :attr:`earshot.audio.echometer.EchoMeter.peak_gap_db`.
        """
        return self._meter.peak_gap_db

    @property
    def active(self) -> bool:
        """The canceller is running (not bypassed) on the current capture."""
        return self._silent_frames < self._bypass_after_frames

    def reset(self) -> None:
        """Forget the queued reference (e.g. after playback was dropped); the filter and measurements stay.

        The next reference starts a new pairing with capture, aligned afresh.
        """
        self._fifo.clear()
        self._sounded = False
        self._deficit = 0
        self._starved = _NEW_TIMELINE_FRAMES
        self._filter_all(self._aligner.abandon())

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
