"""The alignment of each new pairing of reference and capture, for the echo canceller.

The canceller pairs reference and capture by count (:mod:`earshot.audio.echo`), and where a pairing
starts depends on capture bursts and device buffering: through the PulseAudio plugin the echo came 6
to 28 ms after its paired reference, a different delay each reply. A filter converged on the last
reply's delay then cancelled little of the next reply's first words, loud enough to pass for a user
talking over it. So each new pairing is aligned: once the reference is loud, the echo's delay is
measured by GCC-PHAT (:mod:`earshot.audio.delay`), and the reference is moved (zeros inserted or
samples skipped in the FIFO) so that the echo always follows it by the target, where the filter has
converged. Until then the chunks are held back from the filter (the canceller reports them
``settling``), so that it never adapts on a misaligned pairing.

While the filter runs, the delay it works at is measured too (:meth:`PairingAligner.track`), and a new
pairing is moved there rather than to the configured target when it is within bounds.

Pure numpy; the FIFO it moves samples in is the canceller's.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from earshot.audio.delay import estimate_delay, whitened_correlation
from earshot.audio.echometer import FULL_SCALE_POWER, power
from earshot.audio.reffifo import ReferenceFifo

__all__ = ["AlignStep", "Chunk", "PairingAligner"]

logger = logging.getLogger("earshot.audio.echo")

# Delay estimation on a new pairing: reference chunks at least this loud count (quieter ones leave an
# echo under the room noise), it starts after 4 of them, repeats every 2nd chunk, and accepts a delay
# once two estimates in a row agree within 2 samples at a confidence of 8 or more (the PulseAudio tier's
# plain delay: 7 at 40 ms of echo, 10-12 at 60-100 ms), or three at 6 or more (a reverberant room
# spreads the peak: 6-8 at 100-200 ms); unrelated signals stay under 5. After 30 loud chunks without
# that the pairing is left as it is (no echo to align, or a user talking all over it).
_ALIGN_LOUD_DBFS = -45.0
_ALIGN_MIN_LOUD = 4
_ALIGN_EVERY = 2
_ALIGN_CONFIDENCE = 8.0
_ALIGN_WEAK_CONFIDENCE = 6.0
_ALIGN_WEAK_RUN = 3
_ALIGN_AGREE = 2
_ALIGN_GIVE_UP = 30
# ...or when the reference stayed under the loud level for a filter span after the last loud chunk (a
# short earcon that ended before it could be aligned): nothing more will come to align on, and a
# pairing left "settling" would keep the capture held (the uplink guard) until the next playback.
_ALIGN_PREROLL_FRAMES = 3  # the estimate looks from this many chunks before the first loud one
# While filtering, the delay the filter works at is measured too (over the last 0.5 s, once 40 of its
# 50 chunks had loud reference): a new pairing is moved to it, not to the configured target, when it
# lies within these bounds. The echo path drifts within a reply (two clocks; PulseAudio's loopback
# moved 2.7 samples a second), and a filter converged 2-3 samples away from where the next reply was
# put cancelled 10-15 dB less of its first second.
_TRACK_FRAMES = 50
_TRACK_MIN_LOUD = 40
# Within a pairing the echo can jump behind its reference: an underrun's gap in the output (the sound
# server plays silence, then the rest of the reply, later by the gap, while the count pairing goes on)
# or a device that re-buffers. The filter, converged where the echo was, then cancels little, and the
# residual, 8-12 dB under the microphone, passed for the user (the PulseAudio room on a loaded machine:
# a 24 ms gap 0.5 s into a reply, a barge-in 0.4 s later). So from the second loud chunk in a row
# cancelled by less than _SHIFT_POOR_DB, where the residual's echo lies is measured (GCC-PHAT of the
# cleaned signal against the reference over the last _SHIFT_WINDOW chunks): what a converged filter
# leaves of the echo it knows is small, so the residual's correlation is the moved echo's, at its new
# lag, a few chunks after the move, where the microphone's own correlation still has the old echo in
# most of the window. A user talking over the reply does not correlate with the reference, and an echo
# the filter has not learned yet lies where it was. A lag at least _SHIFT_MIN samples away from where
# the pairing puts the echo, confident in both the residual and the microphone, moves the reference
# there at once: the barge-in detector confirms speech after 8 chunks, and the move's settling starts
# its count afresh. Measured (a 16 s reply, the gap 8 s in): on a plain delay (the PulseAudio room's
# path) gaps of 3, 10 and 24 ms no longer barge in, while 5, 40 and 80 ms still do (found too late, or
# not at all: the residual of a long gap correlates where the echo was); the loaded PulseAudio room's
# 24 ms gap is found in 4 chunks. In the reverberant test rooms the residual spreads (confidence 4-6) and
# nothing moves. It also mends a new pairing the alignment put a few samples off (the loaded room: a
# reply's echo aligned 6 samples early, cancelled by 3-5 dB, a barge-in 0.1 s in), hence a _SHIFT_MIN of
# 3 samples: 2 is what the alignment's estimates agree within.
# The echo can also come earlier: a sound server whose stream underran drops what was written behind its
# read index, and the rest plays early (the PulseAudio room on an idle machine, and CI: the echo 3.6 ms
# earlier 1.3 s into a reply, a barge-in at 1.72 s). The reference then skips as much. Earlier finds are
# held to more (_plainly_earlier): a voiced reply's correlation has side peaks a pitch period or two from
# the echo, and in clean room runs the residual found them (0 and 464 for an echo at 320).
# A move is measured from where the pairing's alignment put the echo (a move leaves it there: the
# reference moves with the echo), and the echo must not already have been at the new lag in the microphone
# half a second earlier (the first half of the last _SHIFT_RING chunks): in the file backend's clipping
# room a pairing put "at -9 samples" had its echo at 320 all along, and "moving" it there cost a barge-in
# in 4 of 20 replies.
_SHIFT_WINDOW = 8
_SHIFT_RING = 48
"""Chunks kept: the window, and before it the stretch where a moved echo must not already have been."""
_SHIFT_POOR_DB = 12.0
_SHIFT_MIN_SUSPECT = 2
_SHIFT_EAGER = 8
"""Suspect chunks in a row measured each; after that every _SHIFT_EVERY-th: a room the canceller never
cancels well (every loud chunk suspect) costs a quarter of the measures, not one per chunk (0.2-0.4 ms each
here, so some 3-5 ms on a Pi Zero 2 W core)."""
_SHIFT_EVERY = 4
_SHIFT_MIN = 3
_SMALL_MOVE = 16
"""A move shorter than this (1 ms) is followed only once more than _SHIFT_EAGER loud chunks in a row were
cancelled poorly: a pairing put a few samples off cancels poorly on every chunk, but an output gap is never
that short, and a brief poor stretch of a converged filter is not a move. Measured in the engaged bench's
file room (no output gaps at all): a 0.6 ms "move" after two poor chunks broke a filter cancelling 24.7 dB
and the reply interrupted itself 2.3 s in, in 6 runs of 6 at this commit and at the one before; on the
PulseAudio room inside a Pi 4 core's quota a 0.2 ms one sent the reply to gated duplex."""
_EARLIER_CONFIDENCE = 2 * _ALIGN_CONFIDENCE
_SHIFT_CALM = 5  # well-cancelled loud chunks after which the suspicion is dropped
FOLLOW_MOVES = True
"""Follow the echo's moves within a pairing (see above); tests switch it off to show what it changes."""
FOLLOW_EARLIER = True
"""Follow moves to an earlier echo too; tests switch it off to show what that changes."""

Chunk = tuple[NDArray[np.int16], NDArray[np.int16], bool]
"""A capture chunk, its paired reference, and whether the user was believed to speak."""


@dataclass(frozen=True, slots=True)
class AlignStep:
    """What the canceller does with a chunk of a pairing being aligned.

    Attributes:
        release: held chunks to run through the filter now, in order.
        current: the chunk just taken is the last of ``release`` (its output is the chunk's output);
            else it is filtered on its own after them (unless ``held``).
        held: the chunk is held back: pass the microphone on raw, marked settling.
    """

    release: tuple[Chunk, ...]
    current: bool
    held: bool


_FILTER_NOW = AlignStep((), current=False, held=False)
_HOLD = AlignStep((), current=False, held=True)


class PairingAligner:
    """Aligns new pairings of reference and capture (see the module docstring).

    Args:
        fifo: the canceller's reference FIFO (the moves happen there).
        frame_samples: samples per chunk.
        rate_hz: the sample rate.
        filter_samples: the adaptive filter's length (the longest delay looked for).
        target: where the echo is put behind its reference, in samples (None: no alignment).
        output_lag: how many samples the canceller's output comes after its input (:meth:`watch` measures
            the echo left in it).
    """

    def __init__(
        self,
        fifo: ReferenceFifo,
        *,
        frame_samples: int,
        rate_hz: int,
        filter_samples: int,
        target: int | None,
        output_lag: int = 0,
    ) -> None:
        self._fifo = fifo
        self._n = frame_samples
        self._rate_hz = rate_hz
        self._filter_samples = filter_samples
        self._span_frames = max(1, -(-filter_samples // frame_samples))
        self._target = target
        self._output_lag = max(0, output_lag)
        self._loud_power = FULL_SCALE_POWER * 10.0 ** (_ALIGN_LOUD_DBFS / 10.0)
        self._poor_ratio = 10.0 ** (_SHIFT_POOR_DB / 10.0)
        self.aligning = False
        """A pairing is being aligned: its chunks go through :meth:`take`."""
        # Chunks of the new pairing from just before its first loud reference: (mic, paired reference,
        # near_end, held). Held chunks (from the first loud one on) have not been through the filter yet.
        self._align_frames: deque[tuple[NDArray[np.int16], NDArray[np.int16], bool, bool]] = deque()
        self._align_loud = 0
        self._align_quiet = 0  # reference chunks under the loud level since the last loud one
        self._align_recent: list[tuple[int, float]] = []  # (lag, confidence) of the agreeing estimates in a row
        self._track_ref = np.zeros(_TRACK_FRAMES * frame_samples, dtype=np.int16)
        self._track_mic = np.zeros(_TRACK_FRAMES * frame_samples, dtype=np.int16)
        self._track_at = 0
        self._track_loud = 0
        self._track_lag: int | None = None
        # A filter working outside these lags (drifted far) is not followed: the next pairing goes to the target.
        self._track_bounds = (target or 0) // 2, filter_samples // 2
        self._watch_out = np.zeros(_SHIFT_RING * frame_samples, dtype=np.int16)
        self._watch_ref = np.zeros(_SHIFT_RING * frame_samples, dtype=np.int16)
        self._watch_mic = np.zeros(_SHIFT_RING * frame_samples, dtype=np.int16)
        self._watch_at = 0
        self._watch_filled = 0
        self._suspect = 0  # poorly cancelled loud chunks since the last calm stretch
        self._calm = 0
        self._settle_left = 0
        # Where this pairing put the echo (its alignment, then each move): what watch() measures a move
        # from. Not the periodic measure of where the filter works: in the file backend's clipping room
        # that read -9 samples once, with the echo at 320, and the echo "moved" by 20.6 ms from there.
        self._watch_lag: int | None = None
        self.shifts = 0
        """Moves of the echo within a pairing found and followed (see :meth:`watch`)."""
        self.delay_samples: int | None = None
        """The echo's delay behind its reference as last measured on a new pairing (before the move)."""
        self.alignments = 0
        """New pairings whose echo delay was measured (and the reference moved to the target)."""

    @property
    def echo_lag(self) -> int | None:
        """Where the echo follows its reference: as the filter was last measured to work, else the target."""
        return self._track_lag if self._track_lag is not None else self._target

    def begin(self) -> None:
        """A new pairing starts: align it (when a target is set).

        A pairing that ended before it was aligned: its held chunks went on raw, and the filter does
        not learn from them (see :meth:`take`).
        """
        self.aligning = self._target is not None
        self._watch_filled = 0  # the watch window holds the old pairing
        self._watch_lag = None  # until this one is aligned
        self._suspect = 0
        self._settle_left = 0  # a move of the old pairing says nothing of this one
        self._align_frames.clear()
        self._align_loud = 0
        self._align_quiet = 0
        self._align_recent.clear()

    def take(
        self,
        mic: NDArray[np.int16],
        ref: NDArray[np.int16],
        near_end: bool,
        *,
        quiet_echo: bool,
        starved: bool,
    ) -> AlignStep:
        """Take one chunk of a new pairing, while its echo delay is not known yet (call only while :attr:`aligning`).

        Before the first loud reference the chunk is only remembered (a few, for the estimate): filter it
        now. From then on chunks are held back from the filter until the delay is known; then they are
        re-paired with the moved reference and handed back to be filtered in order, this one last, so
        the filter never adapts on a misaligned pairing.

        Args:
            mic: the capture chunk.
            ref: the reference paired with it.
            near_end: the user is believed to speak (no delay is estimated over them).
            quiet_echo: the microphone hardly hears the speaker (the measured ERL): nothing to align on.
            starved: the reference FIFO ran dry on this chunk (the sound has ended).
        """
        if quiet_echo:
            self.aligning = False  # the microphone hardly hears the speaker: nothing to align on
            return AlignStep(self._release_held(), current=False, held=False)
        loud = power(ref) >= self._loud_power
        if not loud and not self._align_loud:
            self._align_frames.append((mic.copy(), ref.copy(), near_end, False))
            while len(self._align_frames) > _ALIGN_PREROLL_FRAMES:
                self._align_frames.popleft()
            return _FILTER_NOW
        if not loud:
            self._align_quiet += 1
            if self._align_quiet >= self._span_frames:
                # The sound went quiet for a filter span before any echo of it was found (a short cue
                # into a microphone that does not hear the speaker, or a user talking all over it):
                # nothing here to cancel, and nothing to learn from. Its chunks went on raw, and the
                # filter never sees them: a filter that adapted on a question spoken over the
                # engagement earcon took the voice for the cue's echo and cut it by 6-20 dB, for as
                # long as the cue was in its span.
                if starved:
                    self.aligning = False  # it ended: the reference ran dry
                    self._align_frames.clear()
                else:
                    # It goes on, quietly (the end-of-turn cue, then a reply that starts with a breath):
                    # the next loud stretch is aligned afresh. Left unaligned, the reply played against a
                    # filter converged where the last reply's echo was, and barged in on itself.
                    self.begin()
                return _FILTER_NOW
        else:
            self._align_quiet = 0
        self._align_frames.append((mic.copy(), ref.copy(), near_end, True))
        self._align_loud += loud
        # No delay is estimated while the user talks over the sound (near_end): a tonal cue under a
        # voice gave a confident but false delay after 5 chunks. With a fresh filter, adapting on that
        # double talk cut the user's words by 6-20 dB for the next half second; with one converged on
        # the last reply, the cue moved it off its delay and the next reply's echo barged in twice
        # (PulseAudio room, 7-9 dB over the residual bound). A cue the user talked over all along ends
        # unaligned, so the filter never sees it and keeps what it learned.
        # And only on a new loud chunk: on the quiet ones after an even count the same loud chunks were
        # read again and again, and three such readings of a cue at a weak confidence were "agreement"
        # (the PulseAudio room: a cue's 49.4 ms twice at 6-7 while the reply's echo lay at 43.2 ms). A
        # cue aligned so leaves the reply's first words on a pairing 6 ms off; a false barge-in at a
        # reply's first loud chunks, with nothing cancelled and the room's echo steady, fits that.
        if loud and not near_end and self._align_loud >= _ALIGN_MIN_LOUD and self._align_loud % _ALIGN_EVERY == 0:
            lag = self._estimate()
            if lag is not None:
                self._move_reference(lag)
                self.aligning = False
                return AlignStep(self._release_held(), current=True, held=False)
        if self._align_loud >= _ALIGN_GIVE_UP:
            self.aligning = False  # no echo to align on, or a user talking all over it
            return AlignStep(self._release_held(), current=True, held=False)
        return _HOLD

    def _estimate(self) -> int | None:
        mics = np.concatenate([f[0] for f in self._align_frames])
        refs = np.concatenate([f[1] for f in self._align_frames])
        est = estimate_delay(mics, refs, -self._n, self._filter_samples)
        if est is None or est.confidence < _ALIGN_WEAK_CONFIDENCE:
            self._align_recent.clear()
            return None
        if self._align_recent and abs(est.lag - self._align_recent[-1][0]) > _ALIGN_AGREE:
            self._align_recent.clear()
        self._align_recent.append((est.lag, est.confidence))
        strong = [c >= _ALIGN_CONFIDENCE for _, c in self._align_recent]
        if len(strong) >= _ALIGN_WEAK_RUN or (len(strong) >= 2 and all(strong[-2:])):
            return est.lag
        return None

    def _move_reference(self, lag: int) -> None:
        """Re-pair the held chunks and the queue so that the echo follows its reference by the target."""
        assert self._target is not None
        target = self._target
        low, high = self._track_bounds
        if self._track_lag is not None and low <= self._track_lag <= high:
            target = self._track_lag  # where the filter is
        shift = lag - target  # > 0: the echo comes later than the target: reference later
        held = [i for i, f in enumerate(self._align_frames) if f[3]]
        n = self._n
        span = len(held) * n
        refs = np.concatenate([self._align_frames[i][1] for i in held])
        if shift >= 0:
            line = np.concatenate((np.zeros(shift, dtype=np.int16), refs))
            self._fifo.unread(line[span:])
        else:
            # Earlier only by what is queued: skipping samples not yet here would zero-pad every later
            # chunk (each one short, each short owed again). The echo then follows by more than the target.
            extra = np.zeros(min(-shift, len(self._fifo)), dtype=np.int16)
            shift = -self._fifo.read(extra, extra.size)
            line = np.concatenate((refs, extra))[-shift:]
        for k, i in enumerate(held):
            mic, _, near_end, _ = self._align_frames[i]
            self._align_frames[i] = (mic, line[k * n : (k + 1) * n].copy(), near_end, True)
        logger.debug(
            "echo %.1f ms behind its reference: reference moved %+d samples later", 1000 * lag / self._rate_hz, shift
        )
        self.delay_samples = lag
        self._track_lag = lag - shift  # the pairing is where the filter is, until measured again
        self._watch_lag = self._track_lag
        self._track_loud = 0
        self.alignments += 1

    def track(self, mic: NDArray[np.int16], ref: NDArray[np.int16], ref_power: float, near_end: bool) -> None:
        """A chunk the filter ran on: the delay it works at is measured every ``_TRACK_FRAMES`` mostly loud chunks."""
        if self._target is None:
            return
        n = self._n
        at = self._track_at
        self._track_ref[at * n : (at + 1) * n] = ref
        self._track_mic[at * n : (at + 1) * n] = mic
        self._track_at = (at + 1) % _TRACK_FRAMES
        self._track_loud += ref_power >= self._loud_power and not near_end
        if self._track_loud < _TRACK_MIN_LOUD or self._track_at:
            if not self._track_at:
                self._track_loud = 0
            return
        self._track_loud = 0
        est = estimate_delay(self._track_mic, self._track_ref, -n, self._filter_samples)
        if est is not None and est.confidence >= _ALIGN_CONFIDENCE:
            self._track_lag = est.lag

    @property
    def settling(self) -> bool:
        """The reference was just moved after the echo jumped: the filter's output is not to be trusted yet."""
        return self._settle_left > 0

    def watch(
        self,
        mic: NDArray[np.int16],
        out: NDArray[np.int16],
        ref: NDArray[np.int16],
        ref_power: float,
        mic_power: float,
        out_power: float,
        *,
        converged: bool,
    ) -> None:
        """A chunk the filter ran on: follow the echo if it jumped behind its reference.

        Args:
            mic: the microphone chunk.
            out: the cleaned chunk.
            ref: the reference paired with it.
            ref_power: ``ref``'s mean square.
            mic_power: the microphone chunk's mean square.
            out_power: ``out``'s mean square.
            converged: the filter has run long enough to have converged (a fresh one cancels little anywhere).
        """
        if self._settle_left:
            self._settle_left -= 1
        if self._target is None or not converged or not FOLLOW_MOVES:
            return
        n = self._n
        at = self._watch_at
        self._watch_out[at * n : (at + 1) * n] = out
        self._watch_mic[at * n : (at + 1) * n] = mic
        self._watch_ref[at * n : (at + 1) * n] = ref
        self._watch_at = (at + 1) % _SHIFT_RING
        self._watch_filled = min(_SHIFT_RING, self._watch_filled + 1)
        if ref_power < self._loud_power:
            return
        if out_power * self._poor_ratio < mic_power:
            self._calm += 1
            if self._calm >= _SHIFT_CALM:
                self._suspect = 0
            return
        self._calm = 0
        self._suspect += 1
        if self._suspect < _SHIFT_MIN_SUSPECT or self._watch_filled < _SHIFT_WINDOW:
            return
        if self._suspect > _SHIFT_EAGER and self._suspect % _SHIFT_EVERY:
            return
        ring = np.r_[self._watch_at * n : _SHIFT_RING * n, 0 : self._watch_at * n]
        order = ring[-_SHIFT_WINDOW * n :]
        lag = self._watch_lag
        if lag is None:
            return
        est = self._moved_to(self._watch_out[order], self._watch_mic[order], self._watch_ref[order], lag)
        if est is None:
            return
        if abs(est - lag) < _SMALL_MOVE and self._suspect <= _SHIFT_EAGER:
            # A move of less than a millisecond only after a longer poor stretch (see _SMALL_MOVE).
            return
        if self._watch_filled == _SHIFT_RING:
            # Where the echo was before the window: a move that finds it already there moved nothing (the
            # pairing's lag was off, and the filter had long found the echo where it is).
            before = ring[: (_SHIFT_RING // 2) * n]
            prior = estimate_delay(self._watch_mic[before], self._watch_ref[before], -n, self._filter_samples)
            if prior is not None and prior.confidence >= _ALIGN_CONFIDENCE and abs(prior.lag - est) < _SHIFT_MIN:
                return
        shift = est - lag  # the echo comes this much later (or earlier): so does the reference, from the next chunk
        if shift > 0:
            self._fifo.unread(np.zeros(shift, dtype=np.int16))
        else:
            self._fifo.skip(-shift)
        # Until the filter's span has passed the move, its input holds the old pairing: not to be trusted.
        self._settle_left = -(-(max(est, lag) + n) // n)
        self._suspect = 0
        # The reference moved with the echo: paired anew, the echo lies at ``lag`` again, and the next move is
        # measured from there (taking ``est`` as the new place read the echo, found back at ``lag``, as a
        # move the other way).
        self._watch_filled = 0  # the window holds the old pairing
        self._track_at = 0
        self._track_loud = 0
        self.shifts += 1
        log = logger.info if self.shifts == 1 else logger.debug  # once at INFO: an underrunning device repeats it
        log(
            "echo moved %.1f ms %s behind its reference within a sound (%s): reference moved (%d)",
            1000 * abs(shift) / self._rate_hz,
            "later" if shift > 0 else "earlier",
            "an output gap" if shift > 0 else "the output skipped ahead",
            self.shifts,
        )

    def _moved_to(self, out: NDArray[np.int16], mic: NDArray[np.int16], ref: NDArray[np.int16], lag: int) -> int | None:
        """Where the echo of a poorly cancelled window moved to, away from ``lag``, if both measures say so."""
        n = self._n
        # The canceller's output may come after its input (a chunk: the residual suppressor's frame), and
        # so does the echo left in it.
        residual = estimate_delay(out, ref, 0, self._filter_samples + self._output_lag)
        if residual is None or residual.confidence < _ALIGN_CONFIDENCE:
            return None
        moved = residual.lag - self._output_lag
        if abs(moved - lag) < _SHIFT_MIN or (moved < lag and not FOLLOW_EARLIER):
            return None  # where it was: echo the filter has not learned yet
        # The microphone must hold the echo there too: the residual alone also correlates with the reference
        # where the filter's own prediction lies (a lag of 0 in speexdsp's output, found in the test rooms).
        direct = whitened_correlation(mic, ref, -n, self._filter_samples)
        if direct is None or not -n <= moved < self._filter_samples or direct[moved + n] < _ALIGN_CONFIDENCE:
            return None
        # ... and more than where it was: the echo moved, it did not just grow a second path the filter has
        # not learned. (Alone this did not stop the file backend room's false moves: the lag watch() gives
        # is where the pairing put the echo, and the check of half a second earlier there does.)
        if -n <= lag < self._filter_samples and direct[moved + n] <= direct[lag + n]:
            return None
        if moved < lag and not self._plainly_earlier(direct, moved, lag):
            return None
        return moved

    def _plainly_earlier(self, direct: NDArray[np.float64], moved: int, lag: int) -> bool:
        """An earlier echo is followed only when the microphone says so plainly.

        A voiced reply repeats itself every pitch period, so its own correlation has side peaks a period or
        two either side of the echo, and a filter's residual can sit there as well. Earlier finds in clean
        test runs were such peaks (at 0 and 464 for an echo at 320), never the strongest in the microphone.
        A server's skip is: the echo at its new place is the microphone's clear maximum (28 for 0 at the old
        place, in the run where it happened).
        """
        n = self._n
        at_new = float(direct[moved + n])
        at_old = float(direct[lag + n]) if -n <= lag < self._filter_samples else 0.0
        top = int(np.argmax(direct)) - n
        return abs(top - moved) <= _SHIFT_MIN and at_new >= _EARLIER_CONFIDENCE and at_new >= 2.0 * max(at_old, 1.0)

    def abandon(self) -> tuple[Chunk, ...]:
        """Stop aligning (the reference was dropped); the held chunks, to be filtered in order."""
        self.aligning = False
        return self._release_held()

    def _release_held(self) -> tuple[Chunk, ...]:
        held = tuple((mic, ref, near_end) for mic, ref, near_end, is_held in self._align_frames if is_held)
        self._align_frames.clear()
        return held
