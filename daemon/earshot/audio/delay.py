"""Where the echo of the reference lands in the microphone: the delay estimate that re-aligns each reply.

The echo canceller pairs reference and capture by count, starting wherever the first reference sample
of a reply happens to arrive. On a real device that start moves from reply to reply by a capture burst
and a device buffer (measured through the PulseAudio plugin: the echo came 6 to 28 ms after its paired
reference, a different figure each reply), so the adaptive filter, converged on the last reply's delay,
cancelled little of the next one's first words. :func:`estimate_delay` measures the delay of the echo
with the generalised cross-correlation with phase transform (GCC-PHAT): whitened, the correlation of
speech with its own echo is one sharp peak at the delay, where the plain correlation has a broad hump
and side peaks at the pitch period. The canceller uses it to move each reply's reference to the same
delay (:class:`~earshot.audio.echo.EchoCanceller`).

Pure: numpy arrays in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["DelayEstimate", "estimate_delay", "whitened_correlation"]

# Bins weaker than this fraction of the strongest cross-spectrum bin are not whitened all the way up:
# with a quiet or band-limited reference they hold only noise, and full whitening let them place the
# peak at random.
_PHAT_FLOOR = 1e-3
_DIRECT_PATH_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class DelayEstimate:
    """The echo's delay behind the reference and how clearly the correlation says so.

    Attributes:
        lag: samples by which the echo in the microphone follows the reference (negative: it leads).
        confidence: the correlation peak over the root mean square of the correlation across the
            searched lags; unrelated signals stay under about 5, an echo 40 ms into a reply reaches 7
            and more and keeps rising.
    """

    lag: int
    confidence: float


def whitened_correlation(
    mic: NDArray[np.floating] | NDArray[np.integer],
    ref: NDArray[np.floating] | NDArray[np.integer],
    min_lag: int,
    max_lag: int,
) -> NDArray[np.float64] | None:
    """GCC-PHAT of ``mic`` against ``ref`` at lags ``min_lag`` to ``max_lag - 1``, over its root mean square.

    Returns:
        One value per lag (index 0 is ``min_lag``), or None when either signal is silent or the lag
        range is empty.
    """
    if max_lag <= min_lag or mic.size == 0 or ref.size == 0:
        return None
    m = np.asarray(mic, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    # Long enough that no searched lag wraps onto another (a circular correlation): twice the samples
    # cost twice the FFT, every half second while the canceller measures where its filter works.
    n = 1 << int(np.ceil(np.log2(max(r.size + max(max_lag, 0), m.size + max(-min_lag, 0)))))
    cross = np.fft.rfft(m, n) * np.conj(np.fft.rfft(r, n))
    magnitude = np.abs(cross)
    peak = float(magnitude.max())
    if peak <= 0.0:
        return None
    correlation = np.fft.irfft(cross / (magnitude + _PHAT_FLOOR * peak), n)
    values = correlation[np.arange(min_lag, max_lag) % n]
    rms = float(np.sqrt(np.mean(values**2)))
    if rms <= 0.0:
        return None
    out: NDArray[np.float64] = values / rms
    return out


def estimate_delay(
    mic: NDArray[np.floating] | NDArray[np.integer],
    ref: NDArray[np.floating] | NDArray[np.integer],
    min_lag: int,
    max_lag: int,
) -> DelayEstimate | None:
    """Estimate by GCC-PHAT how many samples the echo of ``ref`` follows it in ``mic``.

    Args:
        mic: the microphone over the same span as ``ref`` (same start; any length).
        ref: the reference paired with it.
        min_lag: the smallest lag searched (may be negative).
        max_lag: one past the largest lag searched.

    Returns:
        The lag with the highest whitened correlation and its confidence, or None when either signal
        is silent or the lag range is empty.
    """
    values = whitened_correlation(mic, ref, min_lag, max_lag)
    if values is None:
        return None
    # The direct path: the earliest peak nearly as strong as the strongest. In a reverberant room a
    # reflection's whitened peak can outgrow it by a little, and which one won changed from one
    # stretch of speech to the next, moving each reply's reference by the reflection's delay.
    strongest = float(values.max())
    best = int(np.flatnonzero(values >= _DIRECT_PATH_SHARE * strongest)[0])
    while best + 1 < values.size and values[best + 1] > values[best]:
        best += 1  # up to the top of that peak
    return DelayEstimate(lag=min_lag + best, confidence=float(values[best]))
