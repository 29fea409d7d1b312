"""Test audio for the gate: flite takes, sox variants (tempo/pitch, noise) and real human negatives."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soxr
from numpy.typing import NDArray

from tests.support.speech import CACHE, read_wav, synth

ASTERISK = Path("/usr/share/asterisk/sounds/en")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


def sox_variant(src: Path, *effects: str) -> NDArray[np.int16]:
    """``src`` through sox ``effects`` (e.g. ``tempo 0.9``, ``pitch 100``), cached, as 16 kHz int16."""
    key = hashlib.sha1(f"{src}|{effects}".encode()).hexdigest()[:16]
    out = CACHE / f"variant-{key}.wav"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.wav")
        subprocess.run(["sox", str(src), "-r", "16000", "-c", "1", "-b", "16", str(tmp), *effects], check=True)
        tmp.replace(out)
    return read_wav(out)[0]


def say(text: str, voice: str = "slt", *effects: str) -> NDArray[np.int16]:
    """A flite take, optionally through sox effects."""
    path = synth(text, voice=voice)
    return sox_variant(path, *effects) if effects else read_wav(path)[0]


def pink_noise(seconds: float, *, seed: int = 1, amplitude: float = 0.3) -> NDArray[np.int16]:
    """sox pink noise (its own generator), 16 kHz."""
    out = CACHE / f"pink-{seconds}-{seed}-{amplitude}.wav"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.wav")
        cmd = ["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(tmp), "synth", str(seconds), "pinknoise"]
        subprocess.run([*cmd, "vol", str(amplitude)], check=True)
        tmp.replace(out)
    return read_wav(out)[0]


def mix_at_snr(speech: NDArray[np.int16], noise: NDArray[np.int16], snr_db: float) -> NDArray[np.int16]:
    """``speech`` plus ``noise`` scaled so the speech-to-noise power ratio is ``snr_db``."""
    s = speech.astype(np.float64)
    n = np.resize(noise.astype(np.float64), len(s))
    ps = np.mean(s[np.abs(s) > 0.01 * np.max(np.abs(s))] ** 2)
    pn = np.mean(n**2) or 1.0
    out: NDArray[np.float64] = s + n * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def human_negatives(limit: int | None = None) -> Iterable[tuple[str, NDArray[np.int16]]]:
    """Real human speech from Debian packages (asterisk prompts at 8 kHz, alsa-utils voice), at 16 kHz."""
    files = sorted(ASTERISK.glob("*.wav"))[:limit] + sorted(ALSA_SOUNDS.glob("*.wav"))
    for path in files:
        pcm, rate = read_wav(path)
        if rate != 16000:
            pcm = np.clip(soxr.resample(pcm.astype(np.float32), rate, 16000), -32768, 32767).astype(np.int16)
        yield path.name, pcm
