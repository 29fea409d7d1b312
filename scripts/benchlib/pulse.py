"""The real-time tier: the daemon on ALSA devices that are PulseAudio streams (``scripts/bench --only pulse``).

``earshot run`` runs with ``audio.backend: alsa`` through alsa-lib's pulse plugin, against a private
PulseAudio server (no sound card needed) and the same in-process emulator with scripted replies as
:mod:`benchlib.daemon`. The room, all on one null sink's clock:

- ``rec``: a 3-channel null sink at 48 kHz; its channels are the speaker (aux0), the microphone
  (aux1) and the user alone (aux2). One recording of ``rec.monitor`` holds all three sample-aligned.
- ``speaker``: a remap sink onto ``rec`` aux0, the daemon's playback device (ALSA PCM ``speaker``).
- ``room``: a remap sink onto aux1. The acoustic echo reaches it through :class:`EchoRelay`: what the
  speaker sounds (``sounding``, a remap source of ``rec.monitor`` aux0) recorded at 16 kHz, put through
  :class:`earshot.audio.room.EchoPath` (the file backend's loudspeaker and room: ``tanh`` soft clipping
  at +6 dB of drive, early reflections and a 150 ms RT60 tail, the direct path at −6 dB) by a process
  of its own and played into ``room``; the relay's own buffering is the echo delay (about 35 ms),
  fixed for the run. A plain delayed copy (``module-loopback``, as before) is what a linear canceller
  removes exactly: a room and a loudspeaker are not.
- ``user``: a 2-channel remap sink onto aux1 + aux2: the user's input WAV is played into it (pacat), so
  it reaches the microphone and, alone, the reference channel.
- ``mic``: a remap source of ``rec.monitor`` aux1, the daemon's capture device (ALSA PCM ``mic``).

The sound server, the echo relay's three processes and the room's recorder run at a real-time
priority where the machine allows it (:func:`room_priority`, :func:`raise_threads`): a room does not
stutter when the CPU is busy. At normal priority, with the machine loaded, the relay's playback underran mid-reply and
the echo came 15 ms later from then on, for the rest of the run: a room that moved, which no room
does. The daemon is never raised: its underruns are its own (and the canceller follows the gap they
leave).

Figures (see docs/benchmarks.md): ``bargein_ms_rt`` (the user's speech onset on aux2 → the end of the
assistant's audio on aux0), ``truncate_error_ms_rt`` (|``audio_end_ms`` the emulator received − reply
audio on aux0 before the stop|), ``false_bargeins_rt`` (barge-ins the daemon logs while replies play
with the echo and nobody talking).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soxr
import yaml
from numpy.typing import NDArray

from benchlib import audio, daemon
from benchlib.proc import stop_daemon
from benchlib.report import Report
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions

ROOM_PRIORITY = 5
"""SCHED_RR priority of the room's processes (PulseAudio's own choice for its real-time threads)."""


def room_priority() -> None:
    """``preexec_fn`` for the room's processes: round-robin real-time scheduling, if the machine allows it.

    Without CAP_SYS_NICE (or an RLIMIT_RTPRIO) it stays as it is: the room is then as steady as the
    machine's load lets it be, and the room test's check that the echo's delay stayed put says so.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(ROOM_PRIORITY))


def raise_threads(pid: int) -> None:
    """:func:`room_priority` for every thread of a running process (the sound server, which lowers its
    main thread at start: the thread that takes in the relay's stream, late under load, underran it)."""
    with contextlib.suppress(OSError, AttributeError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setscheduler(int(task.name), os.SCHED_RR, os.sched_param(ROOM_PRIORITY))


RATE_HZ = 48000
"""The room's clock: the null sink the speaker, microphone and user channels are mixed into."""
SPEAKER, MIC, USER = 0, 1, 2
ECHO_GAIN_DB = -6.0
ECHO_RT60_MS = 150.0
ECHO_DRIVE_DB = 6.0
RELAY_RATE_HZ = 16000
RELAY_BLOCK = RELAY_RATE_HZ // 100  # 10 ms
BLOCK = RATE_HZ // 100  # 10 ms
QUIET_RMS = 30.0  # below this a block of the digital speaker channel is silence (resampler residue)
MATCH = 0.8  # normalised correlation of a block with the reply at the expected position
GAP_RESYNC = RATE_HZ // 25  # after an underrun gap the reply is searched for up to the gap plus this (40 ms) on


class PulseUnavailable(RuntimeError):
    """The private PulseAudio server (or one of its modules) could not be started."""


PLAY_LATENCY_MS = 100
"""The latency the user's player asks of the room. The null sink renders in blocks of the shortest latency
its streams ask for, and every recording of it (the daemon's capture among them) then gets a block that
often, whatever period it asked for: no microphone does that. The Pi tier's listening runs ask 250 ms
(the daemon's idle period), and measure the rig's floor both ways."""


class PulseRoom:
    """A private PulseAudio server with the room's sinks and sources, and the ALSA config naming them."""

    def __init__(self, root: Path, *, echo_gain_db: float = ECHO_GAIN_DB):
        self.root = root
        self.runtime = root / "xdg"
        self.socket = root / "pulse.sock"
        self.alsa_conf = root / "asound.conf"
        self.echo_gain_db = echo_gain_db
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.relay: EchoRelay | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for PulseAudio clients (pactl, pacat) and the daemon (``ALSA_CONFIG_PATH``)."""
        return {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self.runtime),
            "HOME": str(self.runtime),
            "PULSE_SERVER": f"unix:{self.socket}",
            "ALSA_CONFIG_PATH": str(self.alsa_conf),
        }

    def start(self) -> None:
        """Start the server with the room's modules; set the echo's level. Raises :class:`PulseUnavailable`."""
        if shutil.which("pulseaudio") is None or shutil.which("pacat") is None:
            raise PulseUnavailable("pulseaudio / pacat not installed")
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        modules = [
            f"module-native-protocol-unix auth-anonymous=1 socket={self.socket}",
            f"module-null-sink sink_name=rec rate={RATE_HZ} channels=3 channel_map=aux0,aux1,aux2",
            "module-remap-sink sink_name=speaker master=rec channels=1 channel_map=mono master_channel_map=aux0 "
            "remix=no",
            "module-remap-sink sink_name=room master=rec channels=1 channel_map=mono master_channel_map=aux1 remix=no",
            "module-remap-sink sink_name=user master=rec channels=2 channel_map=front-left,front-right "
            "master_channel_map=aux1,aux2 remix=no",
            "module-remap-source source_name=mic master=rec.monitor channels=1 master_channel_map=aux1 "
            "channel_map=mono remix=no",
            "module-remap-source source_name=sounding master=rec.monitor channels=1 master_channel_map=aux0 "
            "channel_map=mono remix=no",
        ]
        self._log = (self.root / "pulseaudio.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "-n",
                "--use-pid-file=no",
                "--disallow-exit",
                *(f"--load={m}" for m in modules),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + 15
        while self.pactl("info").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise PulseUnavailable(f"pulseaudio did not start (see {self.root / 'pulseaudio.log'})")
            time.sleep(0.05)
        raise_threads(self.proc.pid)
        self.relay = EchoRelay(self, gain_db=self.echo_gain_db)
        self.relay.start()
        self.alsa_conf.write_text(
            "</usr/share/alsa/alsa.conf>\n"
            f'pcm.speaker {{ type pulse server "unix:{self.socket}" device "speaker" }}\n'
            f'pcm.mic {{ type pulse server "unix:{self.socket}" device "mic" }}\n'
        )

    def pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pactl`` against this server."""
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=False, timeout=10)

    def record(self, path: Path) -> subprocess.Popen[bytes]:
        """Start recording ``rec.monitor`` (3 channels, s16le, 48 kHz, raw) into ``path``."""
        fmt = ["--format=s16le", f"--rate={RATE_HZ}", "--channels=3", "--channel-map=aux0,aux1,aux2", "--no-remix"]
        return subprocess.Popen(
            ["pacat", "--record", "-d", "rec.monitor", *fmt, "--raw", "--latency-msec=100", str(path)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=room_priority,
        )

    def play_command(self, path: Path, latency_ms: int = PLAY_LATENCY_MS) -> list[str]:
        """The pacat command playing a 2-channel 16 kHz raw file into ``user`` (see :data:`PLAY_LATENCY_MS`)."""
        fmt = ["--format=s16le", f"--rate={audio.RATE_HZ}", "--channels=2", "--channel-map=front-left,front-right"]
        latency = f"--latency-msec={latency_ms}"
        return ["pacat", "--playback", "-d", "user", *fmt, "--no-remix", "--raw", latency, str(path)]

    def close(self) -> None:
        """Stop the echo relay and the server."""
        if self.relay is not None:
            self.relay.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        self.socket.unlink(missing_ok=True)


class EchoRelay:
    """The room's acoustic echo: what the speaker sounds → a loudspeaker and a room → the ``room`` sink.

    It taps ``sounding`` (aux0 of ``rec``, the speaker channel of the recording), not the ``speaker``
    sink's monitor: through alsa-lib's pulse plugin each new playback stream made that monitor deliver
    about 4.6 ms more than was played (eight ``aplay`` runs: the echo 35 → 67 ms behind the speaker;
    eight ``pacat`` runs: no change). The echo path grew at each reply, 31 ms at the start of twenty
    engagements and 144 ms at their end, each jump just as a reply started. A canceller aligned on a
    reply's first chunks then met an echo that had moved: the self-interruptions 0.3 s into a reply
    that ``tests/integration/test_room_realtime.py`` tolerated.

    Two ``pacat`` streams at 16 kHz and, between them, :mod:`benchlib.echorelay` in a process of its
    own, which puts every 10 ms block through :class:`earshot.audio.room.EchoPath` behind a 40 ms
    jitter buffer. All three run from the start, silence included, so the echo's delay stays put for
    the whole run, as a room's does (see that module for how it drifted as a thread of this process).
    """

    def __init__(self, room: PulseRoom, *, gain_db: float) -> None:
        self._room = room
        self._gain_db = gain_db
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start both streams and the relay. Raises :class:`PulseUnavailable`."""
        fmt = ["--format=s16le", f"--rate={RELAY_RATE_HZ}", "--channels=1", "--raw"]
        env = self._room.env
        scripts = Path(__file__).resolve().parents[1]
        relay_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(scripts), env.get("PYTHONPATH", "")]))}
        rec = subprocess.Popen(
            ["pacat", "--record", "-d", "sounding", *fmt, "--latency-msec=10"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            preexec_fn=room_priority,
        )
        self._procs.append(rec)
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchlib.echorelay",
                f"--rate={RELAY_RATE_HZ}",
                f"--gain-db={self._gain_db}",
                f"--rt60-ms={ECHO_RT60_MS}",
                f"--drive-db={ECHO_DRIVE_DB}",
            ],
            env=relay_env,
            stdin=rec.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=room_priority,
        )
        self._procs.append(relay)
        play = subprocess.Popen(
            ["pacat", "--playback", "-d", "room", *fmt, "--latency-msec=20"],
            env=env,
            stdin=relay.stdout,
            stderr=subprocess.DEVNULL,
            preexec_fn=room_priority,
        )
        self._procs.append(play)
        for pipe in (rec.stdout, relay.stdout):  # the children hold them now
            if pipe is not None:
                pipe.close()
        assert relay.stderr is not None
        ready, _, _ = select.select([relay.stderr], [], [], 10.0)
        line = relay.stderr.readline() if ready else b""
        relay.stderr.close()
        if line.strip() != b"ready" or any(p.poll() is not None for p in self._procs):
            self.close()
            raise PulseUnavailable(f"the echo relay did not start: {line.decode(errors='replace').strip()!r}")

    def close(self) -> None:
        """Stop the streams and the relay."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._procs = []


@contextlib.contextmanager
def pulse_room(root: Path) -> Iterator[PulseRoom]:
    """A started :class:`PulseRoom` under ``root``, stopped on exit."""
    room = PulseRoom(root)
    try:
        room.start()
        yield room
    finally:
        room.close()


# ------------------------------------------------------------------------------------------- runs


@dataclass
class RoomRun:
    """What one daemon run in the room left: its log, the emulator's sessions, the 3-channel recording."""

    name: str
    returncode: int | None
    log: list[tuple[float, str]]
    """(arrival time, message) of the daemon's log lines (``time.monotonic``)."""
    events: list[daemon.Event]
    """The daemon's events (arrival time, name, capture time of the conversation's marks, fields)."""
    play_started: float
    """``time.monotonic`` when the user's input started playing (pacat launched)."""
    recording: NDArray[np.int16]
    """``rec.monitor``: (samples, 3) at :data:`RATE_HZ`: speaker, microphone, user."""
    sessions: list[Any]
    cpu_pct: float | None
    """The daemon's process CPU while the input played (% of one core)."""
    stderr_tail: list[str]
    threads_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds per thread name (``/proc/PID/task/*/comm``) while the input played."""
    threads_sys_s: dict[str, float] = field(default_factory=dict)
    """The system-time part of :attr:`threads_cpu_s` (kernel: wake-ups, syscalls)."""
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)
    """(``time.monotonic``, process CPU seconds) every 0.2 s while the input played."""
    vmhwm_kb: int | None = None
    """The daemon's peak RSS (VmHWM) at the end of the input."""
    watchdog_pings: int = 0
    """``WATCHDOG=1`` keep-alives the daemon sent (:class:`NotifySocket`)."""

    def why(self) -> str:
        """The exit code and last log lines, for error messages."""
        tail = " | ".join(self.stderr_tail[-4:])
        return f" (exit {self.returncode}; last lines: {tail})" if tail else f" (exit {self.returncode})"

    def barge_ins(self) -> list[float]:
        """Arrival times (``time.monotonic``) of the barge-ins the daemon logged.

        Only the conversation's own ``bargein`` event: the detector logs each of its hits too, as text
        ("barge-in (full): …"), and counting both once counted every barge-in twice.
        """
        return self.times("bargein")

    def times(self, event: str) -> list[float]:
        """Arrival times (``time.monotonic``) of the daemon's ``event``."""
        return daemon.event_times(self.events, event)

    def first(self, event: str) -> float:
        """The first arrival time of the daemon's ``event``."""
        return daemon.first_event(self.events, event, self.name, self.why())


def write_room_config(path: Path, spec: daemon.RunSpec, workdir: Path, url: str) -> None:
    """:func:`benchlib.daemon.write_config`'s config with the ALSA backend on the room's PCMs (defaults otherwise)."""
    daemon.write_config(path, spec, workdir, url)
    cfg = yaml.safe_load(path.read_text())
    cfg["audio"] = {"backend": "alsa", "input": {"device": "mic"}, "output": {"device": "speaker"}}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def threads_cpu_s(pid: int, *, kernel_only: bool = False) -> dict[int, tuple[str, float]]:
    """``tid → (thread name, CPU seconds)`` of every thread of ``pid`` now (``/proc/PID/task``).

    ``kernel_only``: system time alone (stime): wake-ups, syscalls, page faults.
    """
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks = int(fields[12]) if kernel_only else int(fields[11]) + int(fields[12])
        out[tid] = (comm, ticks / daemon.CLK_TCK)
    return out


def thread_split(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per thread name between two :func:`threads_cpu_s` snapshots (threads born meanwhile count whole)."""
    split: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        delta = cpu - before.get(tid, (comm, 0.0))[1]
        split[comm] = split.get(comm, 0.0) + delta
    return split


ConfigWriter = Callable[[Path, daemon.RunSpec, Path, str], None]

_UNIT = Path(__file__).resolve().parents[2] / "systemd" / "earshot.service"


def unit_watchdog_s(unit: Path = _UNIT) -> float:
    """``WatchdogSec=`` of the shipped unit (seconds): what systemd gives the daemon in a plain install."""
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "WatchdogSec":
            return float(value.strip().rstrip("s"))
    raise ValueError(f"{unit}: no WatchdogSec=")


class NotifySocket:
    """A bound ``$NOTIFY_SOCKET`` with the shipped unit's watchdog, as systemd runs the daemon.

    The daemon then keeps its watchdog the way it does when installed (a keep-alive every half
    ``WatchdogSec``) instead of the 1 s loop-lag probe it runs without one. A thread drains what it
    sends and counts the keep-alives (:attr:`pings`).
    """

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="es-notify-"))  # short: AF_UNIX paths are limited
        self.path = self._dir / "notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="notify-drain", daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        """``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` as systemd sets them for the unit."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(round(unit_watchdog_s() * 1e6))}

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if b"WATCHDOG=1" in data.split(b"\n"):
                self.pings += 1

    def close(self) -> None:
        """Stop draining; remove the socket."""
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


async def run_in_room(
    room: PulseRoom,
    spec: daemon.RunSpec,
    workdir: Path,
    log: Callable[[str], None],
    *,
    config_writer: ConfigWriter | None = None,
    preexec_fn: Callable[[], None] | None = None,
    start_timeout_s: float = 60.0,
    play_latency_ms: int = PLAY_LATENCY_MS,
) -> RoomRun:
    """Run the daemon on the room's devices while ``workdir/user.raw`` plays into ``user``; record the room.

    ``workdir/user.raw`` is ``spec.input_pcm`` as 2-channel s16le (:func:`prepare`). ``config_writer``
    replaces :func:`write_room_config`; ``preexec_fn`` runs in the daemon's process before it starts
    (the pi tier puts it into its CPU cgroup there, so the start is confined too). ``play_latency_ms``:
    what the user's player asks of the room (:data:`PLAY_LATENCY_MS`).
    """
    user_raw = workdir / "user.raw"
    rec_raw = workdir / "room.raw"
    options = EmulatorOptions(reply_rate=spec.reply_rate, script=DefaultScript(replies=spec.replies))
    async with Emulator(options) as emu, contextlib.AsyncExitStack() as stack:
        notify = stack.enter_context(contextlib.closing(NotifySocket()))
        config = workdir / "earshot.yaml"
        (config_writer or write_room_config)(config, spec, workdir, f"ws://127.0.0.1:{emu.port}/v1/realtime")
        recorder = room.record(rec_raw)
        extra: dict[str, Any] = {"preexec_fn": preexec_fn} if preexec_fn is not None else {}
        proc = await daemon.start_daemon(config, {**room.env, **notify.env}, **extra)
        daemon_log = daemon.DaemonLog()
        started = asyncio.Event()

        def on_event(event: daemon.Event) -> None:
            if event.name == "started":
                started.set()

        assert proc.stderr is not None
        reader = asyncio.create_task(daemon_log.follow(proc.stderr, workdir / "daemon.log", on_event))
        player: asyncio.subprocess.Process | None = None
        play_started = 0.0
        cpu_pct: float | None = None
        split: dict[str, float] = {}
        sys_split: dict[str, float] = {}
        samples: list[tuple[float, float]] = []
        vmhwm: int | None = None
        try:
            exited = asyncio.create_task(proc.wait())
            ready = asyncio.create_task(started.wait())
            done, _ = await asyncio.wait({exited, ready}, timeout=start_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if ready not in done:
                raise daemon.DaemonUnavailable(f"{spec.name}: earshot run did not start on the pulse devices")
            player = await asyncio.create_subprocess_exec(
                *room.play_command(user_raw, play_latency_ms),
                env=room.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            play_started = time.monotonic()
            cpu0 = daemon._proc_cpu_s(proc.pid)
            threads0 = threads_cpu_s(proc.pid)
            sys0 = threads_cpu_s(proc.pid, kernel_only=True)

            async def sample() -> None:
                while True:
                    c = daemon._proc_cpu_s(proc.pid)
                    if c is not None:
                        samples.append((time.monotonic(), c))
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            try:
                async with asyncio.timeout(spec.timeout_s):
                    await asyncio.wait({exited, asyncio.create_task(player.wait())}, return_when="FIRST_COMPLETED")
            except TimeoutError:
                log(f"{spec.name}: the input did not finish playing within {spec.timeout_s:.0f} s")
            sampler.cancel()
            cpu1 = daemon._proc_cpu_s(proc.pid)
            split = thread_split(threads0, threads_cpu_s(proc.pid))
            sys_split = thread_split(sys0, threads_cpu_s(proc.pid, kernel_only=True))
            vmhwm = daemon._proc_vmhwm_kb(proc.pid)
            if cpu0 is not None and cpu1 is not None:
                cpu_pct = round(100.0 * (cpu1 - cpu0) / (time.monotonic() - play_started), 2)
        finally:
            await stop_daemon(proc)
            if player is not None and player.returncode is None:
                player.kill()
                await player.wait()
            recorder.terminate()
            await asyncio.to_thread(recorder.wait, 10)
            await reader
    for i, session in enumerate(emu.sessions):  # what the server heard, beside the room's recording
        session.received_audio().astype("<i2").tofile(workdir / f"received-{i}.raw")
    data = np.fromfile(rec_raw, dtype="<i2") if rec_raw.exists() else np.zeros(0, np.int16)
    recording = data[: data.size // 3 * 3].reshape(-1, 3).astype(np.int16)
    return RoomRun(
        name=spec.name,
        returncode=proc.returncode,
        log=daemon_log.lines,
        events=daemon_log.events,
        play_started=play_started,
        recording=recording,
        sessions=list(emu.sessions),
        cpu_pct=cpu_pct,
        stderr_tail=daemon_log.tail,
        threads_cpu_s=split,
        threads_sys_s=sys_split,
        cpu_samples=samples,
        vmhwm_kb=vmhwm,
        watchdog_pings=notify.pings,
    )


def prepare(spec: daemon.RunSpec, workdir: Path) -> None:
    """Write the user's input for :func:`run_in_room` (``workdir/user.raw``)."""
    write_user_raw(spec.input_pcm, workdir / "user.raw")


def write_user_raw(pcm: NDArray[np.int16], path: Path) -> None:
    """16 kHz mono as the 2-channel s16le raw file :meth:`PulseRoom.play_command` plays into ``user``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.repeat(pcm[:, None], 2, axis=1).astype("<i2").tofile(path)


# ---------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True, slots=True)
class Followed:
    """Where the reply is on the speaker channel (samples at :data:`RATE_HZ`).

    Attributes:
        start: where the reply's first sample is.
        stop: one past its last non-silent sample (the barge-in's fade included), or its end.
        heard: reply samples that reached the speaker (fade included, underrun gaps excluded).
        complete: the reply played to its end (no barge-in).
        gaps: ``(position, samples)`` of silences inside the reply after which it resumed (underruns).
    """

    start: int
    stop: int
    heard: int
    complete: bool
    gaps: tuple[tuple[int, int], ...]


def _rms(x: NDArray[np.float64]) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _best_lag(
    spk: NDArray[np.float64], o: int, ref: NDArray[np.float64], r: int, span: int, ahead: int | None = None
) -> tuple[int, float]:
    """The shift ``lag`` in [-span, ahead] (``ahead`` defaults to ``span``) maximising the normalised
    correlation of spk[o:o+B] with ref[r+lag:...]."""
    s = spk[o : o + BLOCK]
    lo, hi = max(0, r - span), min(ref.size, r + BLOCK + (span if ahead is None else ahead))
    seg = ref[lo:hi]
    if seg.size < BLOCK or s.size < BLOCK:
        return 0, 0.0
    num = np.correlate(seg, s, mode="valid")
    energy = np.convolve(seg * seg, np.ones(BLOCK), mode="valid")
    score = num / (np.sqrt(energy * float(np.dot(s, s))) + 1e-9)
    k = int(np.argmax(score))
    return lo + k - r, float(score[k])


def _find_opening(spk: NDArray[np.float64], head: NDArray[np.float64], start: int, within_s: float = 5.0) -> int:
    """Speaker position (at or after ``start``) where ``head`` correlates best, normalised per window."""
    seg = spk[start : start + int(within_s * RATE_HZ) + head.size]
    if seg.size <= head.size:
        return start
    n = 1 << int(np.ceil(np.log2(seg.size + head.size)))
    corr = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(head, n)), n)[: seg.size - head.size + 1]
    energy = np.cumsum(np.concatenate(([0.0], seg * seg)))
    window = energy[head.size :] - energy[: -head.size]
    score = corr / np.sqrt(np.maximum(window, 1e-9) * float(np.dot(head, head)))
    return start + int(np.argmax(score))


def follow_reply(spk: NDArray[np.float64], ref: NDArray[np.float64], search_from: int) -> Followed:
    """Follow the reply ``ref`` (48 kHz) through the speaker channel from ``search_from`` to where it stops.

    The pulse resampler changes the samples, so the reply is followed by correlation, 10 ms block by
    block: a block that matches the reply at the expected position (±0.5 ms) advances both; a silent
    block where the reply is not silent is an underrun gap if the reply resumes after it, else the
    stop (the fade is the last non-silent samples before it).
    """
    loud = np.flatnonzero(np.abs(spk[search_from:]) > 200)
    lead_idx = np.flatnonzero(np.abs(ref) > 200)
    if loud.size == 0 or lead_idx.size == 0:
        raise daemon.DaemonUnavailable("the reply is not on the speaker channel")
    lead = int(lead_idx[0])
    # The first sound after the question may be a cue (the end-of-turn earcon): find the reply's opening
    # by normalised correlation over the next seconds instead.
    o = _find_opening(spk, ref[lead : lead + RATE_HZ // 10], search_from + int(loud[0]))
    lag, score = _best_lag(spk, o, ref, lead, 96)
    if score < MATCH:
        raise daemon.DaemonUnavailable(f"the speaker channel does not match the reply (correlation {score:.2f})")
    r = lead + lag
    start = o - r
    gaps: list[tuple[int, int]] = []
    while r + BLOCK <= ref.size and o + BLOCK <= spk.size:
        s_quiet = _rms(spk[o : o + BLOCK]) < QUIET_RMS
        r_quiet = _rms(ref[r : r + BLOCK]) < QUIET_RMS
        if s_quiet and r_quiet:
            o, r = o + BLOCK, r + BLOCK
            continue
        if not s_quiet:
            lag, score = _best_lag(spk, o, ref, r, 24)
            if score >= MATCH:
                o, r = o + BLOCK, r + lag + BLOCK
                continue
            # An underrun's digital silence that begins inside this block: follow the block's sound
            # up to it, then look for the reply after the silence (below). Else the reply stopped.
            zero = np.flatnonzero(
                np.convolve(np.abs(spk[o : o + 2 * BLOCK]) <= 16, np.ones(BLOCK // 4), "valid") == BLOCK // 4
            )
            if zero.size == 0:
                break
            o, r = o + int(zero[0]), r + int(zero[0])
        # silence where the reply has sound: an underrun gap if the reply resumes after it
        nxt = np.flatnonzero(np.abs(spk[o:]) > 200)
        if nxt.size == 0:
            break
        resume = o + int(nxt[0])
        # Recovering from an underrun, the sound server drops what was written behind its read index:
        # the reply resumes up to the gap plus a device buffer (40 ms) further on (seen: 10 ms of
        # silence then 3.3 ms of the reply gone; on a busy CI machine 99 ms of silence, then the
        # reply more than 40 ms on).
        lag, score = _best_lag(spk, resume, ref, r, GAP_RESYNC, GAP_RESYNC + (resume - o))
        if score < MATCH:
            break
        gaps.append((o, resume - o))
        o, r = resume, r + lag
    complete = r + BLOCK > ref.size
    if complete:
        return Followed(start, o + max(0, ref.size - r), ref.size, True, tuple(gaps))
    # the fade: the last non-silent samples of the stopping block(s)
    window = np.abs(spk[o : o + 3 * BLOCK])
    quiet_run = np.flatnonzero(np.convolve(window > 16, np.ones(BLOCK // 2), mode="valid") == 0)
    fade = int(quiet_run[0]) if quiet_run.size else 0
    return Followed(start, o + fade, r + fade, False, tuple(gaps))


def _to_float(pcm: NDArray[np.int16]) -> NDArray[np.float64]:
    return pcm.astype(np.float64)


def reply_at_room_rate(reply: NDArray[np.int16]) -> NDArray[np.float64]:
    """The emulator's 24 kHz reply resampled to :data:`RATE_HZ` (as the sound server does, near enough)."""
    out: NDArray[np.float64] = soxr.resample(reply.astype(np.float32), daemon.REPLY_RATE_HZ, RATE_HZ).astype(np.float64)
    return out


def echo_path(run: RoomRun, a: int, b: int) -> dict[str, float]:
    """Echo level (mic/speaker, dB) and delay (ms) measured between samples ``a`` and ``b`` (no user speech)."""
    spk = _to_float(run.recording[a:b, SPEAKER])
    mic = _to_float(run.recording[a:b, MIC])
    n = 1 << int(np.ceil(np.log2(2 * spk.size)))
    xc = np.fft.irfft(np.fft.rfft(mic, n) * np.conj(np.fft.rfft(spk, n)), n)
    lag = int(np.argmax(xc[: RATE_HZ // 2]))  # echo follows the speaker: non-negative lags up to 500 ms
    return {
        "echo_gain_db": round(float(10.0 * np.log10((_rms(mic) ** 2 + 1e-9) / (_rms(spk) ** 2 + 1e-9))), 2),
        "echo_delay_ms": round(1000.0 * lag / RATE_HZ, 2),
    }


@dataclass(frozen=True, slots=True)
class RoomBargeIn:
    """The exchange's figures in the room."""

    bargein_ms: float
    truncate_error_ms: float
    details: dict[str, Any]


def analyse_exchange(run: RoomRun, exchange: daemon.Exchange, reply: NDArray[np.int16]) -> RoomBargeIn:
    """``bargein_ms_rt`` and ``truncate_error_ms_rt`` from the room recording and the emulator's truncate."""
    rec = run.recording
    if rec.shape[0] < RATE_HZ:
        raise daemon.DaemonUnavailable(f"{run.name}: no recording of the room{run.why()}")
    scale = RATE_HZ // audio.RATE_HZ
    user = rec[:, USER]
    wake_rec = audio.onset(user, frame=BLOCK)
    wake_in = audio.onset(exchange.pcm)
    if wake_rec == 0:
        raise daemon.DaemonUnavailable(f"{run.name}: the user's input is not in the recording")
    offset = wake_rec - scale * wake_in  # room position of input sample 0
    question_end = offset + scale * exchange.question_end
    after = question_end + RATE_HZ // 2
    onset = after + audio.onset(user[after:], frame=BLOCK)
    expected_onset = offset + scale * exchange.interruption_onset
    followed = follow_reply(_to_float(rec[:, SPEAKER]), reply_at_room_rate(reply), question_end)
    details: dict[str, Any] = {
        "reply_start_s": round(followed.start / RATE_HZ, 3),
        "reply_stop_s": round(followed.stop / RATE_HZ, 3),
        "interruption_onset_s": round(onset / RATE_HZ, 3),
        "interruption_onset_vs_input_ms": round(1000.0 * (onset - expected_onset) / RATE_HZ, 2),
        "reply_heard_ms": round(1000.0 * followed.heard / RATE_HZ, 1),
        "reply_gaps_ms": [[round(1000 * p / RATE_HZ), round(1000 * n / RATE_HZ)] for p, n in followed.gaps],
        "barge_ins_logged": len(run.barge_ins()),
        "daemon_cpu_pct": run.cpu_pct,
    }
    if followed.start + RATE_HZ < min(onset, followed.stop):
        details.update(echo_path(run, followed.start, min(onset, followed.stop)))
    if followed.stop < onset and not followed.complete:
        # The follower lost the reply before the user spoke (it matched the first stretch, then not):
        # a stop there is no barge-in, and a negative time must not pass as one.
        raise daemon.DaemonUnavailable(
            f"{run.name}: the reply was followed only {followed.heard / RATE_HZ:.2f} s, up to "
            f"{(onset - followed.stop) / RATE_HZ:.1f} s before the user's speech onset ({details})"
        )
    if followed.complete or not details["barge_ins_logged"]:
        raise daemon.DaemonUnavailable(
            f"{run.name}: the daemon did not barge in: the reply kept playing "
            f"{(followed.stop - onset) / RATE_HZ:.1f} s past the user's speech onset ({details})"
        )
    truncations = [t for s in run.sessions for t in s.truncations]
    if not truncations:
        raise daemon.DaemonUnavailable(f"{run.name}: no conversation.item.truncate reached the emulator ({details})")
    end_ms = truncations[0].audio_end_ms
    heard_ms = 1000.0 * followed.heard / RATE_HZ
    details["audio_end_ms"] = end_ms
    return RoomBargeIn(
        bargein_ms=1000.0 * (followed.stop - onset) / RATE_HZ,
        truncate_error_ms=abs(end_ms - heard_ms),
        details=details,
    )


# ---------------------------------------------------------------------------------------- measure


def measure_all(
    report: Report, *, quick: bool, echo_minutes: float, keep: Path | None, log: Callable[[str], None]
) -> None:
    """The real-time tier's figures into ``report`` (null with the reason for any that fail)."""
    root = (keep / "pulse") if keep else Path(tempfile.mkdtemp(prefix="earshot-bench-pulse-"))
    root.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = report.details.setdefault("pulse", {})
    details["topology"] = {
        "rate_hz": RATE_HZ,
        "echo_gain_db": ECHO_GAIN_DB,
        "echo_rt60_ms": ECHO_RT60_MS,
        "echo_drive_db": ECHO_DRIVE_DB,
        "echo_relay_rate_hz": RELAY_RATE_HZ,
        "echo_minutes": echo_minutes,
    }
    keys = ("bargein_ms_rt", "truncate_error_ms_rt", "false_bargeins_rt")
    try:
        with pulse_room(root / "server") as room:
            _measure(report, details, room, root, echo_minutes=echo_minutes, log=log)
    except PulseUnavailable as exc:
        for key in keys:
            report.unmeasured(key, f"PulseAudio tier: {exc}")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _measure(
    report: Report,
    details: dict[str, Any],
    room: PulseRoom,
    root: Path,
    *,
    echo_minutes: float,
    log: Callable[[str], None],
) -> None:
    story = daemon.reply_audio(audio.LONG_REPLY)
    reply_s = story.size / daemon.REPLY_RATE_HZ

    def exchange() -> None:
        ex = daemon.exchange_input(reply_s)
        spec = daemon.RunSpec("pulse_exchange", ex.pcm, echo=False, replies=(audio.LONG_REPLY,), timeout_s=90.0)
        log(f"pulse run '{spec.name}' ({ex.pcm.size / audio.RATE_HZ:.0f} s of input, real time)")
        prepare(spec, root / spec.name)
        run = asyncio.run(run_in_room(room, spec, root / spec.name, log))
        figures = analyse_exchange(run, ex, story)
        details["exchange"] = figures.details
        report.set("bargein_ms_rt", round(figures.bargein_ms, 1))
        report.set("truncate_error_ms_rt", round(figures.truncate_error_ms, 1))

    report.attempt(("bargein_ms_rt", "truncate_error_ms_rt"), "pulse exchange run", exchange, log)

    def echo_only() -> None:
        pcm, cycles, onsets, ask_samples = daemon.echo_only_input(echo_minutes, reply_s)
        spec = daemon.RunSpec(
            "pulse_echo_only",
            pcm,
            echo=False,
            replies=(audio.LONG_REPLY,) * (cycles + 1),
            timeout_s=pcm.size / audio.RATE_HZ + 60,
        )
        log(f"pulse run '{spec.name}' ({pcm.size / audio.RATE_HZ:.0f} s of input, real time)")
        prepare(spec, root / spec.name)
        run = asyncio.run(run_in_room(room, spec, root / spec.name, log))
        spk = run.recording[:, SPEAKER] if run.recording.size else np.zeros(0, np.int16)
        n = spk.size // BLOCK
        blocks = spk[: n * BLOCK].astype(np.float64).reshape(n, BLOCK)
        played_s = float(np.count_nonzero(np.sqrt(np.mean(blocks**2, axis=1)) >= QUIET_RMS)) * BLOCK / RATE_HZ
        # Log arrival times relative to the start of the input: the asking windows get 1.5 s of slack
        # (capture and detection latency) after each question.
        logged = [round(t - run.play_started, 2) for t in run.barge_ins()]
        false = daemon.false_barge_ins(logged, onsets, ask_samples, before_s=0.2, after_s=1.5)
        daemon.record_echo_only(
            details,
            cycles,
            reply_s,
            played_s,
            logged,
            false,
            run.sessions,
            echo_minutes,
            run.why(),
            daemon_cpu_pct=run.cpu_pct,
        )
        report.set("false_bargeins_rt", len(false))

    report.attempt(("false_bargeins_rt",), "pulse echo-only run", echo_only, log)
