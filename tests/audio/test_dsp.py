import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earshot.audio import dsp, g711
from earshot.audio.resample import StreamResampler, resample
from earshot.audio.ring import AudioRing


def _audioop() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

    return audioop


ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_int16_float_round_trip_is_exact() -> None:
    assert np.array_equal(dsp.to_int16(dsp.to_float32(ALL_INT16)), ALL_INT16)
    assert dsp.to_int16(np.array([2.0, -2.0, np.nan])).tolist() == [32767, -32768, 0]


def test_gain_and_rms() -> None:
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 16384).astype(np.int16)
    assert dsp.rms_dbfs(tone) == pytest.approx(-9.03, abs=0.05)
    assert dsp.rms_dbfs(dsp.apply_gain_db(tone, -20.0)) == pytest.approx(-29.03, abs=0.05)
    assert dsp.rms_dbfs(np.zeros(160, dtype=np.int16)) == dsp.SILENCE_DBFS
    assert dsp.apply_gain_db(np.array([20000], dtype=np.int16), 20.0).tolist() == [32767]


def test_downmix_select_and_average() -> None:
    inter = np.array([100, 200, 300, 400, -10, -20, -30, -41], dtype=np.int16)  # 2 frames, 4 channels
    assert dsp.downmix(inter, 4, 2).tolist() == [300, -30]
    assert dsp.downmix(inter, 4).tolist() == [250, -25]
    with pytest.raises(ValueError, match="channel 4"):
        dsp.downmix(inter, 4, 4)
    assert dsp.upmix(np.array([1, 2], dtype=np.int16), 2).tolist() == [1, 1, 2, 2]


def test_framer_matches_frames() -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(-1000, 1000, 1234).astype(np.int16)
    framer = dsp.Framer(160)
    got = []
    for piece in np.array_split(data, 17):
        got += framer.push(piece)
    want = list(dsp.frames(data, 160))
    assert len(got) == len(want) == 1234 // 160
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert framer.pending == 1234 % 160


def test_fade_out_ends_silent_and_starts_near_full() -> None:
    block = np.full(240, 10000, dtype=np.int16)
    faded = dsp.fade_out(block)
    assert 0 < faded[-1] < 100
    assert faded[0] > 9900
    assert np.all(np.diff(faded.astype(int)) <= 0)


@pytest.mark.parametrize(
    ("in_hz", "out_hz"),
    [
        (8000, 16000),
        (16000, 24000),
        (24000, 16000),
        (44100, 16000),
        (48000, 24000),
        (24000, 48000),
        (16000, 8000),
        (24000, 44100),
    ],
)
def test_streamed_resampling_is_identical_to_whole_buffer(in_hz: int, out_hz: int) -> None:
    rng = np.random.default_rng(in_hz + out_hz)
    data = rng.integers(-20000, 20000, in_hz).astype(np.int16)
    stream = StreamResampler(in_hz, out_hz)
    sizes = rng.integers(1, in_hz // 50, 400)
    parts, pos = [], 0
    for size in sizes:
        parts.append(stream.process(data[pos : pos + size]))
        pos += int(size)
    parts.append(stream.process(data[pos:]))
    parts.append(stream.flush())
    streamed = np.concatenate(parts)
    whole = resample(data, in_hz, out_hz)
    assert streamed.size == whole.size
    assert np.array_equal(streamed, whole)


def test_resampled_tone_keeps_its_frequency() -> None:
    t = np.arange(48000) / 48000
    tone = (np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16)
    out = resample(tone, 48000, 16000)
    spectrum = np.abs(np.fft.rfft(out.astype(float)))
    assert np.argmax(spectrum) * 16000 / out.size == pytest.approx(1000, abs=2)


def test_g711_matches_audioop_for_every_sample_and_code() -> None:
    audioop = _audioop()
    raw = ALL_INT16.tobytes()
    assert g711.ulaw_encode(ALL_INT16) == audioop.lin2ulaw(raw, 2)
    assert g711.alaw_encode(ALL_INT16) == audioop.lin2alaw(raw, 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")
@pytest.mark.parametrize(("encoding", "decode"), [("u-law", g711.ulaw_decode), ("a-law", g711.alaw_decode)])
def test_g711_decode_matches_sox(tmp_path: Path, encoding: str, decode: object) -> None:
    codes = bytes(range(256))
    src = tmp_path / "in.raw"
    src.write_bytes(codes)
    out = tmp_path / "out.raw"
    subprocess.run(
        [
            "sox",
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            encoding,
            "-b",
            "8",
            "-c",
            "1",
            str(src),
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-L",
            str(out),
        ],
        check=True,
    )
    ref = np.frombuffer(out.read_bytes(), dtype="<i2")
    assert np.array_equal(decode(codes), ref)  # type: ignore[operator]


def test_g711_round_trip_error_is_bounded() -> None:
    x = np.arange(-32000, 32000, 7, dtype=np.int16)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        y = dec(enc(x)).astype(int)
        assert np.all(np.abs(y - x) <= np.maximum(np.abs(x) // 16, 64))


def test_ring_since_and_gaps() -> None:
    ring = AudioRing(480)
    for i in range(5):
        ring.append(np.full(160, i, dtype=np.int16), i * 160)
    assert ring.end_position == 800
    assert ring.start_position == 320
    assert ring.since(400).tolist() == [2] * 80 + [3] * 160 + [4] * 160
    assert ring.since(0).size == 480  # clamped to what is kept
    ring.append(np.full(160, 9, dtype=np.int16), 1120)  # a 320-sample gap becomes silence
    assert ring.since(800).tolist() == [0] * 320 + [9] * 160
    ring.append(np.full(1000, 7, dtype=np.int16), 1280)  # longer than the capacity
    assert ring.end_position == 2280
    assert ring.since(0).tolist() == [7] * 480
