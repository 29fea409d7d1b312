"""The simulated echo path: streaming equals whole-signal processing; the room and the clip are really there."""

from __future__ import annotations

import numpy as np

from earshot.audio.room import EchoPath, room_response


def _speechlike(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(n) * 8000, -32768, 32767).astype(np.int16)


def test_streaming_in_chunks_equals_one_block() -> None:
    """Chunk boundaries change nothing: the delay line and the room's memory carry over."""
    x = _speechlike(16000)
    whole = EchoPath(rate_hz=16000, delay_ms=20, gain_db=-6, rt60_ms=150, drive_db=6).process(x)
    path = EchoPath(rate_hz=16000, delay_ms=20, gain_db=-6, rt60_ms=150, drive_db=6)
    parts = np.concatenate([path.process(x[i : i + 160]) for i in range(0, x.size, 160)])
    np.testing.assert_allclose(parts, whole, atol=1e-6)


def test_plain_path_is_a_delay_and_a_gain() -> None:
    """With no room and no clip the echo is the played signal, delayed and scaled."""
    x = _speechlike(3200)
    echo = EchoPath(rate_hz=16000, delay_ms=20, gain_db=-6).process(x)
    d = 320
    np.testing.assert_allclose(echo[d:], x[:-d] * 10 ** (-6 / 20), rtol=1e-9, atol=1e-6)
    assert (echo[:d] == 0).all()


def test_the_room_rings_on_and_the_speaker_distorts() -> None:
    """An impulse comes back with a tail; a loud sine comes back with harmonics a linear filter cannot predict."""
    r = room_response(16000, 150)
    assert r[0] == 1.0
    tail = r[round(0.05 * 16000) :]
    assert np.abs(tail).max() > 0.001  # still ringing 50 ms on (-50 dB)
    t = np.arange(16000) / 16000
    sine = (0.9 * 32767 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    out = EchoPath(rate_hz=16000, delay_ms=0, gain_db=0, drive_db=6).process(sine)
    spectrum = np.abs(np.fft.rfft(out))
    assert spectrum[1500] > 1e-3 * spectrum[500]  # the third harmonic of a soft clip
