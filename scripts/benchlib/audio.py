"""Test audio for the benchmarks (flite through ``tests/support/speech.py``) and output analysis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from tests.support.speech import read_wav, synth

RATE_HZ = 16000

SENTENCES = (
    "The weather tomorrow will be mild, with a light breeze from the west and some sun in the afternoon.",
    "Remember to water the plants on the balcony before you leave for the weekend.",
    "The train to the city leaves at twenty past eight from the second platform.",
    "A good loaf of bread needs flour, water, salt, yeast and a lot of patience.",
    "The meeting has been moved to Thursday at three, in the small room upstairs.",
    "Our solar system has eight planets, and Jupiter is by far the largest of them.",
)
VOICES = ("slt", "rms", "awb", "kal16")

LONG_REPLY = (
    "Here is a long story about a lighthouse keeper who lived on a small island far from the coast, "
    "where every evening he climbed the spiral stairs, cleaned the great lens, trimmed the wick, "
    "and watched the ships pass in the dark while the wind sang against the windows, "
    "and in the mornings he wrote letters to his sister in the city, telling her about the gulls, "
    "the seals on the rocks, the storms that came in autumn and the quiet days of summer"
)
"""A reply with no sentence break (flite pauses only briefly at commas)."""


def say(text: str, voice: str = "slt") -> NDArray[np.int16]:
    """``text`` spoken by flite ``voice``, 16 kHz int16."""
    pcm, rate = read_wav(synth(text, voice=voice, rate_hz=RATE_HZ))
    assert rate == RATE_HZ
    return pcm


def silence(seconds: float) -> NDArray[np.int16]:
    """Digital silence at 16 kHz."""
    return np.zeros(round(seconds * RATE_HZ), dtype=np.int16)


def room_noise(seconds: float, *, level_dbfs: float = -60.0, seed: int = 7) -> NDArray[np.int16]:
    """A quiet room: white noise at ``level_dbfs`` RMS (a real microphone's floor), 16 kHz."""
    rng = np.random.default_rng(seed)
    rms = 32768.0 * 10.0 ** (level_dbfs / 20.0)
    return np.clip(np.rint(rng.normal(0.0, rms, round(seconds * RATE_HZ))), -32768, 32767).astype(np.int16)


def continuous_speech(seconds: float) -> NDArray[np.int16]:
    """Speech with 100 ms gaps (the VAD never ends it), in several voices, cut to ``seconds``."""
    gap = silence(0.1)
    parts: list[NDArray[np.int16]] = []
    total = 0
    i = 0
    target = round(seconds * RATE_HZ)
    while total < target:
        clip = say(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)])
        parts += [clip, gap]
        total += clip.size + gap.size
        i += 1
    out: NDArray[np.int16] = np.concatenate(parts)[:target].astype(np.int16)
    return out


def with_noise(pcm: NDArray[np.int16], *, level_dbfs: float = -60.0, seed: int = 11) -> NDArray[np.int16]:
    """``pcm`` plus the quiet-room floor (so nothing is digital silence)."""
    noise = room_noise(pcm.size / RATE_HZ, level_dbfs=level_dbfs, seed=seed)[: pcm.size]
    out: NDArray[np.int16] = np.clip(pcm.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
    return out


def onset(pcm: NDArray[np.int16], *, threshold_dbfs: float = -50.0, frame: int = 160) -> int:
    """First sample of the first 10 ms frame louder than ``threshold_dbfs``: the first sound of an utterance.

    -50 dBFS is 10 dB over the quiet room's floor (:func:`with_noise`), so an utterance that begins
    unvoiced ("stop", "so", "hey") counts from its first consonant. At -40 dBFS the onset of flite's
    "Stop, tell me something else." fell 250 ms after the "s": barge-in times came out that much short.
    """
    n = pcm.size // frame
    if n == 0:
        return 0
    frames = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) / 32768.0**2 + 1e-12)
    loud = np.flatnonzero(level > threshold_dbfs)
    return int(loud[0]) * frame if loud.size else 0


def first_nonzero(pcm: NDArray[np.int16], start: int = 0, *, floor: int = 0) -> int | None:
    """Index of the first sample at or after ``start`` whose magnitude exceeds ``floor``."""
    idx = np.flatnonzero(np.abs(pcm[start:].astype(np.int32)) > floor)
    return start + int(idx[0]) if idx.size else None


def find_exact(output: NDArray[np.int16], head: NDArray[np.int16], start: int = 0) -> int | None:
    """Where ``head`` stands sample for sample in ``output`` at or after ``start`` (None: nowhere).

    The reply is played at unity gain, so its opening samples are found exactly; an earcon or anything
    else played before it does not match (the first sound after the question is no longer the reply).
    """
    n = head.size
    if n == 0 or output.size - start < n:
        return None
    cand = np.flatnonzero(output[start : output.size - n + 1] == head[0]) + start
    for k in range(1, n):
        cand = cand[output[cand + k] == head[k]]
        if cand.size == 0:
            return None
    return int(cand[0]) if cand.size else None


@dataclass(frozen=True, slots=True)
class Extent:
    """Where a reply is in the output WAV (output samples at the reply rate).

    Attributes:
        stop: one past the last sample of the reply's audio in the output (its fade included).
        heard: reply samples that reached the output (the fade included, underrun gaps excluded).
        gaps: ``(output position, samples)`` of silences inserted inside the reply (playback underruns).
    """

    stop: int
    heard: int
    gaps: tuple[tuple[int, int], ...]


def played_extent(output: NDArray[np.int16], reply: NDArray[np.int16], start: int, *, min_gap: int = 24) -> Extent:
    """Follow ``reply`` through ``output`` from ``start`` (same rate, unity gain) until it stops.

    The output holds the reply sample for sample, possibly with silences inserted (underruns: the
    reply then resumes where it left off), and ends with the fade of a barge-in (up to 20 ms of
    non-zero samples that no longer match) or the reply's own end.
    """
    o, r = start, 0
    gaps: list[tuple[int, int]] = []
    while r < reply.size and o < output.size:
        n = min(reply.size - r, output.size - o)
        seg = output[o : o + n].astype(np.int32)
        diff = np.flatnonzero(np.abs(seg - reply[r : r + n].astype(np.int32)) > 1)
        k = int(diff[0]) if diff.size else n
        o, r = o + k, r + k
        if k == n:
            break
        nonzero = np.flatnonzero(output[o:] != 0)
        zeros = int(nonzero[0]) if nonzero.size else output.size - o
        m = min(reply_rate_ms(10), reply.size - r, output.size - o - zeros)
        resumes = m > 0 and np.all(
            np.abs(output[o + zeros : o + zeros + m].astype(np.int32) - reply[r : r + m].astype(np.int32)) <= 1
        )
        if zeros >= min_gap and resumes:
            gaps.append((o, zeros))
            o += zeros
            continue
        break
    tail = output[o : o + reply_rate_ms(20)]
    nz = np.flatnonzero(tail != 0)
    fade = int(nz[-1]) + 1 if nz.size and r < reply.size else 0
    return Extent(stop=o + fade, heard=r + fade, gaps=tuple(gaps))


def reply_rate_ms(ms: float, rate_hz: int = 24000) -> int:
    """``ms`` in samples at the reply rate."""
    return round(ms * rate_hz / 1000)
