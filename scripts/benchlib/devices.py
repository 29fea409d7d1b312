"""CPU of the ALSA device threads (``scripts/bench --only devices``): ``capture_cpu_pct``, ``playback_cpu_pct``.

:class:`earshot.audio.alsa.AlsaSource` and :class:`~earshot.audio.alsa.AlsaSink` each run one thread
(``earshot-capture-N`` / ``earshot-playback-N``) that only does the blocking ``read``/``write``; the
conversion (downmix, resampling, framing, volume) runs on the event loop. Both run at once, from the
default ``audio.input``/``audio.output`` config, through alsa-lib's pulse plugin on a private
PulseAudio server: the speaker is a null sink and the microphone its monitor, so both devices run at
the server's real-time pace, as a sound card does. The playback side plays continuous flite speech.

Each figure is that thread's on-CPU time (``/proc/self/task/TID/schedstat``, nanoseconds; ``stat``
``utime+stime`` in clock ticks where schedstat is missing) over the seconds of audio it moved, × 100:
% of one core. The loop's own CPU (both conversions plus this driver) is in ``details.devices``.

Without PulseAudio, the same code runs on alsa-lib ``file``/``null`` devices, which do not pace: the
figure is then CPU per second of audio moved as fast as the loop goes (noted with the figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from numpy.typing import NDArray

from benchlib import audio
from earshot.audio.alsa import AlsaSink, AlsaSource
from earshot.config import default_config

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_CAPTURE, _PLAYBACK = "earshot-capture-", "earshot-playback-"


def thread_cpu_s(native_id: int) -> float:
    """On-CPU seconds of one thread of this process (schedstat if the kernel has it, else utime + stime)."""
    task = Path(f"/proc/self/task/{native_id}")
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * _TICK_S  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return 0.0


class ThreadClock:
    """Sums the CPU time of this process's threads whose names start with ``prefix`` (every generation).

    A thread's last reading is kept when it ends (its task entry goes), so a reopen loses nothing
    measured up to the last :meth:`sample`.
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._last: dict[int, float] = {}
        self._base: dict[int, float] = {}

    def _threads(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith(self.prefix) and t.native_id is not None]

    def start(self) -> None:
        """Zero the clock: CPU spent before now does not count."""
        self.sample()
        self._base = dict(self._last)

    def sample(self) -> float:
        """CPU seconds since :meth:`start`."""
        for thread in self._threads():
            assert thread.native_id is not None
            cpu = thread_cpu_s(thread.native_id)
            if cpu:
                self._last[thread.native_id] = cpu
        return sum(cpu - self._base.get(tid, 0.0) for tid, cpu in self._last.items())

    @property
    def threads(self) -> int:
        """Threads seen so far."""
        return len(self._last)


@dataclass(frozen=True, slots=True)
class DeviceCpu:
    """One run's figures."""

    capture_pct: float
    playback_pct: float
    capture_audio_s: float
    playback_audio_s: float
    loop_pct: float
    wall_s: float
    devices: str
    real_time: bool
    xruns: dict[str, int]
    capture_threads: int
    playback_threads: int

    def as_dict(self) -> dict[str, Any]:
        """For ``details.devices``."""
        return {
            "capture_cpu_pct": round(self.capture_pct, 4),
            "playback_cpu_pct": round(self.playback_pct, 4),
            "capture_audio_s": round(self.capture_audio_s, 2),
            "playback_audio_s": round(self.playback_audio_s, 2),
            "loop_cpu_pct": round(self.loop_pct, 3),
            "wall_s": round(self.wall_s, 2),
            "devices": self.devices,
            "real_time": self.real_time,
            "xruns": self.xruns,
            "threads": {"capture": self.capture_threads, "playback": self.playback_threads},
        }


class PulseUnavailable(RuntimeError):
    """The private PulseAudio server could not be started."""


@contextlib.contextmanager
def private_pulse(root: Path) -> Iterator[Path]:
    """A private PulseAudio server with one null sink; yields the ALSA config naming ``speaker`` and ``mic``."""
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        raise PulseUnavailable("pulseaudio / pactl not installed")
    runtime = root / "xdg"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = root / "pulse.sock"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime), "PULSE_SERVER": f"unix:{sock}"}
    proc = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no", "--disallow-exit",
         "--load=module-null-sink sink_name=spk",
         f"--load=module-native-protocol-unix auth-anonymous=1 socket={sock}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["pactl", "info"], env=env, capture_output=True, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PulseUnavailable("pulseaudio did not start")
            time.sleep(0.05)
        conf = root / "asound-pulse.conf"
        conf.write_text(
            "</usr/share/alsa/alsa.conf>\n"
            f'pcm.speaker {{ type pulse server "unix:{sock}" device "spk" }}\n'
            f'pcm.mic {{ type pulse server "unix:{sock}" device "spk.monitor" }}\n'
        )
        yield conf
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        sock.unlink(missing_ok=True)


def file_devices(root: Path, seconds: float) -> Path:
    """ALSA config with ``mic`` reading padded raw silence through ``file`` and ``speaker`` = ``null`` (no pacing)."""
    rate = default_config().audio.input.sample_rate_hz
    raw = root / "mic.raw"
    raw.write_bytes(bytes(2 * round((seconds + 5) * rate)))
    conf = root / "asound-file.conf"
    conf.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.mic {{ type file slave.pcm "null" file "/dev/null" infile "{raw}" format "raw" }}\n'
        "pcm.speaker { type null }\n"
    )
    return conf


def reply_speech(seconds: float) -> NDArray[np.int16]:
    """Continuous flite speech at the playback rate (24 kHz), ``seconds`` long."""
    speech16 = audio.continuous_speech(min(seconds, 30.0))
    speech = np.asarray(soxr.resample(speech16, audio.RATE_HZ, 24000), dtype=np.int16)
    reps = int(np.ceil(seconds * 24000 / speech.size))
    out: NDArray[np.int16] = np.tile(speech, reps)[: round(seconds * 24000)]
    return out


@dataclass(frozen=True, slots=True)
class _Side:
    cpu_s: float
    audio_s: float
    threads: int
    xruns: int


async def _run(
    seconds: float, reply: NDArray[np.int16], *, capture_on: bool, playback_on: bool
) -> tuple[_Side | None, _Side | None, float, float]:
    """Run the requested sides at once until each moved ``seconds`` of audio: (capture, playback, loop %, wall s)."""
    cfg = default_config().audio
    source = AlsaSource(replace(cfg.input, device="mic"))
    sink = AlsaSink(replace(cfg.output, device="speaker"))
    capture_clock, playback_clock = ThreadClock(_CAPTURE), ThreadClock(_PLAYBACK)
    captured = 0
    written = 0
    chunk = 240  # 10 ms at 24 kHz, as Playback hands the sink

    def played() -> int:
        return written - sink.queued_samples()

    async def capture() -> None:
        nonlocal captured
        async for c in source.chunks():
            captured += int(c.pcm.size)

    async def play() -> None:
        nonlocal written
        while True:
            for i in range(0, reply.size - chunk + 1, chunk):
                await sink.write(reply[i : i + chunk])
                written += chunk

    def short(cap0: int, played0: int, need_cap: float, need_play: float) -> bool:
        return (capture_on and captured - cap0 < need_cap) or (playback_on and played() - played0 < need_play)

    tasks = [asyncio.create_task(f()) for f, on in ((capture, capture_on), (play, playback_on)) if on]
    try:
        # Warm-up: the devices open and move (a sound server takes a moment to start delivering).
        # The device pointers have no event to wait on: this samples them.
        async with asyncio.timeout(30):
            while short(0, 0, 8000, 12000):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        capture_clock.start()
        playback_clock.start()
        loop0, wall0 = time.thread_time(), time.monotonic()
        cap0, played0 = captured, played()
        async with asyncio.timeout(seconds * 4 + 30):
            while short(cap0, played0, seconds * 16000, seconds * 24000):
                await asyncio.sleep(0.05)
                capture_clock.sample()  # keep each thread's latest reading, in case it ends (reopen)
                playback_clock.sample()
        capture_cpu, playback_cpu = capture_clock.sample(), playback_clock.sample()
        wall = time.monotonic() - wall0
        loop_pct = (time.thread_time() - loop0) / wall * 100
        capture_s, playback_s = (captured - cap0) / 16000, (played() - played0) / 24000
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        source.close()
        sink.close()
    cap = _Side(capture_cpu, capture_s, capture_clock.threads, source.status.xruns) if capture_on else None
    play_ = _Side(playback_cpu, playback_s, playback_clock.threads, sink.status.xruns) if playback_on else None
    return cap, play_, loop_pct, wall


def measure(seconds: float) -> DeviceCpu:
    """Run capture and playback together for ``seconds`` of audio each; PulseAudio if it starts, else file/null.

    ``ALSA_CONFIG_PATH`` is set for the run and restored after.
    """
    reply = reply_speech(min(seconds, 30.0))
    saved = os.environ.get("ALSA_CONFIG_PATH")
    with tempfile.TemporaryDirectory(prefix="earshot-bench-dev-") as tmp:
        root = Path(tmp)
        try:
            with contextlib.ExitStack() as stack:
                try:
                    conf = stack.enter_context(private_pulse(root))
                    devices, real_time = "PulseAudio null sink (speaker) and its monitor (mic), alsa-lib pulse", True
                except PulseUnavailable as exc:
                    conf = file_devices(root, seconds)
                    devices, real_time = f"alsa-lib file (mic) and null (speaker), not paced ({exc})", False
                os.environ["ALSA_CONFIG_PATH"] = str(conf)
                if real_time:
                    cap, play, loop_pct, wall = asyncio.run(_run(seconds, reply, capture_on=True, playback_on=True))
                else:  # unpaced devices flood the loop: one side at a time
                    cap, _, loop_c, wall_c = asyncio.run(_run(seconds, reply, capture_on=True, playback_on=False))
                    _, play, loop_p, wall_p = asyncio.run(_run(seconds, reply, capture_on=False, playback_on=True))
                    wall = wall_c + wall_p
                    loop_pct = (loop_c * wall_c + loop_p * wall_p) / wall
                assert cap is not None
                assert play is not None
                return DeviceCpu(
                    capture_pct=cap.cpu_s / cap.audio_s * 100,
                    playback_pct=play.cpu_s / play.audio_s * 100,
                    capture_audio_s=cap.audio_s,
                    playback_audio_s=play.audio_s,
                    loop_pct=loop_pct,
                    wall_s=wall,
                    devices=devices,
                    real_time=real_time,
                    xruns={"capture": cap.xruns, "playback": play.xruns},
                    capture_threads=cap.threads,
                    playback_threads=play.threads,
                )
        finally:
            if saved is None:
                os.environ.pop("ALSA_CONFIG_PATH", None)
            else:
                os.environ["ALSA_CONFIG_PATH"] = saved
