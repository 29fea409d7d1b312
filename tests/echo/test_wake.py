"""The device's own voice never wakes it; the user's wake word over playback does."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.audio.echo import EchoCanceller, EchoFrame
from earshot.gate.bargein import WakeGuard
from earshot.gate.wakeword import OpenWakeWordEngine
from tests.echo.scenes import ASSISTANT_VOICE, RATE_HZ, Room, chunks, mix, place, reply, speech


@pytest.fixture(scope="module")
def engine() -> OpenWakeWordEngine:
    return OpenWakeWordEngine("hey_jarvis")


def wakes(engine: OpenWakeWordEngine, mic: np.ndarray, reference: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """Run the scene; return the engine's hits on the raw mic, on the cleaned signal, and the guarded wakes."""
    ec = EchoCanceller()
    guard = WakeGuard()
    raw_hits: list[int] = []
    engine.reset()
    for pos, (m,) in chunks(mic):
        if engine.process(m) is not None:
            raw_hits.append(pos)
    engine.reset()
    cleaned_hits: list[int] = []
    accepted: list[int] = []
    for pos, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        cleaned = ec.process(m)
        guard.observe(ec.frame, pos)
        if engine.process(cleaned) is not None:
            cleaned_hits.append(pos)
            if guard.accept(pos + 160):
                accepted.append(pos)
            engine.reset()  # as the gate does: the same phrase cannot fire twice
    ec.close()
    return raw_hits, cleaned_hits, accepted


def test_the_device_saying_the_wake_word_never_wakes_it(engine: OpenWakeWordEngine) -> None:
    """A reply that says "hey jarvis" wakes the engine on the raw mic, but never through cancel + guard."""
    said = speech("If you need me again, just say hey jarvis, and I will be right here.", ASSISTANT_VOICE)
    reference = np.concatenate([reply(8.0), said, reply(3.0, first=3)])
    raw_total = 0
    for seed in range(3):
        mic = mix(reference=reference, room=Room(delay_ms=40 + 10 * seed, seed=seed))
        raw_hits, _, accepted = wakes(engine, mic, reference)
        raw_total += len(raw_hits)
        assert accepted == []
    assert raw_total > 0, "the echo itself must contain a detectable wake word"


def test_the_user_saying_the_wake_word_over_playback_wakes_it(engine: OpenWakeWordEngine) -> None:
    """A different voice saying "hey jarvis" over the reply is detected on the cleaned signal and accepted."""
    reference = reply(14.0)
    trials = [("rms", 9.0), ("kal16", 9.5), ("rms", 11.0), ("kal16", 11.5)]
    woken = []
    for i, (voice, at_s) in enumerate(trials):
        user = speech("hey jarvis", voice)
        at = round(at_s * RATE_HZ)
        mic = mix(reference=reference, room=Room(seed=10 + i), near=place(user, at=at, n=reference.size, gain_db=-6.0))
        _, cleaned_hits, accepted = wakes(engine, mic, reference)
        hits = [p for p in accepted if at <= p <= at + user.size + RATE_HZ]
        woken.append(bool(hits))
        assert all(at <= p <= at + user.size + RATE_HZ for p in cleaned_hits), (voice, at, cleaned_hits)
    assert sum(woken) >= 3, woken


def _frame(margin_db: float, *, active: bool = True) -> EchoFrame:
    return EchoFrame(
        mic_dbfs=-20.0,
        cleaned_dbfs=-60.0 + margin_db,
        reference_dbfs=-15.0,
        echo_dbfs=-25.0,
        residual_echo_dbfs=-60.0,
        noise_floor_dbfs=-70.0,
        erle_db=35.0,
        reference_active=active,
        bypassed=not active,
    )


def test_guard_accepts_wakes_without_playback() -> None:
    """With no playback in the wake phrase the guard always accepts."""
    guard = WakeGuard()
    for k in range(200):
        guard.observe(_frame(-5.0, active=False), k * 160)
    assert guard.accept(200 * 160)


def test_guard_rejects_what_the_residual_echo_explains() -> None:
    """Cleaned audio around the predicted residual echo is rejected; clearly above it is accepted."""
    rng = np.random.default_rng(0)
    guard = WakeGuard(margin_db=8.0)
    for k in range(200):
        guard.observe(_frame(float(rng.normal(-3.0, 5.0))), k * 160)
    assert not guard.accept(200 * 160)
    assert "<" in guard.last_reason
    for k in range(200, 300):
        guard.observe(_frame(20.0 if k % 2 else -5.0), k * 160)
    assert guard.accept(300 * 160)


def test_guard_accepts_a_wake_barely_overlapping_playback() -> None:
    """A phrase with only a few chunks over the playback's end is not blamed on the echo."""
    guard = WakeGuard(min_overlap_frames=5)
    for k in range(150):
        guard.observe(_frame(0.0, active=k < 3), k * 160)
    assert guard.accept(150 * 160, start_position=0)
