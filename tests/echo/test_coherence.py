"""The residual echo's coherence with the reference: the echo the filter left is the reference, a voice is not."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from earshot.audio.coherence import EchoCoherence
from earshot.audio.room import EchoPath
from earshot.config import BargeInConfig
from earshot.gate import bargein
from earshot.gate.bargein import BargeInDetector
from tests.echo.scenes import ASSISTANT_VOICE, CHUNK, RATE_HZ, USER_VOICE, reply, run_scene, speech

DELAY = 320  # 20 ms


def _scores(reference: np.ndarray, cleaned: np.ndarray, lag: int = DELAY) -> list[float]:
    """The coherence after each chunk of ``cleaned`` (paired chunk for chunk with ``reference``)."""
    coherence = EchoCoherence(lag + 64)
    out = []
    for pos in range(0, min(reference.size, cleaned.size) - CHUNK + 1, CHUNK):
        coherence.push(reference[pos : pos + CHUNK], cleaned[pos : pos + CHUNK])
        out.append(coherence.update(lag))
    return out


def test_a_filtered_late_copy_of_the_reference_is_coherent_and_a_voice_is_not() -> None:
    reference = speech("the weather tomorrow will be mild in the afternoon", ASSISTANT_VOICE)
    path = np.zeros(80)
    path[0], path[40], path[79] = 0.4, -0.15, 0.08  # what the filter left: scaled, with two reflections
    late = np.concatenate((np.zeros(DELAY), reference.astype(np.float64)))[: reference.size]
    lowpassed = np.convolve(late, np.ones(24) / 24, "same")  # and a band the filter never learned
    noise = np.random.default_rng(3).normal(0, 10, reference.size)
    user = np.resize(speech("stop, tell me something else", USER_VOICE), reference.size).astype(np.float64)
    loud = np.array(
        [
            np.std(reference[max(0, p - DELAY - 480) : p + CHUNK]) > 300
            for p in range(0, reference.size - CHUNK + 1, CHUNK)
        ]
    )
    for residual in (np.convolve(late, path)[: reference.size], 0.3 * lowpassed):
        scores = np.array(_scores(reference, (residual + noise).astype(np.int16)))
        assert np.median(scores[loud][5:]) >= 0.8
    voice = np.array(_scores(reference, user.astype(np.int16)))
    talking = np.array([np.std(user[p : p + CHUNK]) > 300 for p in range(0, user.size - CHUNK + 1, CHUNK)])
    assert np.median(voice[loud & talking]) < 0.2
    # The same echo, looked for at a delay it is not at, is not explained.
    far = np.array(
        _scores(reference, (np.convolve(late, path)[: reference.size] + noise).astype(np.int16), lag=DELAY + 1200)
    )
    assert np.median(far[loud][5:]) < 0.45


def test_silence_gives_zero_and_clear_forgets() -> None:
    coherence = EchoCoherence(400)
    assert coherence.update(320) == 0.0  # nothing heard yet
    tone = (3000 * np.sin(np.arange(CHUNK) * 0.3)).astype(np.int16)
    coherence.push(tone, np.zeros(CHUNK, np.int16))
    assert coherence.update(0) == 0.0  # nothing left in the microphone
    for _ in range(10):
        coherence.push(tone, tone)
        assert 0.0 <= coherence.update(10_000) <= 1.0  # a lag past the history is clipped to it
    coherence.clear()
    assert coherence.update(320) == 0.0


NEW_REPLIES = (
    "The weather tomorrow will be mild, with a light breeze from the west and some sun in the afternoon.",
    "Remember to water the plants on the balcony before you leave for the weekend.",
    "The train to the city leaves at twenty past eight from the second platform.",
    "A good loaf of bread needs flour, water, salt, yeast and a lot of patience.",
    "Our solar system has eight planets, and Jupiter is by far the largest of them.",
)


def _new_reply_false_barge_ins(use: bool, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A canceller warmed up on one reply meets a new one (another sentence, another voice): false barge-ins per scene.

    Twenty scenes: five sentences in four voices, each through its own room (delay 20-35 ms; linear,
    reverberant with a little clip, or more reverberant with more clip). Nobody talks.
    """
    monkeypatch.setattr(bargein, "USE_COHERENCE", use)
    lead = np.concatenate([reply(7.0), np.zeros(RATE_HZ, np.int16)])
    start = lead.size - lead.size % CHUNK
    counts = []
    for i, (text, voice) in enumerate((t, v) for t in NEW_REPLIES for v in ("kal", "awb", "rms", "slt")):
        reference = np.concatenate([lead, speech(text, voice), np.zeros(RATE_HZ // 2, np.int16)])
        room = EchoPath(
            rate_hz=RATE_HZ, delay_ms=20 + 5 * (i % 4), gain_db=-6, rt60_ms=150 * (i % 3), drive_db=3 * (i % 3)
        )
        heard = np.concatenate([room.process(reference[k : k + CHUNK]) for k in range(0, reference.size, CHUNK)])
        noise = np.random.default_rng(i).standard_normal(reference.size) * 32.768  # -60 dBFS
        mic = np.clip(np.round(heard[: reference.size] + noise), -32768, 32767).astype(np.int16)
        counts.append(len(run_scene(mic, reference, BargeInConfig(), start_position=start, rearm=True).barge_ins))
    return counts


def test_a_new_reply_the_filter_has_not_learned_does_not_interrupt_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the filter has not learned yet is the reference, and the detector knows it: without the coherence
    6 of these 20 replies barged in on themselves, with it none in a linear room and one in all (a soft
    clip's harmonics have no linear relation to the reference)."""
    without = _new_reply_false_barge_ins(False, monkeypatch)
    assert sum(without) >= 4, without
    counts = _new_reply_false_barge_ins(True, monkeypatch)
    linear_rooms = counts[0::3]
    assert linear_rooms == [0] * len(linear_rooms), counts
    assert sum(counts) <= 1, counts


def _frame_chunks(det: BargeInDetector, coherence: float) -> bool:
    from earshot.audio.echometer import EchoFrame

    user = speech("wait, stop there please", USER_VOICE)
    for pos in range(0, user.size - CHUNK, CHUNK):
        chunk = user[pos : pos + CHUNK]
        level = 10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) / 32768.0**2 + 1e-12)
        frame = EchoFrame(
            mic_dbfs=level,
            cleaned_dbfs=level,
            reference_dbfs=-20.0,
            echo_dbfs=level,
            residual_echo_dbfs=level - 12.0,
            noise_floor_dbfs=-90.0,
            erle_db=30.0,
            reference_active=True,
            bypassed=False,
            residual_coherence=coherence,
        )
        if det.process(chunk, chunk, frame, pos + RATE_HZ) is not None:
            return True
    return False


def test_the_detector_tests_only_what_the_reference_does_not_explain() -> None:
    """Speech 12 dB over the residual (8 needed): it counts unless most of its power is coherent with the reference."""
    config = dataclasses.replace(BargeInConfig(), duplex="full")
    for coherence, expected in ((0.9, False), (0.75, False), (0.2, True), (0.0, True)):
        det = BargeInDetector(config)
        det.start(0, erle_db=30.0)
        assert _frame_chunks(det, coherence) is expected, coherence
