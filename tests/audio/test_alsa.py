import asyncio
import fcntl
import itertools
import os
import termios
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earshot.audio.alsa import AlsaSink, AlsaSource, list_devices
from earshot.audio.alsa import source as source_module
from earshot.audio.backend import CaptureChunk, DeviceState
from earshot.audio.playback import Playback, PlaybackFinished
from earshot.audio.resample import resample
from earshot.config import InputConfig, OutputConfig

from .conftest import AlsaConf


async def _take(source: AlsaSource, n: int) -> list[CaptureChunk]:
    out: list[CaptureChunk] = []
    async with asyncio.timeout(20):
        async for chunk in source.chunks():
            out.append(chunk)
            if len(out) == n:
                break
    return out


def _ramp(n: int, channels: int = 1) -> np.ndarray:
    mono = ((np.arange(n) * 37) % 20000 - 10000).astype(np.int16)
    return np.repeat(mono, channels) if channels > 1 else mono


async def test_capture_from_file_infile_delivers_exact_chunks(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    data = _ramp(16000)
    raw = tmp_path / "mic.raw"
    raw.write_bytes(np.concatenate([data, np.zeros(16000, np.int16)]).astype("<i2").tobytes())  # padded
    alsa_conf(f'pcm.mic {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}\n')
    source = AlsaSource(InputConfig(device="mic", sample_rate_hz=16000, period_ms=10, queue_ms=30000))
    chunks = await _take(source, 50)
    status = source.status
    source.close()
    assert [c.position for c in chunks] == [i * 160 for i in range(50)]
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), data[:8000])
    assert status.state is DeviceState.OK
    assert status.rate_hz == 16000
    assert status.period_frames == 160


async def test_capture_at_48k_four_channels_selects_a_channel_and_resamples(
    alsa_conf: AlsaConf, tmp_path: Path
) -> None:
    t = np.arange(48000) / 48000
    tone = (np.sin(2 * np.pi * 700 * t) * 9000).astype(np.int16)
    frames = np.zeros((48000, 4), np.int16)
    frames[:, 2] = tone  # only channel 2 carries the voice
    raw = tmp_path / "array.raw"
    raw.write_bytes(np.concatenate([frames.reshape(-1), np.zeros(48000 * 4, np.int16)]).astype("<i2").tobytes())
    alsa_conf(f'pcm.array {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}\n')
    source = AlsaSource(InputConfig(device="array", sample_rate_hz=48000, channels=4, channel=2, queue_ms=30000))
    chunks = await _take(source, 90)
    source.close()
    pcm = np.concatenate([c.pcm for c in chunks])
    assert source.status.rate_hz == 48000
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    assert np.argmax(spectrum) * 16000 / pcm.size == pytest.approx(700, abs=3)
    expected = resample(tone, 48000, 16000)[: pcm.size]
    assert np.max(np.abs(pcm[200:].astype(int) - expected[200:].astype(int))) <= 2


async def test_capture_through_plug_converts_rate_and_channels(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    raw = tmp_path / "stereo44.raw"
    raw.write_bytes(np.concatenate([np.repeat(tone, 2), np.zeros(88200, np.int16)]).astype("<i2").tobytes())
    alsa_conf(
        f'pcm.card {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}\n'
        'pcm.plugmic { type plug slave { pcm "card" rate 44100 channels 2 format S16_LE } }\n'
    )
    source = AlsaSource(InputConfig(device="plugmic", sample_rate_hz=16000, queue_ms=30000))
    chunks = await _take(source, 60)
    pcm = np.concatenate([c.pcm for c in chunks])
    spectrum = np.abs(np.fft.rfft(pcm.astype(float)))
    # alsa-lib's own rate plugin over a file-backed slave runs a few % fast at the start; unconverted 44.1 kHz
    # read as 16 kHz would be 827 Hz.
    assert np.argmax(spectrum) * 16000 / pcm.size == pytest.approx(300, rel=0.05)
    assert source.status.rate_hz == 16000
    assert np.max(np.abs(pcm[400:])) == pytest.approx(8000, rel=0.1)
    source.close()


async def test_live_capture_from_a_fifo_follows_the_writer(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)  # before the PCM opens it: the open never blocks, no EOF later
    alsa_conf(f'pcm.live {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n')
    source = AlsaSource(InputConfig(device="live", period_ms=10))  # the writer delivers 10 ms at a time
    got: list[CaptureChunk] = []
    try:
        async with asyncio.timeout(20):
            it = source.chunks()
            for k in range(20):
                os.write(fd, np.full(160, k * 100, np.int16).astype("<i2").tobytes())
                got.append(await anext(it))
    finally:
        source.close()
        os.close(fd)
    assert [int(c.pcm[0]) for c in got] == [k * 100 for k in range(20)]
    assert all(np.all(c.pcm == c.pcm[0]) for c in got)


async def test_missing_capture_device_is_reopened_when_it_appears(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    fifo = tmp_path / "late.fifo"
    alsa_conf(f'pcm.usb {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n')
    source = AlsaSource(InputConfig(device="usb"), reopen_max_s=0.5)
    it = source.chunks()
    first = asyncio.ensure_future(anext(it))
    async with asyncio.timeout(10):
        while source.status.error is None:  # noqa: ASYNC110 - status has no change event to wait on
            await asyncio.sleep(0.01)
    assert source.status.state is DeviceState.MISSING
    assert "usb" in source.status.describe()
    assert not first.done()  # waiting, not failing
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    try:
        async with asyncio.timeout(10):
            while source.status.state.value != "ok":  # noqa: ASYNC110 - status has no change event
                await asyncio.sleep(0.01)
            os.write(fd, np.full(160, 5, np.int16).astype("<i2").tobytes())
            chunk = await first
    finally:
        source.close()
        os.close(fd)
    assert np.all(chunk.pcm == 5)
    assert chunk.position == 0  # positions count from the first successful open


async def test_playback_is_converted_and_recorded_through_file(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    out = tmp_path / "speaker.raw"
    alsa_conf(
        f'pcm.rec {{ type file slave.pcm "null" file "{out}" format "raw" }}\n'
        'pcm.speaker { type plug slave { pcm "rec" rate 48000 channels 2 format S16_LE } }\n'
    )
    sink = AlsaSink(OutputConfig(device="speaker", sample_rate_hz=48000, channels=2, buffer_ms=40))
    t = np.arange(24000) / 24000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16)
    async with asyncio.timeout(20):
        for part in np.array_split(tone, 50):
            await sink.write(part)
        await sink.drain()
    assert sink.queued_samples() == 0
    ref = sink.pop_reference()
    sink.close()
    recorded = np.frombuffer(out.read_bytes(), dtype="<i2").reshape(-1, 2)
    assert np.array_equal(recorded[:, 0], recorded[:, 1])
    expected = resample(tone, 24000, 48000)
    assert recorded.shape[0] >= expected.size - 48
    n = min(expected.size, recorded.shape[0])
    expected = resample(tone, 24000, 48000, quality="LQ")
    assert np.max(np.abs(recorded[:n, 0].astype(int) - expected[:n].astype(int))) <= 1  # the converted tone
    assert ref.size == pytest.approx(16000, abs=32)  # the 16 kHz echo reference of all that was played


async def test_playback_accounting_on_a_null_device(alsa_conf: AlsaConf) -> None:
    alsa_conf("pcm.nul { type null }\n")
    sink = AlsaSink(OutputConfig(device="nul"))
    done = asyncio.Event()
    finished: list[PlaybackFinished] = []

    def on_event(event: object) -> None:
        if isinstance(event, PlaybackFinished):
            finished.append(event)
            done.set()

    playback = Playback(sink, prebuffer_ms=40, on_event=on_event)
    runner = asyncio.create_task(playback.run())
    playback.enqueue("item_x", np.full(4800, 100, np.int16))
    playback.enqueue("item_y", np.full(2400, 100, np.int16))
    playback.finish()
    async with asyncio.timeout(20):
        await done.wait()
    runner.cancel()
    sink.close()
    assert finished == [PlaybackFinished({"item_x": 4800, "item_y": 2400})]
    assert not playback.active


def test_list_devices_reports_capture_and_playback(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    raw = tmp_path / "m.raw"
    raw.write_bytes(bytes(64000))
    alsa_conf(
        'pcm.spk { type null hint { show on description "test speaker" } }\n'
        f'pcm.mic {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" '
        'hint { show on description "test mic" } }\n'
    )
    devices = {d.name: d for d in list_devices()}
    assert devices["spk"].can_play
    assert devices["mic"].can_capture
    assert 16000 in devices["spk"].playback_rates


async def test_capture_period_follows_low_latency_without_a_reopen(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Idle: long periods (fewer wake-ups); engaged: short ones. The stream's positions go on; no reopen counted."""
    fd = _fifo_mic(alsa_conf, tmp_path)  # paced by this test: it writes as it takes
    data = _ramp(16000 * 30)
    cfg = InputConfig(device="live", sample_rate_hz=16000, period_ms=10, idle_period_ms=100, queue_ms=30000)
    source = AlsaSource(cfg)
    seen: list[int] = []
    sizes: list[int] = []
    periods: list[int] = []
    written = 3200
    os.write(fd, data[:written].astype("<i2").tobytes())
    try:
        async with asyncio.timeout(20):
            async for chunk in source.chunks():
                os.write(fd, data[written : written + len(chunk.pcm)].astype("<i2").tobytes())
                written += len(chunk.pcm)
                seen.append(chunk.position)
                sizes.append(len(chunk.pcm))
                periods.append(source.status.period_frames)
                if len(seen) == 20:
                    source.set_low_latency(False)
                if len(seen) > 20 and periods[-1] == 1600 and 1600 not in periods[:-1]:
                    source.set_low_latency(True)
                if 1600 in periods and periods[-1] == 160 and len(seen) > 40:
                    break
    finally:
        status = source.status
        source.close()
        os.close(fd)
    assert periods[0] == 160
    assert 1600 in periods
    assert periods[-1] == 160
    assert status.reopens == 0
    assert seen == [seen[0] + sum(sizes[:i]) for i in range(len(seen))]  # no gap, no overlap in positions
    assert sizes[0] == 160  # engaged: 10 ms chunks
    assert sizes[-1] == 160


async def test_backlog_counts_the_rest_of_a_periods_burst(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Engaged, a 100 ms period arrives as ten chunks at once: ``backlog`` says how many of them are still
    to be yielded, so the daemon does its per-period work (the echo reference) on the first chunk of a burst."""
    fd = _fifo_mic(alsa_conf, tmp_path)
    data = _ramp(16000 * 2)
    os.write(fd, data.astype("<i2").tobytes())
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=100))
    backlogs: list[int] = []
    try:
        async with asyncio.timeout(20):
            async for _ in source.chunks():
                backlogs.append(source.backlog)
                if len(backlogs) == 150:
                    break
    finally:
        source.close()
        os.close(fd)
    assert max(backlogs) >= 9  # a period's ten chunks came at once
    for before, after in itertools.pairwise(backlogs):
        assert after == before - 1 or before == 0 or after > before  # counts down, or a new burst came
    starts = [0, *(k + 1 for k, b in enumerate(backlogs[:-1]) if b == 0)]
    assert len(starts) <= len(backlogs) // 10 + 2  # one burst start per period, not per chunk


def _fifo_mic(alsa_conf: AlsaConf, tmp_path: Path) -> int:
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)  # before the PCM opens it: the open never blocks, no EOF later
    # Room for seconds of audio: the file plugin pads a read that finds the pipe empty with zeros,
    # so the test's audio must be in the pipe before the device reads it.
    fcntl.fcntl(fd, 1031, 1 << 20)  # F_SETPIPE_SZ
    alsa_conf(f'pcm.live {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n')
    return fd


async def _late_loop(source: AlsaSource, fd: int, data: np.ndarray, n: int) -> list[CaptureChunk]:
    """Take one chunk; then, with the loop busy, the device delivers the rest of ``data``; then take ``n``."""
    out: list[CaptureChunk] = []
    async with asyncio.timeout(20):
        it = source.chunks()
        os.write(fd, data[:160].astype("<i2").tobytes())
        out.append(await anext(it))
        # The loop is busy (a slow CPU) while the device keeps delivering: the capture thread reads
        # on its own; this blocks until it has read everything, then the loop stays busy a while.
        rest = memoryview(data[160:].astype("<i2").tobytes())
        while rest:
            rest = rest[os.write(fd, rest) :]
        time.sleep(0.3)  # noqa: ASYNC251 - the point: a loop that is busy, not waiting
        while len(out) < n:
            out.append(await anext(it))
    return out


async def test_a_late_loop_loses_no_captured_audio(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Audio read while the loop is blocked waits in the capture inbox and is all delivered, in order."""
    data = _ramp(16000 * 3)
    fd = _fifo_mic(alsa_conf, tmp_path)
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=10, queue_ms=30000))
    try:
        chunks = await _late_loop(source, fd, data, 300)
    finally:
        status, late_ms = source.status, source.late_max_ms
        source.close()
        os.close(fd)
    assert [c.position for c in chunks] == [i * 160 for i in range(300)]
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), data)
    assert status.overruns == 0
    assert late_ms >= 250  # the inbox measured how late the loop was


async def test_a_catch_up_gives_the_other_tasks_a_turn_every_few_ms(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """A backlog is handed over at once, but never so long in one go that playback and the link starve
    (inside one Pi core, ten chunks in a row between turns held a wake earcon's writes back for 1.9 s).
    The bound is the loop time the run took (the consumer's work included), not a count of chunks, so a
    normal period of many chunks costs one pass of the loop."""
    data = _ramp(16000 * 2)
    fd = _fifo_mic(alsa_conf, tmp_path)
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=10, queue_ms=30000))
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    turns_at: list[int] = []
    other = asyncio.create_task(other_task())
    try:
        async with asyncio.timeout(20):
            it = source.chunks()
            os.write(fd, data[:160].astype("<i2").tobytes())
            await anext(it)
            rest = memoryview(data[160:].astype("<i2").tobytes())
            while rest:
                rest = rest[os.write(fd, rest) :]
            time.sleep(0.3)  # noqa: ASYNC251 - the point: a loop that is busy while the device delivers
            for _ in range(150):
                await anext(it)
                turns_at.append(turns)
                spin = time.perf_counter() + 0.002  # the conversation's work on the chunk: 2 ms
                while time.perf_counter() < spin:
                    pass
    finally:
        other.cancel()
        source.close()
        os.close(fd)
    runs: list[int] = []
    run = 0
    for before, after in itertools.pairwise(turns_at):
        run = run + 1 if after == before else 0
        runs.append(run)
    # From the tenth chunk on (the other task's first turns fall in with the device's start).
    # 5 ms of loop time between turns: three 2 ms chunks (four on a preempted machine), never a run.
    assert max(runs[10:]) < 4, f"{max(runs[10:]) + 1} chunks in a row without a turn for the other tasks"


async def test_an_idle_catch_up_is_bounded_in_audio_not_in_chunks(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Idle chunks hold a period each: the queue and inbox bound (``queue_ms``) still counts audio, so a
    late loop holds at most about ``queue_ms`` whatever the chunk size (it held 25 times that before)."""
    data = _ramp(16000 * 3)
    fd = _fifo_mic(alsa_conf, tmp_path)
    source = AlsaSource(
        InputConfig(device="live", sample_rate_hz=16000, period_ms=10, idle_period_ms=100, queue_ms=200)
    )
    source.set_low_latency(False)
    try:
        async with asyncio.timeout(20):
            it = source.chunks()
            os.write(fd, data[:1600].astype("<i2").tobytes())
            first = await anext(it)
            rest = memoryview(data[1600:].astype("<i2").tobytes())
            while rest:
                rest = rest[os.write(fd, rest) :]
            time.sleep(0.5)  # noqa: ASYNC251 - the point: a loop that is busy while the device delivers
            second = await anext(it)  # the loop takes what was kept
            held = sum(len(c.pcm) for c in source._queue) + len(second.pcm) + source._inbox_bytes // 2
    finally:
        status = source.status
        source.close()
        os.close(fd)
    assert first.position == 0
    assert status.state is DeviceState.OK
    assert held <= (200 + 320 + 100) * 16  # queue_ms, the drop's slack, a period in flight: not 3 s


async def test_the_capture_inbox_is_bounded_and_counts_the_gap(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Past ``queue_ms`` the newest audio goes (the start is kept); positions skip the gap, so they keep time."""
    data = _ramp(16000 * 3)
    fd = _fifo_mic(alsa_conf, tmp_path)
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=10, queue_ms=200))
    try:
        chunks = await _late_loop(source, fd, data, 21)
        os.write(fd, data[:1600].astype("<i2").tobytes())  # the device goes on after the catch-up
        async with asyncio.timeout(10):
            it = source.chunks()
            while len(chunks) < 31:
                chunks.append(await anext(it))
    finally:
        status = source.status
        source.close()
        os.close(fd)
    assert status.overruns > 0
    kept = chunks[:21]  # the first 200 ms after the first chunk were kept, in order
    assert [c.position for c in kept] == [i * 160 for i in range(21)]
    assert np.array_equal(np.concatenate([c.pcm for c in kept]), data[: 21 * 160])
    after = chunks[21:]
    assert after[0].position >= data.size  # the dropped audio is a gap in positions: they still measure time
    assert np.array_equal(np.concatenate([c.pcm for c in after]), data[:1600])


def test_a_missing_device_is_re_probed_at_least_every_second() -> None:
    """The backoff starts at 0.1 s and is capped by audio.reopen_max_s, 1 s by default: back in use within 2 s."""
    from earshot.audio.alsa.common import backoff
    from earshot.config import default_config

    cap = default_config().audio.reopen_max_s
    assert cap == 1.0
    delays = backoff(cap)
    assert [next(delays) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]


def test_the_doctors_device_probe_opens_a_real_pcm_and_names_a_missing_one(alsa_conf: AlsaConf) -> None:
    """``earshot doctor``'s capture/playback probe: the granted format of a plug PCM over alsa-lib's
    null device, and the device's own error for a PCM that does not exist."""
    from earshot.audio.alsa import probe_device
    from earshot.errors import AudioDeviceError

    alsa_conf('pcm.card { type plug slave { pcm "null" rate 44100 channels 2 format S16_LE } }\n')
    assert probe_device("card", capture=False, rate=24000, channels=1, period_ms=10).startswith("24000 Hz, 1 ch")
    assert probe_device("card", capture=True, rate=16000, channels=1, period_ms=20).startswith("16000 Hz, 1 ch")
    with pytest.raises(AudioDeviceError, match="nosuch"):
        probe_device("nosuch", capture=True, rate=16000, channels=1, period_ms=20)


def _room(seconds: float, dbfs: float = -60.0, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rms = 32768.0 * 10.0 ** (dbfs / 20.0)
    return np.clip(np.rint(rng.normal(0.0, rms, round(seconds * 16000))), -32768, 32767).astype(np.int16)


async def _write_paced(fd: int, data: np.ndarray, period: int, then: np.ndarray | None = None) -> None:
    """Write ``data`` a period at a time, each once the device has read the one before (the pipe is empty):
    the device's own pace. Then ``then``'s periods over and over (a room that goes on), until cancelled."""

    async def drained() -> None:
        while int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"), "little") > 0:  # noqa: ASYNC110 - a pipe's fill has no event
            await asyncio.sleep(0.002)

    for i in range(0, len(data), period):
        os.write(fd, data[i : i + period].astype("<i2").tobytes())
        await drained()
    while then is not None:
        for i in range(0, len(then), period):
            os.write(fd, then[i : i + period].astype("<i2").tobytes())
            await drained()


async def test_idle_periods_come_whole_and_a_quiet_room_wakes_the_loop_about_once_a_second(
    alsa_conf: AlsaConf, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle: a period is one chunk of its frames, and a quiet room's periods wait in the capture thread's
    inbox until a second's worth, or a louder period, wakes the loop. Nothing is lost or moved, and a
    loud period reaches the loop with nothing read after it."""
    posts: list[float] = []
    real_post = source_module.post

    def counting_post(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
        posts.append(time.monotonic())
        real_post(loop, callback, *args)

    monkeypatch.setattr(source_module, "post", counting_post)
    fd = _fifo_mic(alsa_conf, tmp_path)
    quiet, loud, after = _room(1.5), _ramp(16000 * 3 // 10), _room(1.2, seed=4)
    data = np.concatenate([quiet, loud, after])  # 30 periods of 100 ms
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=10, idle_period_ms=100))
    source.set_low_latency(False)
    got: list[CaptureChunk] = []
    received = 0
    progress = asyncio.Event()

    async def consume() -> None:
        nonlocal received
        async for chunk in source.chunks():
            got.append(chunk)
            received = chunk.position + len(chunk.pcm)
            progress.set()
            if received >= len(data):
                return

    writer: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(20):
            consumer = asyncio.create_task(consume())
            await _write_paced(fd, quiet, 1600)
            for k in range(3):  # each loud period reaches the loop though nothing more is written
                os.write(fd, loud[k * 1600 : (k + 1) * 1600].astype("<i2").tobytes())
                while received < len(quiet) + (k + 1) * 1600:
                    progress.clear()
                    await progress.wait()
            writer = asyncio.create_task(_write_paced(fd, after, 1600, then=_room(1.0, seed=5)))
            await consumer
    finally:
        if writer is not None:
            writer.cancel()
        source.close()
        os.close(fd)
    # Whole 10 ms frames, a period or what was held together (cut at 250 ms), never ten chunks a period.
    assert all(len(c.pcm) % 160 == 0 and 0 < len(c.pcm) <= 4000 for c in got)
    assert len(got) < 20
    assert [c.position for c in got] == [sum(len(c.pcm) for c in got[:i]) for i in range(len(got))]
    assert np.array_equal(np.concatenate([c.pcm for c in got])[: len(data)], data)
    # The device's open, the first period (no floor yet), one wake a second of quiet, one per loud
    # period: about 8 here. Without the hold, one a period: over 30.
    assert len(posts) <= 12, f"{len(posts)} wake-ups for 30 periods"


async def test_engaging_takes_the_held_quiet_audio_at_once(alsa_conf: AlsaConf, tmp_path: Path) -> None:
    """Engaging (short periods) hands the loop what the thread held, without waiting for the next read."""
    fd = _fifo_mic(alsa_conf, tmp_path)
    data = _room(0.6)
    source = AlsaSource(InputConfig(device="live", sample_rate_hz=16000, period_ms=10, idle_period_ms=100))
    source.set_low_latency(False)
    writer = asyncio.create_task(_write_paced(fd, data, 1600))
    try:
        async with asyncio.timeout(20):
            it = source.chunks()
            first = await anext(it)  # the first period goes at once (the room's floor is not known yet)
            assert first.position == 0
            await writer  # the device has read all six periods

            def taken() -> int:  # by the loop (the first chunk and the queue), or held in the thread's inbox
                return len(first.pcm) + sum(len(c.pcm) for c in source._queue) + source._inbox_bytes // 2

            while taken() < len(data):  # noqa: ASYNC110 - the inbox has no event
                await asyncio.sleep(0.005)
            held = source._inbox_bytes // 2
            assert held >= 3 * 1600  # held: the loop was not woken for them
            backlog = source.backlog
            source.set_low_latency(True)
            assert source._inbox_bytes == 0  # handed over in the call, before any other turn of the loop
            assert source.backlog > backlog
            got = [first]
            while sum(len(c.pcm) for c in got) < len(data):
                got.append(await anext(it))
    finally:
        writer.cancel()
        source.close()
        os.close(fd)
    assert np.array_equal(np.concatenate([c.pcm for c in got])[: len(data)], data)
