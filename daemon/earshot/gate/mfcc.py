"""MFCC features and dynamic time warping in numpy, for the ``template`` wake-word engine.

The features follow the usual speech front end (the one python_speech_features gives Raven):
pre-emphasis 0.97, 25 ms Hamming windows every 10 ms, a 512-point FFT, 26 mel filters from 64 Hz to
7.6 kHz, log energies, DCT-II. c0 (loudness) is dropped and the cepstra are liftered, so the cosine
distance between frames compares spectral shape, not level.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

RATE_HZ = 16000
WINDOW_SAMPLES = 400
HOP_SAMPLES = 160
NFFT = 512
N_MELS = 26
N_CEPS = 13
_PREEMPH = 0.97
_LIFTER = 22
_FLOOR = 1e-10


def _mel(hz: NDArray[np.float64] | float) -> NDArray[np.float64]:
    return np.asarray(2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0), dtype=np.float64)


def _hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0), dtype=np.float64)


def _filterbank(low_hz: float = 64.0, high_hz: float = 7600.0) -> NDArray[np.float64]:
    points = _hz(np.linspace(_mel(low_hz), _mel(high_hz), N_MELS + 2))
    bins = np.floor((NFFT + 1) * points / RATE_HZ).astype(int)
    fb = np.zeros((N_MELS, NFFT // 2 + 1))
    for m in range(1, N_MELS + 1):
        left, centre, right = bins[m - 1], bins[m], bins[m + 1]
        for k in range(left, centre):
            fb[m - 1, k] = (k - left) / max(1, centre - left)
        for k in range(centre, right):
            fb[m - 1, k] = (right - k) / max(1, right - centre)
    return fb


def _dct_matrix() -> NDArray[np.float64]:
    n = np.arange(N_MELS)
    k = np.arange(N_CEPS)[:, None]
    dct = np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS)) * np.sqrt(2.0 / N_MELS)
    dct[0] /= np.sqrt(2.0)
    return np.asarray(dct, dtype=np.float64)


_FB_T = _filterbank().T
_DCT_T = _dct_matrix().T
_WINDOW = np.hamming(WINDOW_SAMPLES)
_LIFT = 1.0 + (_LIFTER / 2.0) * np.sin(np.pi * np.arange(N_CEPS) / _LIFTER)


def mfcc(pcm16k: NDArray[np.int16]) -> NDArray[np.float64]:
    """MFCC frames (``[n_frames, 12]``, c1..c12 liftered) of a whole clip; ``n = 1 + (len - 400) // 160``."""
    x = np.asarray(pcm16k, dtype=np.float64) / 32768.0
    if len(x) < WINDOW_SAMPLES:
        return np.zeros((0, N_CEPS - 1))
    emph = np.empty_like(x)
    emph[0] = x[0]
    emph[1:] = x[1:] - _PREEMPH * x[:-1]
    return _frames_to_mfcc(emph)


def _frames_to_mfcc(emph: NDArray[np.float64]) -> NDArray[np.float64]:
    n = 1 + (len(emph) - WINDOW_SAMPLES) // HOP_SAMPLES
    idx = np.arange(WINDOW_SAMPLES)[None, :] + HOP_SAMPLES * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(emph[idx] * _WINDOW, NFFT)) ** 2 / NFFT
    logmel = np.log(np.maximum(spec @ _FB_T, _FLOOR))
    ceps = (logmel @ _DCT_T) * _LIFT
    return np.asarray(ceps[:, 1:], dtype=np.float64)


class MfccStream:
    """MFCC frames of a stream fed in pieces of any length (the same frames :func:`mfcc` gives)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self._buf = np.zeros(0, dtype=np.float64)
        self._last = 0.0

    def process(self, pcm16k: NDArray[np.int16]) -> NDArray[np.float64]:
        """The frames completed by this audio (``[n, 12]``, possibly ``n = 0``)."""
        x = np.asarray(pcm16k, dtype=np.float64) / 32768.0
        if len(x) == 0:
            return np.zeros((0, N_CEPS - 1))
        emph = np.empty_like(x)
        emph[0] = x[0] - _PREEMPH * self._last
        emph[1:] = x[1:] - _PREEMPH * x[:-1]
        self._last = float(x[-1])
        buf = np.concatenate((self._buf, emph))
        if len(buf) < WINDOW_SAMPLES:
            self._buf = buf
            return np.zeros((0, N_CEPS - 1))
        n = 1 + (len(buf) - WINDOW_SAMPLES) // HOP_SAMPLES
        out = _frames_to_mfcc(buf)
        self._buf = buf[n * HOP_SAMPLES :]
        return out


def unit_rows(features: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows scaled to unit length (so a dot product is a cosine similarity); zero rows stay zero."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return np.asarray(features / np.maximum(norms, 1e-9), dtype=np.float64)


def dtw_distance(a: NDArray[np.float64], b: NDArray[np.float64], *, band: float = 0.3) -> float:
    """Normalised DTW distance between two feature sequences, cosine frame distance, Sakoe-Chiba band.

    The band is a fraction of the longer sequence around the (length-scaled) diagonal. The summed
    path cost is divided by ``len(a) + len(b)`` (as Raven does), so the result lies in [0, 1] for
    cosine distances in [0, 1] and does not grow with the phrase length.

    Returns:
        The distance; ``inf`` when either sequence is empty.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return float("inf")
    cost = 1.0 - unit_rows(a) @ unit_rows(b).T
    width = max(2, round(band * max(n, m)), abs(n - m) + 1)
    cols = np.arange(m)
    inf = np.inf
    prev = np.full(m, inf)
    for i in range(n):
        centre = i * (m - 1) / max(1, n - 1)
        row_cost = np.where(np.abs(cols - centre) <= width, cost[i], inf)
        if i == 0:
            a_vals = row_cost.copy()
            a_vals[1:] = inf
        else:
            diag = np.concatenate(([inf], prev[:-1]))
            a_vals = row_cost + np.minimum(prev, diag)
        # D[j] = min(A[j], D[j-1] + c[j]) in closed form: S[j] + min_{k<=j}(A[k] - S[k]).
        finite = np.where(np.isfinite(row_cost), row_cost, 0.0)
        s = np.cumsum(finite)
        d = s + np.minimum.accumulate(a_vals - s)
        d[~np.isfinite(row_cost)] = inf
        prev = d
    return float(prev[-1] / (n + m))
