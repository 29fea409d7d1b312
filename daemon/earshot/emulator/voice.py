"""The emulator's voice: which engine speaks, a tone when none does, and the wire formats.

Everything is mono int16 at 24 kHz (the GA ``audio/pcm`` rate); :func:`to_wire` converts to the
session's output format. Speaking itself (a child process) is :mod:`earshot.emulator.tts`.
"""

from __future__ import annotations

import base64
import shutil

import numpy as np
import soxr
from numpy.typing import NDArray

import earshot.emulator.g711 as g711

RATE_HZ = 24000
G711_RATE_HZ = 8000


def engine_available(engine: str) -> bool:
    """Whether a speech engine (``flite`` or ``espeak-ng``) is on PATH; ``tone`` always is."""
    return engine == "tone" or shutil.which(engine) is not None


def pick_engine(preferred: str = "auto") -> str:
    """The engine to use: ``preferred`` if installed, else flite, espeak-ng, then a tone."""
    if preferred != "auto" and engine_available(preferred):
        return preferred
    for engine in ("flite", "espeak-ng"):
        if engine_available(engine):
            return engine
    return "tone"


def tone(text: str) -> NDArray[np.int16]:
    """Syllable-like tone bursts, about as long as ``text`` would take to say (24 kHz)."""
    syllables = max(1, len(text) // 3)
    t = np.arange(int(0.15 * RATE_HZ)) / RATE_HZ
    burst = 0.3 * np.sin(2 * np.pi * 220.0 * t) * np.hanning(t.size)
    gap = np.zeros(int(0.05 * RATE_HZ))
    signal = np.concatenate([np.concatenate([burst, gap]) for _ in range(syllables)])
    return (signal * 32767).astype(np.int16)


def resample(pcm: NDArray[np.int16], in_hz: int, out_hz: int) -> NDArray[np.int16]:
    """Whole-buffer resampling (soxr)."""
    if in_hz == out_hz or pcm.size == 0:
        return pcm
    out: NDArray[np.int16] = soxr.resample(pcm, in_hz, out_hz)
    return out.astype(np.int16)


def format_rate_hz(fmt: dict[str, object]) -> int:
    """Sample rate of a GA audio format object (``audio/pcm`` 24000, G.711 8000)."""
    return RATE_HZ if fmt.get("type") == "audio/pcm" else G711_RATE_HZ


def to_wire(pcm24k: NDArray[np.int16], fmt: dict[str, object]) -> bytes:
    """24 kHz PCM to bytes in the GA format ``fmt`` (PCM16 LE, or G.711 at 8 kHz)."""
    kind = fmt.get("type")
    if kind == "audio/pcm":
        return pcm24k.astype("<i2").tobytes()
    return g711.encode(resample(pcm24k, RATE_HZ, G711_RATE_HZ), "ulaw" if kind == "audio/pcmu" else "alaw")


def from_wire(b64: str, fmt: dict[str, object]) -> NDArray[np.int16]:
    """A base64 ``append`` payload in format ``fmt`` as int16 samples at the format's own rate.

    Raises:
        ValueError: bad base64, or an odd byte count for PCM16.
    """
    data = base64.b64decode(b64, validate=True)
    kind = fmt.get("type")
    if kind == "audio/pcm":
        if len(data) % 2:
            raise ValueError(f"odd byte count {len(data)} for 16-bit PCM")
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    return g711.decode(data, "ulaw" if kind == "audio/pcmu" else "alaw")
