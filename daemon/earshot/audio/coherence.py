"""How much of the cancelled signal is still the reference: the residual echo's coherence.

The adaptive filter leaves some echo behind, and not evenly: a band the reply has hardly sounded yet
is barely trained. Measured on the bench's engaged run (a plain delay, no room, no clip): the last
syllable of a reply ("-noon", all of it under 500 Hz) came out of the canceller only 10 dB under the
microphone, 5 dB over the residual bound, for 150 ms: a false barge-in in most runs. That residual
was the reference itself, 20 ms late, through a filter (the part of the echo path the canceller had
not learned). A user talking over the reply is not: their voice has nothing in common with what the
device plays.

:class:`EchoCoherence` measures, per capture chunk, the share of the cleaned signal's power that a
linear filter of the reference explains: the magnitude-squared coherence between the reference (taken
at the echo's delay) and the cleaned signal in each frequency band, weighted by the cleaned power in
that band, from cross- and auto-spectra smoothed over the last ~100 ms (Welch's method with an
exponential average). A time-domain correlation does not do: speech is low-pass, and two low-pass
voices correlate by chance at some lag within a few milliseconds (measured on flite speech, a user's
voice against another voice as the reference: median 0.59 over 10 ms, 0.14 over 30 ms
pre-emphasised, with a 99th percentile of 0.54 that overlapped the residual's 0.41-0.71 there).

Pure numpy; the state is two short lines and three smoothed spectra.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["EchoCoherence"]

_WINDOW = 320
"""Samples per spectral frame (20 ms at 16 kHz), a Hann window, hop of one capture chunk."""
_FFT = _WINDOW
_MEMORY_FRAMES = 8.0
"""Time constant of the spectral averages, in chunks: long enough that two unrelated signals show little
coherence by chance, short enough to follow a user who starts talking over the residual."""
_EPS = 1e-9


class EchoCoherence:
    """The reference and the cleaned signal of the last chunks, and their smoothed spectra.

    Args:
        max_lag: the largest delay (samples) of the echo behind its reference it will be asked about.
    """

    def __init__(self, max_lag: int) -> None:
        self.max_lag = max(0, max_lag)
        self._ref = np.zeros(self.max_lag + _WINDOW, dtype=np.float64)
        self._out = np.zeros(_WINDOW, dtype=np.float64)
        self._hann = np.hanning(_WINDOW)
        self._frames_in = np.zeros((2, _WINDOW))  # both windowed frames, one FFT call for the two
        self._alpha = float(np.exp(-1.0 / _MEMORY_FRAMES))
        self._beta = 1.0 - self._alpha
        bins = _FFT // 2 + 1
        self._sxx = np.zeros(bins)
        self._syy = np.zeros(bins)
        self._sxy = np.zeros(bins, dtype=np.complex128)
        self._frames = 0

    def push(self, ref: NDArray[np.int16], cleaned: NDArray[np.int16]) -> None:
        """One capture chunk: the reference paired with it and what the canceller made of it."""
        _shift_in(self._ref, ref)
        _shift_in(self._out, cleaned)

    def clear(self) -> None:
        """Forget everything (a new pairing of reference and capture, or the reference went quiet)."""
        self._ref[:] = 0.0
        self._out[:] = 0.0
        self.reset_spectra()

    def reset_spectra(self) -> None:
        """Forget the averaged spectra (the lines stay)."""
        if not self._frames:
            return
        self._sxx[:] = 0.0
        self._syy[:] = 0.0
        self._sxy[:] = 0.0
        self._frames = 0

    def update(self, lag: int) -> float:
        """Add the latest frame to the averages, the reference taken ``lag`` samples before the cleaned signal.

        Returns:
            The share (0..1) of the cleaned signal's recent power that the reference explains
            linearly; 0.0 while nothing has been heard.
        """
        lag = min(max(0, lag), self.max_lag)
        end = self._ref.size - lag
        frames = self._frames_in
        np.multiply(self._ref[end - _WINDOW : end], self._hann, out=frames[0])
        np.multiply(self._out, self._hann, out=frames[1])
        spectra = np.fft.rfft(frames, _FFT)
        x, y = spectra[0], spectra[1]
        a, b = self._alpha, self._beta
        pxx = x.real * x.real
        pxx += x.imag * x.imag
        pxx *= b
        self._sxx *= a
        self._sxx += pxx
        pyy = y.real * y.real
        pyy += y.imag * y.imag
        pyy *= b
        self._syy *= a
        self._syy += pyy
        pxy = np.conj(x)
        pxy *= y
        pxy *= b
        self._sxy *= a
        self._sxy += pxy
        self._frames += 1
        total = float(self._syy.sum())
        if total <= _EPS:
            return 0.0
        sxy = self._sxy
        explained = sxy.real * sxy.real
        explained += sxy.imag * sxy.imag
        explained /= self._sxx + _EPS
        return float(min(1.0, explained.sum() / total))


def _shift_in(line: NDArray[np.float64], chunk: NDArray[np.int16]) -> None:
    x = np.asarray(chunk, dtype=np.float64).reshape(-1)
    n = min(x.size, line.size)
    if n:
        line[:-n] = line[n:]
        line[-n:] = x[-n:]
