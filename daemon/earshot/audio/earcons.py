"""Earcons: short sounds generated at run time (no asset files).

Each is a few tones with raised-cosine edges (no clicks), at 24 kHz mono int16, the rate the
playback path takes. They go through the same playback path as replies (key ``earcon:<kind>``)
so the echo canceller sees them and the truncation accounting ignores them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["EARCON_KINDS", "earcon"]

RATE_HZ = 24000

# kind -> sequence of (frequency Hz, duration ms); 0 Hz is a pause
_SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "wake": ((660.0, 70.0), (0.0, 15.0), (990.0, 90.0)),
    "listening_end": ((880.0, 60.0), (0.0, 10.0), (660.0, 60.0)),
    "error": ((330.0, 120.0), (0.0, 60.0), (330.0, 120.0)),
    "offline": ((784.0, 90.0), (587.0, 90.0), (392.0, 160.0)),
    "resting": ((440.0, 220.0),),
    "timer": ((988.0, 100.0), (0.0, 60.0), (988.0, 100.0), (0.0, 60.0), (1319.0, 160.0)),
}
EARCON_KINDS = tuple(_SHAPES)


def earcon(kind: str, *, level_dbfs: float = -14.0, rate_hz: int = RATE_HZ) -> NDArray[np.int16]:
    """Return the earcon ``kind`` as mono int16 samples.

    Args:
        kind: one of :data:`EARCON_KINDS`.
        level_dbfs: peak level of the tones.
        rate_hz: sample rate of the result.

    Raises:
        KeyError: an unknown kind.
    """
    amplitude = 32767.0 * 10 ** (level_dbfs / 20.0)
    parts: list[NDArray[np.float64]] = []
    for freq_hz, dur_ms in _SHAPES[kind]:
        n = round(rate_hz * dur_ms / 1000.0)
        if freq_hz <= 0:
            parts.append(np.zeros(n))
            continue
        t = np.arange(n) / rate_hz
        tone = np.sin(2 * np.pi * freq_hz * t) + 0.25 * np.sin(4 * np.pi * freq_hz * t)
        edge = min(n // 2, round(rate_hz * 0.008))
        env = np.ones(n)
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, edge))
        env[:edge] = ramp
        env[n - edge :] = ramp[::-1]
        parts.append(tone / 1.25 * env)
    pcm = np.concatenate(parts) * amplitude
    return np.clip(np.round(pcm), -32768, 32767).astype(np.int16)
