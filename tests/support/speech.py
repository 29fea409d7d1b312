"""Spoken test audio, generated here (flite voices are built from real recordings).

``synth("hey jarvis what time is it")`` returns the path of a mono 16-bit WAV at the asked rate,
cached by content under ``$EARSHOT_TEST_CACHE`` (default ``.cache/test-audio`` in the repo).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

CACHE = Path(os.environ.get("EARSHOT_TEST_CACHE", Path(__file__).resolve().parents[2] / ".cache" / "test-audio"))
FLITE_VOICES = ("slt", "rms", "awb", "kal16")


def synth(text: str, *, voice: str = "slt", rate_hz: int = 16000) -> Path:
    """Speak ``text`` with flite ``voice`` into a cached mono WAV at ``rate_hz``."""
    if shutil.which("flite") is None or shutil.which("sox") is None:
        raise RuntimeError("flite and sox are needed (scripts/setup installs them)")
    key = hashlib.sha1(f"{voice}|{rate_hz}|{text}".encode()).hexdigest()[:16]
    out = CACHE / f"{voice}-{rate_hz}-{key}.wav"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".flite.wav")
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True)
    tmp = out.with_suffix(".tmp.wav")
    subprocess.run(
        ["sox", str(raw), "-r", str(rate_hz), "-c", "1", "-b", "16", str(tmp)], check=True, capture_output=True
    )
    raw.unlink()
    tmp.replace(out)
    return out


def read_wav(path: Path) -> tuple[NDArray[np.int16], int]:
    """Read a 16-bit WAV as (mono int16 samples, rate); channels are averaged."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {width * 8}-bit WAV, want 16-bit")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if ch > 1:
        pcm = pcm.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return pcm, rate


def write_wav(path: Path, pcm: NDArray[np.int16], rate_hz: int) -> Path:
    """Write mono int16 samples as a WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def silence(seconds: float, rate_hz: int = 16000) -> NDArray[np.int16]:
    """Digital silence."""
    return np.zeros(round(seconds * rate_hz), dtype=np.int16)


def concat(*parts: NDArray[np.int16]) -> NDArray[np.int16]:
    """Join clips end to end."""
    return np.concatenate(parts).astype(np.int16)
