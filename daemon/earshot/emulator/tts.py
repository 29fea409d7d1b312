"""Text to speech for the emulator's replies: flite or espeak-ng in a child process, cached.

The I/O half of :mod:`earshot.emulator.voice` (which converts and resamples); the emulator's shell
runs it when the protocol core asks for a reply's voice.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.emulator.voice import RATE_HZ, pick_engine, resample, tone

__all__ = ["speak"]

logger = logging.getLogger("earshot.emulator.voice")

_CACHE_LIMIT = 64
_cache: dict[tuple[str, str], NDArray[np.int16]] = {}


def _read_wav(path: Path) -> NDArray[np.int16]:
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{width * 8}-bit WAV from the speech engine")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample(pcm, rate, RATE_HZ)


async def speak(text: str, engine: str = "auto") -> NDArray[np.int16]:
    """``text`` as speech at 24 kHz; a tone if no engine is installed or the engine fails."""
    engine = pick_engine(engine)
    key = (engine, text)
    if key in _cache:
        return _cache[key]
    pcm = tone(text)
    if engine != "tone" and text.strip():
        with tempfile.TemporaryDirectory(prefix="earshot-emulator-") as tmp:
            out = Path(tmp) / "reply.wav"
            argv = ["flite", "-t", text, "-o", str(out)] if engine == "flite" else ["espeak-ng", "-w", str(out), text]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            try:
                _, stderr = await proc.communicate()
            except BaseException:  # cancelled (the connection closed): leave no process behind
                if proc.returncode is None:
                    proc.kill()
                await asyncio.shield(proc.wait())
                raise
            if proc.returncode == 0 and out.exists():
                pcm = await asyncio.to_thread(_read_wav, out)
            else:
                logger.warning("%s failed (%s): %s; replying with a tone", engine, proc.returncode, stderr[:200])
    if len(_cache) >= _CACHE_LIMIT:
        _cache.pop(next(iter(_cache)))
    _cache[key] = pcm
    return pcm
