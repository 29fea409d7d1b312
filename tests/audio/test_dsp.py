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


@pytest.mark.parametrize("q", [0.0, 1.0, 2.0, 37.5, 50.0, 90.0, 99.0, 100.0])
def test_percentile_is_numpys_linear_percentile(q: float) -> None:
    rng = np.random.default_rng(int(q * 10))
    for size in (1, 2, 3, 10, 101, 2000):
        values = rng.normal(-30.0, 12.0, size)
        assert dsp.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)
        f32 = values.astype(np.float32)
        assert dsp.percentile(f32, q) == pytest.approx(float(np.percentile(f32, q)), abs=1e-4)
    assert dsp.percentile(np.array([3, 1, 2], dtype=np.int16), 50) == 2.0


def test_percentile_refuses_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError, match="of 0 values"):
        dsp.percentile(np.zeros(0), 50)
    with pytest.raises(ValueError, match="percentile 101"):
        dsp.percentile(np.zeros(3), 101)


_NO_MASKED_ARRAYS = """
import sys
import numpy as np
from earshot.audio.echo import EchoCanceller
from earshot.gate.bargein import WakeGuard
import earshot.app, earshot.compose

assert "numpy.ma" not in sys.modules, "importing the daemon imported numpy.ma"
from earshot.audio import g711
built = [f.cache_info().currsize for f in (g711._ulaw_enc, g711._ulaw_dec, g711._alaw_enc, g711._alaw_dec)]
assert built == [0, 0, 0, 0], f"importing the daemon built G.711 tables: {built}"
rng = np.random.default_rng(1)
ref = (rng.standard_normal(16000 * 8) * 3000).astype(np.int16)
h = np.zeros(900)
h[300] = 0.4
h[301:] = rng.standard_normal(599) * 0.02 * np.exp(-np.arange(599) / 200)
mic = (np.tanh(np.convolve(ref.astype(float), h)[: ref.size] / 20000) * 20000).astype(np.int16)
echo, guard = EchoCanceller(), WakeGuard()
for i in range(0, ref.size - 160, 160):
    echo.add_reference(ref[i : i + 160])
    echo.process(mic[i : i + 160])
    guard.observe(echo.frame, i)
assert echo._meter.peak_gap_db is not None, "the residual's peak gap was never computed"
guard.accept(ref.size - 160, ref.size - 16000)
assert "numpy.ma" not in sys.modules, "a reply's echo path imported numpy.ma"
"""


def test_the_default_daemon_keeps_unused_numpy_parts_out_of_memory() -> None:
    # np.percentile's np.unique asks numpy.ma whether the array is masked: 1.5 MB of RSS, imported in
    # the middle of the first reply. The canceller's peak gap and the wake guard use dsp.percentile.
    # The G.711 encode tables (2 MB of heap while built) wait for a G.711 session.
    import sys

    r = subprocess.run([sys.executable, "-c", _NO_MASKED_ARRAYS], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_framer_take_is_push_joined() -> None:
    rng = np.random.default_rng(4)
    data = rng.integers(-2000, 2000, 1234).astype(np.int16)
    pushed, taken = dsp.Framer(160), dsp.Framer(160)
    for piece in np.array_split(data, 7):
        frames = pushed.push(piece)
        whole = taken.take(piece)
        assert np.array_equal(whole, np.concatenate(frames) if frames else np.zeros(0, np.int16))
        assert len(whole) % 160 == 0
        assert taken.pending == pushed.pending
