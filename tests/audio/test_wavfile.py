import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from earshot.audio.devices import open_audio
from earshot.audio.playback import Playback, PlaybackEvent, PlaybackFinished, PlaybackStarted
from earshot.audio.wavfile import FileAudio
from earshot.config import AudioConfig, EchoFeedConfig, InputConfig, OutputConfig


def _write(path: Path, pcm: np.ndarray, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 24000
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def _config(tmp_path: Path, inp: Path, *, speed: float = 50.0, echo: EchoFeedConfig | None = None) -> AudioConfig:
    return AudioConfig(
        backend="file",
        input=InputConfig(file=inp),
        output=OutputConfig(file=tmp_path / "out.wav", buffer_ms=40, prebuffer_ms=40),
        echo=echo,
        file_speed=speed,
    )


def _silence_wav(tmp_path: Path, seconds: float) -> Path:
    return _write(tmp_path / "in.wav", np.zeros(int(16000 * seconds), dtype=np.int16), 16000)


async def test_input_of_any_rate_and_channels_arrives_as_16k_chunks(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    left = (np.sin(2 * np.pi * 500 * t) * 8000).astype(np.int16)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)
    cfg = _config(tmp_path, _write(tmp_path / "in.wav", stereo, 44100, channels=2))
    audio = FileAudio(cfg)
    got = [chunk async for chunk in audio.source.chunks()]
    audio.close()
    assert [c.position for c in got] == [i * 160 for i in range(100)]
    assert all(c.pcm.size == 160 and c.pcm.dtype == np.int16 for c in got)
    pcm = np.concatenate([c.pcm for c in got])
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    assert np.argmax(spectrum) * 16000 / pcm.size == pytest.approx(500, abs=2)
    assert np.max(np.abs(pcm[1000:-1000])) == pytest.approx(4000, rel=0.05)  # stereo averaged
    out = _read(tmp_path / "out.wav")
    assert out.size >= 24000
    assert not out.any()


async def test_reply_plays_out_on_the_input_clock_and_finishes_when_heard(tmp_path: Path) -> None:
    audio = FileAudio(_config(tmp_path, _silence_wav(tmp_path, 2.0)))
    events: list[PlaybackEvent] = []
    finished = asyncio.Event()

    def on_event(event: PlaybackEvent) -> None:
        events.append(event)
        if isinstance(event, PlaybackFinished):
            finished.set()

    playback = Playback(audio.sink, prebuffer_ms=40, on_event=on_event)
    runner = asyncio.create_task(playback.run())
    reply = np.full(12000, 5000, dtype=np.int16)
    enqueued_at = None
    async for chunk in audio.source.chunks():
        if chunk.position == 8000:  # 0.5 s into the input
            enqueued_at = chunk.position
            for part in np.array_split(reply, 10):
                playback.enqueue("item_1", part)
            playback.finish()
        if finished.is_set():
            break
    await asyncio.wait_for(finished.wait(), 5)
    heard_when_finished = audio.sink.queued_samples()
    runner.cancel()
    await audio.aclose()
    assert enqueued_at == 8000
    assert events[0] == PlaybackStarted("item_1")
    assert events[-1] == PlaybackFinished({"item_1": 12000})
    assert heard_when_finished == 0
    out = _read(tmp_path / "out.wav")
    nonzero = np.flatnonzero(out)
    assert nonzero.size == 12000
    onset_s = nonzero[0] / 24000
    assert 0.5 <= onset_s <= 0.5 + 0.06  # same clock: starts where it was enqueued (+ ticks of latency)
    assert nonzero[-1] - nonzero[0] == 11999


async def test_barge_in_reports_exactly_what_the_output_contains(tmp_path: Path) -> None:
    audio = FileAudio(_config(tmp_path, _silence_wav(tmp_path, 2.0), speed=20.0))
    playback = Playback(audio.sink, prebuffer_ms=40)
    runner = asyncio.create_task(playback.run())
    heard: dict[str, int] = {}
    async for chunk in audio.source.chunks():
        if chunk.position == 1600:
            playback.enqueue("earcon:wake", np.full(2400, -300, dtype=np.int16))
            playback.enqueue("item_a", np.full(24000, 7000, dtype=np.int16))
            playback.enqueue("item_b", np.full(24000, -7000, dtype=np.int16))
            playback.finish()
        if chunk.position == 16000:
            heard = playback.stop(fade_ms=10)
    assert set(heard) == {"item_a", "item_b"}
    await asyncio.wait_for(audio.sink.drain(), 5)  # the fade has been played
    runner.cancel()
    await audio.aclose()
    out = _read(tmp_path / "out.wav")
    assert heard["item_b"] == 0
    assert not np.any(out < -300)  # nothing of item_b reached the speaker
    assert 0 < heard["item_a"] < 24000
    played_a = int(np.count_nonzero(out > 0))
    assert played_a == heard["item_a"]
    assert np.count_nonzero(out == -300) == 2400  # the earcon played in full, not counted
    assert playback.heard_samples("item_a") == heard["item_a"]
    fade = out[np.flatnonzero(out > 0)[-240:]]
    assert fade[-1] < 100
    assert fade[0] > 6900


async def test_reply_audio_past_the_queue_bound_is_dropped_and_what_plays_is_what_is_heard(tmp_path: Path) -> None:
    """A server sending far more than the bound: the queue stops at it, the rest is counted, heard stays exact."""
    audio = FileAudio(_config(tmp_path, _silence_wav(tmp_path, 2.0)))
    finished: list[PlaybackFinished] = []
    playback = Playback(
        audio.sink,
        prebuffer_ms=40,
        max_queued_s=0.25,
        on_event=lambda e: finished.append(e) if isinstance(e, PlaybackFinished) else None,
    )
    runner = asyncio.create_task(playback.run())
    async for chunk in audio.source.chunks():
        if chunk.position == 1600:
            for _ in range(20):  # 2 s at once, 8 times the bound
                playback.enqueue("item_1", np.full(2400, 6000, dtype=np.int16))
            # full: a G.711 delta is cut to nothing before resampling
            assert playback.fit(np.ones(800, dtype=np.int16), 8000).size == 0
            playback.finish()
        if finished:
            break
    runner.cancel()
    await audio.aclose()
    out = _read(tmp_path / "out.wav")
    assert np.count_nonzero(out) == 6000
    assert finished == [PlaybackFinished({"item_1": 6000})]
    assert playback.dropped_samples == 20 * 2400 - 6000 + 2400


def test_fit_cuts_at_the_rate_it_is_given(tmp_path: Path) -> None:
    audio = FileAudio(_config(tmp_path, _silence_wav(tmp_path, 0.1)))
    playback = Playback(audio.sink, prebuffer_ms=40, max_queued_s=0.5)
    playback.enqueue("item_1", np.ones(6000, dtype=np.int16))  # 0.25 s queued, 0.25 s of room
    assert playback.fit(np.ones(8000, dtype=np.int16), 8000).size == 2000
    assert playback.dropped_samples == 6000 * 3
    assert playback.fit(np.ones(10, dtype=np.int16), 24000).size == 10
    audio.close()


async def test_echo_feed_mixes_delayed_attenuated_playback_into_capture(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        _silence_wav(tmp_path, 1.0),
        echo=EchoFeedConfig(delay_ms=30.0, gain_db=-6.0, room_ms=0.0, drive_db=0.0),
    )
    source, sink = open_audio(cfg)
    captured = []
    reference = []
    ref_from: int | None = None  # capture position of the first chunk that had reference
    async for chunk in source.chunks():
        if chunk.position == 1600:
            await sink.write(np.full(4800, 10000, dtype=np.int16))
        captured.append(chunk.pcm)
        popped = sink.pop_reference()
        if chunk.position < 1600:
            assert popped.size == 0  # nothing while idle, like the ALSA sink: a new pairing when sound starts
        if popped.size and ref_from is None:
            ref_from = chunk.position
        reference.append(popped)
        if ref_from is not None and chunk.position < 1600 + 4800 * 2 // 3:
            # While it plays, the reference for every chunk is there when the chunk is (the canceller never waits).
            assert sum(r.size for r in reference) >= chunk.position + chunk.pcm.size - ref_from
    await sink.drain()
    reference.append(sink.pop_reference())
    await audio_close(sink)
    mic = np.concatenate(captured)
    ref = np.concatenate(reference)
    out = _read(tmp_path / "out.wav")
    out_on_s = int(np.flatnonzero(out)[0]) / 24000
    mic_on_s = int(np.flatnonzero(np.abs(mic) > 2500)[0]) / 16000
    # The reference is one chunk per captured chunk, and the echo is 30 ms behind it: that is what the
    # canceller pairs. The reference runs behind the output WAV by the resampler's delay.
    lag = sink._audio.reference_lag_samples  # type: ignore[attr-defined]
    assert 300 <= lag <= 800
    assert ref_from is not None
    ref_on = ref_from + int(np.flatnonzero(np.abs(ref) > 5000)[0])
    mic_on = int(np.flatnonzero(np.abs(mic) > 2500)[0])
    assert mic_on - ref_on == 480
    assert mic_on_s - out_on_s == pytest.approx(0.030 + lag / 16000, abs=0.002)
    assert np.count_nonzero(np.abs(ref) > 5000) == pytest.approx(3200, abs=40)  # the reference holds the tone
    assert np.median(mic[round(mic_on_s * 16000) + 100 : round(mic_on_s * 16000) + 2000]) == pytest.approx(
        10000 * 10 ** (-6 / 20), rel=0.02
    )


async def audio_close(sink: object) -> None:
    await sink._audio.aclose()  # type: ignore[attr-defined]


async def test_sink_keeps_the_clock_after_the_input_ends(tmp_path: Path) -> None:
    audio = FileAudio(_config(tmp_path, _silence_wav(tmp_path, 0.2)))
    n = 0
    async for _ in audio.source.chunks():
        n += 1
    assert n == 20
    await audio.sink.write(np.full(2400, 1234, dtype=np.int16))
    await asyncio.wait_for(audio.sink.drain(), 5)
    assert audio.sink.queued_samples() == 0
    await audio.aclose()
    out = _read(tmp_path / "out.wav")
    assert np.count_nonzero(out == 1234) == 2400
    assert out.size >= 0.2 * 24000 + 2400


async def test_an_underrun_within_a_sound_keeps_the_reference_timeline(tmp_path: Path) -> None:
    """Silence the speaker played for want of audio (an underrun) is on the reference as zeros, one chunk per
    captured chunk, so the canceller's pairing holds; a long silence, or a drop, ends the reference."""
    from earshot.audio.wavfile import _REFERENCE_HOLD_TICKS

    source, sink = open_audio(_config(tmp_path, _silence_wav(tmp_path, 2.0)))
    per_chunk: dict[int, int] = {}
    async for chunk in source.chunks():
        if chunk.position == 1600:
            await sink.write(np.full(2400, 8000, dtype=np.int16))  # 100 ms, then nothing for 150 ms
        if chunk.position == 1600 + 250 * 16:
            await sink.write(np.full(2400, 8000, dtype=np.int16))  # ...then the rest of the reply
        if chunk.position == 16000:
            await sink.write(np.full(2400, 8000, dtype=np.int16))
        if chunk.position == 16000 + 50 * 16:
            sink.drop()  # barge-in: stopped, not starved
        per_chunk[chunk.position] = sink.pop_reference().size
    await audio_close(sink)
    first = min(p for p, n in per_chunk.items() if n)
    second_end = 1600 + 350 * 16
    gapless = [per_chunk[p] for p in range(first + 160, second_end, 160)]
    assert gapless == [160] * len(gapless)  # through the 150 ms underrun: zeros, chunk for chunk
    hold_end = second_end + (_REFERENCE_HOLD_TICKS + 60) * 160
    assert all(per_chunk[p] == 0 for p in range(hold_end, 16000, 160))  # long silence: nothing (idle)
    after_drop = [per_chunk[p] for p in range(16000 + 60 * 16 + 800, 32000 - 160, 160)]
    assert after_drop == [0] * len(after_drop)  # a drop ends the reference at once, no hold
