"""Echo scenes built from real (flite) speech: the device's voice through a synthetic room, plus a user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from tests.support.speech import read_wav, synth

RATE_HZ = 16000
CHUNK = 160
ASSISTANT_VOICE = "slt"
USER_VOICE = "rms"

REPLY_SENTENCES = (
    "Here is the forecast for the rest of the week. Tomorrow will be mostly sunny with a high of twenty three degrees.",
    "On Thursday a band of rain moves in from the west, bringing showers through the afternoon and evening.",
    "Friday clears up again, though it stays breezy, with gusts of up to forty kilometres an hour near the coast.",
    "The weekend looks warm and settled, a good time for a walk in the park or a picnic by the river.",
    "I have also added milk, eggs and bread to your shopping list, and your timer has about four minutes left.",
    "Your next meeting is at half past two with the design team, in the small conference room on the third floor.",
)
USER_PHRASES = (
    "stop",
    "wait a second",
    "no, that is not what I asked",
    "hold on please",
    "actually, cancel that",
    "excuse me",
    "what about Saturday",
    "never mind",
    "turn it down",
    "okay thanks, that is enough",
    "sorry, say that again",
    "hey, listen",
)


@cache
def speech(text: str, voice: str) -> NDArray[np.int16]:
    """Cached 16 kHz speech for ``text`` in flite ``voice``."""
    pcm, rate = read_wav(synth(text, voice=voice, rate_hz=RATE_HZ))
    assert rate == RATE_HZ
    return pcm


def reply(seconds: float, first: int = 0) -> NDArray[np.int16]:
    """``seconds`` of the assistant speaking (sentences from number ``first`` on, short pauses)."""
    parts: list[NDArray[np.int16]] = []
    total = 0
    i = first
    while total < seconds * RATE_HZ:
        clip = speech(REPLY_SENTENCES[i % len(REPLY_SENTENCES)], ASSISTANT_VOICE)
        parts += [clip, np.zeros(RATE_HZ // 4, dtype=np.int16)]
        total += clip.size + RATE_HZ // 4
        i += 1
    return np.concatenate(parts)[: round(seconds * RATE_HZ)]


def room_response(seed: int, length_ms: int = 30) -> NDArray[np.float64]:
    """A short synthetic room impulse response: direct path plus an exponentially decaying tail, unit energy."""
    rng = np.random.default_rng(seed)
    n = RATE_HZ * length_ms // 1000
    tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 5))
    tail[0] = 3.0
    response: NDArray[np.float64] = tail / np.sqrt(np.sum(tail**2))
    return response


@dataclass(frozen=True)
class Room:
    """The echo path: delay, gain, room response and background noise."""

    delay_ms: float = 40.0
    gain_db: float = -6.0
    noise_dbfs: float | None = -65.0
    seed: int = 0
    reverberant: bool = True
    """False: the echo is the direct path alone (a plain delay, as through the PulseAudio room)."""

    def echo(self, reference: NDArray[np.int16]) -> NDArray[np.float64]:
        """What the microphone picks up of ``reference`` (same length, float)."""
        response = room_response(self.seed) if self.reverberant else np.ones(1)
        wet = np.convolve(reference.astype(np.float64), response)[: reference.size]
        delay = round(self.delay_ms * RATE_HZ / 1000)
        delayed = np.concatenate([np.zeros(delay), wet])[: reference.size]
        echo: NDArray[np.float64] = delayed * 10.0 ** (self.gain_db / 20.0)
        return echo

    def noise(self, n: int) -> NDArray[np.float64]:
        """Background noise (white, at ``noise_dbfs``) or silence."""
        if self.noise_dbfs is None:
            return np.zeros(n)
        rng = np.random.default_rng(self.seed + 1000)
        noise: NDArray[np.float64] = rng.standard_normal(n) * 32768.0 * 10.0 ** (self.noise_dbfs / 20.0)
        return noise


def to_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    """Round and clip float samples to int16."""
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def mix(*, reference: NDArray[np.int16], room: Room, near: NDArray[np.float64] | None = None) -> NDArray[np.int16]:
    """The microphone signal: echo of ``reference`` plus noise plus optional near-end speech."""
    total = room.echo(reference) + room.noise(reference.size)
    if near is not None:
        total = total + near[: reference.size]
    return to_int16(total)


def place(clip: NDArray[np.int16], *, at: int, n: int, gain_db: float = 0.0) -> NDArray[np.float64]:
    """``clip`` placed at sample ``at`` in ``n`` samples of silence, scaled by ``gain_db``."""
    out = np.zeros(n)
    end = min(n, at + clip.size)
    out[at:end] = clip[: end - at].astype(np.float64) * 10.0 ** (gain_db / 20.0)
    return out


def chunks(*signals: NDArray[np.int16]) -> Iterator[tuple[int, tuple[NDArray[np.int16], ...]]]:
    """Walk equal-length signals in aligned 10 ms chunks: (position, chunk of each)."""
    n = min(s.size for s in signals) // CHUNK * CHUNK
    for pos in range(0, n, CHUNK):
        yield pos, tuple(s[pos : pos + CHUNK] for s in signals)


def speech_onset(clip: NDArray[np.int16], threshold_dbfs: float = -50.0) -> int:
    """First sample of the first 10 ms block of ``clip`` louder than ``threshold_dbfs`` (the truth for onsets).

    The first sound, unvoiced consonants included (the "s" of "stop", the "h" of "hey").
    """
    for pos in range(0, clip.size - CHUNK, CHUNK):
        block = clip[pos : pos + CHUNK].astype(np.float64)
        if 10 * np.log10(np.mean(block**2) / 32768.0**2 + 1e-12) > threshold_dbfs:
            return pos
    return 0


@dataclass
class Run:
    """What a scene run through the canceller and the detector produced."""

    cleaned: NDArray[np.int16]
    barge_ins: list[int]
    frames: list[object]
    erle_db: float | None
    modes: list[str]


def run_scene(
    mic: NDArray[np.int16],
    reference: NDArray[np.int16],
    config: object,
    *,
    start_position: int = 0,
    rearm: bool = False,
) -> Run:
    """Run ``mic`` through an EchoCanceller fed ``reference`` and a BargeInDetector armed at ``start_position``.

    With ``rearm`` the detector is re-armed after each barge-in (to count every false one).
    """
    from earshot.audio.echo import EchoCanceller
    from earshot.config import BargeInConfig
    from earshot.gate.bargein import BargeInDetector

    assert isinstance(config, BargeInConfig)
    ec = EchoCanceller(filter_ms=config.echo_filter_ms)
    det = BargeInDetector(config)
    out: list[NDArray[np.int16]] = []
    barge_ins: list[int] = []
    frames: list[object] = []
    modes: list[str] = []
    for pos, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        cleaned = ec.process(m, near_end=det.user_speaking)
        out.append(cleaned)
        frames.append(ec.frame)
        if pos == start_position:
            modes.append(str(det.start(pos, erle_db=ec.erle_db)))
        event = det.process(cleaned, m, ec.frame, pos)
        if event is not None:
            barge_ins.append(event.position)
            modes.append(str(det.duplex))
            if rearm:
                det.start(pos, erle_db=ec.erle_db)
    ec.close()
    return Run(np.concatenate(out), barge_ins, frames, ec.erle_db, modes)
