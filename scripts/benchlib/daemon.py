"""End-to-end figures from the daemon itself (method (b)): ``earshot run`` with the file backend.

Each run: the emulator (:class:`earshot.emulator.Emulator`) and a loopback TCP proxy
(``tests/support/proxy.py``: byte counters, injected delay) run in this process; the daemon runs as a
subprocess with ``audio.backend: file`` in real time. The input WAV is spoken by flite; the output WAV
is the speaker on the same clock, so a time in the output is the same time in the input. While it
runs, ``/proc/PID/stat`` gives its CPU time (utime + stime) and ``/proc/PID/status`` its peak RSS
(VmHWM); its log lines are stamped as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from tests.support.proxy import FaultProxy
from tests.support.speech import read_wav, write_wav

from benchlib import audio
from benchlib.proc import start_daemon as start_earshot_run
from benchlib.proc import stop_daemon
from benchlib.report import Report
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from earshot.emulator import tts as emulator_tts

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPLY_RATE_HZ = 24000
QUESTION = "what is the weather like tomorrow in the mountains"
INTERRUPTION = "stop, tell me something else"  # begins unvoiced: barge-in counts from the "s"
STORY = "tell me a long story please"


@dataclass(frozen=True, slots=True)
class Event:
    """One of the daemon's events, as its JSON log line names it (never matched on message text)."""

    t: float
    """``time.monotonic()`` when the line arrived."""
    name: str
    """The stable event name (``engaged``, ``session_ready``, ``bargein``, ``truncate``, ``loop_late``...)."""
    at: float | None
    """The capture time in seconds of input, for the conversation's marks."""
    data: dict[str, Any]
    """The event's fields (``source``, ``onset_s``, ``heard_ms``, ``ms``...)."""


def _parse_line(text: str) -> tuple[str, str | None, float | None, dict[str, Any]]:
    """A daemon stderr line → (message, event name or None, capture time or None, event fields).

    The bench runs the daemon with ``logging.format: json``: each line is an object, and the daemon's
    events carry ``event`` and ``data`` (the conversation's marks ``at`` too). A text line (a crash
    before logging was set up, a child's stray output) is kept as a message with no event.
    """
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return text, None, None, {}
        if isinstance(doc, dict):
            message = str(doc.get("mark") or doc.get("message", ""))
            name = doc.get("event")
            at = doc.get("at")
            data = doc.get("data")
            return (
                message,
                name if isinstance(name, str) else None,
                float(at) if isinstance(at, (int, float)) else None,
                data if isinstance(data, dict) else {},
            )
    return text, None, None, {}


def event_times(events: list[Event], name: str) -> list[float]:
    """Arrival times (``time.monotonic``) of the daemon's ``name`` events."""
    return [e.t for e in events if e.name == name]


def first_event(events: list[Event], name: str, run: str, why: str) -> float:
    """The first arrival time of the daemon's ``name`` event; :class:`DaemonUnavailable` naming ``run`` if none."""
    found = event_times(events, name)
    if not found:
        raise DaemonUnavailable(f"{run}: no {name!r} event in the daemon's log{why}")
    return found[0]


class DaemonUnavailable(RuntimeError):
    """``earshot run`` did not get through the run (it crashed, or never engaged)."""


@dataclass
class RunSpec:
    """One daemon run."""

    name: str
    input_pcm: NDArray[np.int16]
    fmt: str = "pcm16"
    rtt_ms: float = 0.0
    echo: bool = True
    replies: tuple[str, ...] = ()
    reply_rate: float = 4.0
    timeout_s: float = 60.0


@dataclass
class RunResult:
    """What one run left: log timeline, CPU samples, peak RSS, output WAV, emulator and proxy records."""

    spec: RunSpec
    returncode: int | None
    log: list[tuple[float, str]]
    """(arrival time, message) of every line, for diagnostics."""
    events: list[Event]
    cpu: list[tuple[float, float]]  # (monotonic time, process CPU seconds)
    vmhwm_kb: int | None
    output: NDArray[np.int16]
    sessions: list[Any]
    bytes_up: int
    bytes_down: int
    received_audio_s: float
    workdir: Path
    stderr_tail: list[str] = field(default_factory=list)

    def times(self, event: str) -> list[float]:
        """Arrival times of the daemon's ``event``."""
        return event_times(self.events, event)

    def first(self, event: str) -> float:
        """The first arrival time of the daemon's ``event``."""
        return first_event(self.events, event, self.spec.name, self._why())

    def marks(self, event: str) -> list[float]:
        """Capture times (seconds of input, 10 ms resolution) of the daemon's ``event``."""
        return [e.at for e in self.events if e.name == event and e.at is not None]

    def cpu_between(self, t0: float, t1: float) -> float:
        """% of one core between two times (CPU samples nearest inside the interval)."""
        return cpu_pct_between(self.cpu, t0, t1, self.spec.name)

    def _why(self) -> str:
        tail = " | ".join(self.stderr_tail[-4:])
        return f" (exit {self.returncode}; last lines: {tail})" if tail else f" (exit {self.returncode})"


def cpu_pct_between(samples: list[tuple[float, float]], t0: float, t1: float, name: str) -> float:
    """% of one core between two times from ``(time, process CPU s)`` samples (nearest inside the interval)."""
    inside = [(t, c) for t, c in samples if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
        raise DaemonUnavailable(f"{name}: too few CPU samples between the two marks")
    (ta, ca), (tb, cb) = inside[0], inside[-1]
    return 100.0 * (cb - ca) / (tb - ta)


def _proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def _proc_vmhwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def write_config(path: Path, spec: RunSpec, workdir: Path, url: str) -> None:
    """The daemon's config for a run: file backend, the default gate (microWakeWord "hey jarvis", earcons on)."""
    cfg: dict[str, Any] = {
        "audio": {
            "backend": "file",
            "input": {"file": str(workdir / "input.wav")},
            "output": {"file": str(workdir / "output.wav")},
        },
        "gate": {
            "max_engagement_s": 3600,
        },
        "realtime": {"url": url, "format": spec.fmt},
        "control": {"socket": str(workdir / "control.sock")},
        "logging": {"level": "info", "journald": "off", "format": "json"},
        "state_dir": str(workdir / "state"),
    }
    if spec.echo:
        cfg["audio"]["echo"] = {"delay_ms": 20, "gain_db": -6}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


@dataclass
class DaemonLog:
    """The daemon's stderr as it arrives: kept with arrival times, parsed into messages and timeline marks."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    """(``time.monotonic()`` at arrival, message), every line."""
    events: list[Event] = field(default_factory=list)
    """The lines that are daemon events (JSON ``event``), with their fields."""
    tail: list[str] = field(default_factory=list)
    """The last 20 raw lines (for error messages)."""

    async def follow(
        self, stream: asyncio.StreamReader, path: Path, on_event: Callable[[Event], None] | None = None
    ) -> None:
        """Read ``stream`` to its end, writing each line to ``path`` stamped with its arrival time."""
        with path.open("w") as keep:
            while line := await stream.readline():
                t = time.monotonic()
                text = line.decode(errors="replace").rstrip("\n")
                keep.write(f"{t:.3f} {text}\n")
                self.tail.append(text)
                del self.tail[:-20]
                message, name, at, data = _parse_line(text)
                self.lines.append((t, message))
                if name is not None:
                    event = Event(t, name, at, data)
                    self.events.append(event)
                    if on_event is not None:
                        on_event(event)


async def start_daemon(config: Path, base_env: dict[str, str], **kwargs: Any) -> asyncio.subprocess.Process:
    """``earshot run --config`` as a subprocess with the emulator's key, stderr piped (see :class:`DaemonLog`)."""
    env = {**base_env, "OPENAI_API_KEY": "sk-bench-emulator", "PYTHONUNBUFFERED": "1"}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return await start_earshot_run(config, env, **kwargs)


async def run_daemon(spec: RunSpec, workdir: Path, log: Callable[[str], None]) -> RunResult:
    """Run the daemon once against the emulator through the proxy; return what it left (``workdir`` holds input.wav)."""
    options = EmulatorOptions(reply_rate=spec.reply_rate, script=DefaultScript(replies=spec.replies))
    async with Emulator(options) as emu, FaultProxy("127.0.0.1", emu.port) as proxy:
        proxy.set_delay(spec.rtt_ms / 2000.0)
        config = workdir / "earshot.yaml"
        write_config(config, spec, workdir, f"ws://127.0.0.1:{proxy.port}/v1/realtime")
        proc = await start_daemon(config, dict(os.environ))
        daemon_log = DaemonLog()
        cpu: list[tuple[float, float]] = []
        vmhwm: int | None = None

        async def sample() -> None:
            nonlocal vmhwm
            while proc.returncode is None:
                c = _proc_cpu_s(proc.pid)
                if c is not None:
                    cpu.append((time.monotonic(), c))
                hwm = _proc_vmhwm_kb(proc.pid)
                if hwm is not None:
                    vmhwm = max(vmhwm or 0, hwm)
                await asyncio.sleep(0.05)

        assert proc.stderr is not None
        reader = asyncio.create_task(daemon_log.follow(proc.stderr, workdir / "daemon.log"))
        sampler = asyncio.create_task(sample())
        try:
            async with asyncio.timeout(spec.timeout_s):
                await proc.wait()
        except TimeoutError:
            log(f"{spec.name}: the daemon did not exit within {spec.timeout_s:.0f} s; sending SIGTERM")
            await stop_daemon(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        out_path = workdir / "output.wav"
        output = read_wav(out_path)[0] if out_path.exists() and out_path.stat().st_size > 44 else np.zeros(0, np.int16)
        received = emu.received_audio()
        return RunResult(
            spec=spec,
            returncode=proc.returncode,
            log=daemon_log.lines,
            cpu=cpu,
            vmhwm_kb=vmhwm,
            output=output,
            sessions=list(emu.sessions),
            bytes_up=proxy.bytes_up,
            bytes_down=proxy.bytes_down,
            received_audio_s=received.size / REPLY_RATE_HZ,
            workdir=workdir,
            stderr_tail=daemon_log.tail,
            events=daemon_log.events,
        )


# ------------------------------------------------------------------------------------------ inputs


def reply_audio(text: str) -> NDArray[np.int16]:
    """The emulator's voice for ``text`` (24 kHz), exactly as it will stream it."""
    return asyncio.run(emulator_tts.speak(text, "auto"))


@dataclass(frozen=True, slots=True)
class Exchange:
    """The wake + question + interruption input and where things are in it (16 kHz samples)."""

    pcm: NDArray[np.int16]
    question_end: int
    interruption_onset: int


def exchange_input(reply_s: float) -> Exchange:
    """ "Hey Jarvis, <question>", the reply, and the user interrupting it 3 s in (a different voice)."""
    # One breath: a pause after "hey jarvis" longer than the server VAD's silence would end the turn there.
    ask, stop = audio.say(f"hey jarvis, {QUESTION}"), audio.say(INTERRUPTION, "rms")
    head = np.concatenate([audio.silence(1.5), ask])
    question_end = head.size
    # The reply starts ~0.5–1 s after the question (server VAD silence + streaming): 4 s later it is playing.
    gap = audio.silence(min(4.0, max(2.0, reply_s / 2)))
    pcm = np.concatenate([head, gap, stop, audio.silence(10.0)])
    return Exchange(audio.with_noise(pcm), question_end, head.size + gap.size + audio.onset(stop))


def speech_input(seconds: float) -> NDArray[np.int16]:
    """ "Hey Jarvis" then ``seconds`` of continuous speech (one long turn: the uplink streams throughout)."""
    wake = audio.say("hey jarvis, listen to this")
    pcm = np.concatenate(
        [audio.silence(1.5), wake, audio.silence(0.1), audio.continuous_speech(seconds), audio.silence(2)]
    )
    return audio.with_noise(pcm)


def echo_only_input(minutes: float, reply_s: float) -> tuple[NDArray[np.int16], int, list[int], int]:
    """Questions spaced so each long reply plays out alone: (input, replies, question onsets, question length)."""
    ask = audio.say(f"hey jarvis, {STORY}")
    cycles = max(1, math.ceil(minutes * 60.0 / reply_s))
    parts = [audio.silence(1.5)]
    onsets = []
    pos = parts[0].size
    for _ in range(cycles):
        onsets.append(pos)
        rest = audio.silence(reply_s + 8.0)
        parts += [ask, rest]
        pos += ask.size + rest.size
    return audio.with_noise(np.concatenate(parts)), cycles, onsets, ask.size


# ---------------------------------------------------------------------------------------- analysis


def false_barge_ins(
    logged_s: list[float], onsets: list[int], ask_samples: int, *, before_s: float = 0.0, after_s: float = 1.0
) -> list[float]:
    """The barge-ins (seconds into the input) that fell outside every question of an echo-only input.

    A barge-in while the user asks the next question is not false (there should be none: each
    question comes 8 s after the reply's expected end); ``before_s``/``after_s`` widen each question's
    window for capture and detection latency.
    """
    asking = [(o / audio.RATE_HZ - before_s, (o + ask_samples) / audio.RATE_HZ + after_s) for o in onsets]
    return [t for t in logged_s if not any(a <= t <= b for a, b in asking)]


def record_echo_only(
    details: dict[str, Any],
    cycles: int,
    reply_s: float,
    played_s: float,
    logged: list[float],
    false: list[float],
    sessions: list[Any],
    echo_minutes: float,
    why: str,
    **extra: Any,
) -> None:
    """Put an echo-only run's details (either tier) in ``details["echo_only"]``; then judge whether it counts.

    Raises:
        DaemonUnavailable: under 80 % of the wanted assistant audio played and no false barge-in (which
            would explain the shortfall) was logged.
    """
    details["echo_only"] = {
        "replies_scripted": cycles,
        "reply_s": round(reply_s, 2),
        "assistant_audio_played_s": round(played_s, 1),
        "barge_ins_logged_at_s": logged,
        "false_barge_ins_at_s": false,
        "truncates_received": sum(len(s.truncations) for s in sessions),
        "cancels_received": sum(len(s.cancels) for s in sessions),
        **extra,
    }
    if played_s < 0.8 * echo_minutes * 60.0 and not false:
        raise DaemonUnavailable(
            f"only {played_s:.0f} s of assistant audio was played (wanted {echo_minutes * 60:.0f} s){why}"
        )


@dataclass(frozen=True, slots=True)
class BargeInFigures:
    """Barge-in timing from the WAVs and the truncate the emulator received."""

    bargein_ms: float
    truncate_error_ms: float
    audio_end_ms: int
    present_ms: float
    reply_start_s: float
    gaps_ms: tuple[tuple[int, int], ...]
    """Silences inside the reply before the barge-in: (output time, length), ms (playback underruns)."""


def analyse_bargein(result: RunResult, exchange: Exchange, reply: NDArray[np.int16]) -> BargeInFigures:
    """``bargein_ms`` and ``truncate_error_ms`` of an exchange run (see docs/benchmarks.md)."""
    out = result.output
    if out.size == 0:
        raise DaemonUnavailable(f"{result.spec.name}: no output WAV{result._why()}")
    lead = audio.first_nonzero(reply, floor=0)
    search = exchange.question_end * REPLY_RATE_HZ // audio.RATE_HZ
    first = None if lead is None else audio.find_exact(out, reply[lead : lead + REPLY_RATE_HZ // 20], search)
    if lead is None or first is None:
        raise DaemonUnavailable(f"{result.spec.name}: the reply is not in the output WAV{result._why()}")
    start = first - lead
    extent = audio.played_extent(out, reply, start)
    if extent.heard < lead + REPLY_RATE_HZ // 10:
        raise DaemonUnavailable(f"{result.spec.name}: the output does not match the emulator's reply audio")
    present = extent.heard
    stop_s = extent.stop / REPLY_RATE_HZ
    onset_s = exchange.interruption_onset / audio.RATE_HZ
    truncations = [t for s in result.sessions for t in s.truncations]
    if not truncations:
        raise DaemonUnavailable(
            f"{result.spec.name}: no conversation.item.truncate reached the emulator "
            f"(reply played {present / REPLY_RATE_HZ:.2f} s of {reply.size / REPLY_RATE_HZ:.2f} s)"
        )
    end_ms = truncations[0].audio_end_ms
    present_ms = 1000.0 * present / REPLY_RATE_HZ
    return BargeInFigures(
        bargein_ms=1000.0 * (stop_s - onset_s),
        truncate_error_ms=abs(end_ms - present_ms),
        audio_end_ms=end_ms,
        present_ms=present_ms,
        reply_start_s=start / REPLY_RATE_HZ,
        gaps_ms=tuple((round(1000 * p / REPLY_RATE_HZ), round(1000 * n / REPLY_RATE_HZ)) for p, n in extent.gaps),
    )


def wake_to_ready_ms(result: RunResult) -> float:
    """ "engaged by …" → "session ready" in the daemon's log (arrival times)."""
    return 1000.0 * (result.first("session_ready") - result.first("engaged"))


def reply_start_ms(result: RunResult) -> float:
    """ "reply audio received" (first delta) → "reply started" (first sample handed to the device)."""
    return 1000.0 * (result.first("reply_started") - result.first("reply_audio"))


def cue_wait_ms(result: RunResult, reply: NDArray[np.int16]) -> float:
    """How long the first reply waited for a cue still playing (the end-of-turn earcon) when it arrived.

    On the audio clock that the marks and the output WAV share: from the "reply audio received" mark to
    the end of the sound playing then, or to the reply's first sample if that comes first (0 when the
    speaker was quiet). The emulator answers within milliseconds, where the real service takes hundreds,
    so here the reply meets the cue.
    """
    received = result.marks("reply_audio")
    out = result.output
    lead = audio.first_nonzero(reply, floor=0)
    if not received or out.size == 0 or lead is None:
        raise DaemonUnavailable(f"{result.spec.name}: no reply mark, no output WAV or a silent reply")
    at = round(received[0] * REPLY_RATE_HZ)
    first = audio.find_exact(out, reply[lead : lead + REPLY_RATE_HZ // 20], max(0, at - REPLY_RATE_HZ))
    stop = out.size if first is None else first
    end = at
    quiet = REPLY_RATE_HZ // 50  # the cue runs on until 20 ms of silence, or the reply
    while end < stop and np.any(out[end : min(stop, end + quiet)]):
        end += quiet
    return 1000.0 * (min(end, stop) - at) / REPLY_RATE_HZ


def barge_ins(result: RunResult) -> list[float]:
    """Capture times (s of input) of the barge-ins the daemon logged (its ``bargein`` event)."""
    return result.marks("bargein")


# ------------------------------------------------------------------------------------------- runs


def measure_all(
    report: Report, *, quick: bool, echo_minutes: float, keep: Path | None, log: Callable[[str], None]
) -> None:
    """All daemon-run figures into ``report`` (null with the reason for any that fail)."""
    root = keep or Path(tempfile.mkdtemp(prefix="earshot-bench-runs-"))
    root.mkdir(parents=True, exist_ok=True)
    rss: list[float] = []
    details: dict[str, Any] = report.details.setdefault("daemon", {})
    try:
        _measure(report, details, rss, root, quick=quick, echo_minutes=echo_minutes, log=log)
    finally:
        if rss:
            report.set("rss_mb_file", round(max(rss), 1))
            details["rss_mb_per_run"] = rss
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _run(spec: RunSpec, root: Path, log: Callable[[str], None], rss: list[float]) -> RunResult:
    log(f"daemon run '{spec.name}' ({spec.input_pcm.size / audio.RATE_HZ:.0f} s of input, real time)")
    workdir = root / spec.name
    workdir.mkdir(parents=True, exist_ok=True)
    write_wav(workdir / "input.wav", spec.input_pcm, audio.RATE_HZ)
    result = asyncio.run(run_daemon(spec, workdir, log))
    if result.vmhwm_kb:
        rss.append(round(result.vmhwm_kb / 1024.0, 1))
    if result.returncode not in (0, None) and not result.times("engaged"):
        raise DaemonUnavailable(f"{spec.name}: earshot run failed{result._why()}")
    return result


def _measure(
    report: Report,
    details: dict[str, Any],
    rss: list[float],
    root: Path,
    *,
    quick: bool,
    echo_minutes: float,
    log: Callable[[str], None],
) -> None:
    # idle listening: CPU of the running daemon, and its RSS
    def idle() -> None:
        seconds = 10.0 if quick else 60.0
        result = _run(RunSpec("idle", audio.room_noise(seconds), timeout_s=seconds + 30), root, log, rss)
        t0 = result.first("started")
        t1 = result.first("input_ended")
        report.set("daemon_cpu_pct_idle", round(result.cpu_between(t0 + 1.0, t1), 3))
        details["idle"] = {"seconds": seconds, "exit": result.returncode}

    report.attempt(("daemon_cpu_pct_idle",), "daemon idle run", idle, log)

    # the exchange: wake, question, reply, interruption; without and with 50 ms RTT
    story = reply_audio(audio.LONG_REPLY)
    reply_s = story.size / REPLY_RATE_HZ
    exchange = exchange_input(reply_s)
    runs: dict[str, Any] = {}

    def exchange_runs() -> None:
        for name, rtt in (("exchange", 0.0), ("exchange_rtt50", 50.0)):
            spec = RunSpec(name, exchange.pcm, rtt_ms=rtt, replies=(audio.LONG_REPLY,), timeout_s=90.0)
            result = _run(spec, root, log, rss)
            entry: dict[str, Any] = {"exit": result.returncode, "rtt_ms": rtt}
            runs[name] = entry
            with contextlib.suppress(DaemonUnavailable):
                entry["wake_to_ready_ms"] = round(wake_to_ready_ms(result), 1)
            with contextlib.suppress(DaemonUnavailable):
                # The daemon's own delay: a cue still playing when the reply came is waited for by design
                # (kept apart as reply_cue_wait_ms).
                wait = cue_wait_ms(result, story)
                entry["reply_cue_wait_ms"] = round(wait, 1)
                entry["reply_start_ms"] = round(max(0.0, reply_start_ms(result) - wait), 1)
            try:
                fig = analyse_bargein(result, exchange, story)
                entry.update(
                    bargein_ms=round(fig.bargein_ms, 1),
                    truncate_error_ms=round(fig.truncate_error_ms, 1),
                    audio_end_ms=fig.audio_end_ms,
                    present_ms=round(fig.present_ms, 1),
                    reply_start_s=round(fig.reply_start_s, 3),
                    reply_gaps_ms=[list(g) for g in fig.gaps_ms],
                )
            except DaemonUnavailable as exc:
                entry["bargein_problem"] = str(exc)
            entry["barge_ins_logged"] = len(barge_ins(result))
        details["exchange"] = runs
        base = runs["exchange"]
        for key in ("wake_to_ready_ms", "reply_start_ms", "bargein_ms", "truncate_error_ms"):
            if key in base:
                report.set(key, base[key])
            else:
                report.unmeasured(key, base.get("bargein_problem") or "the daemon's log lacks the marks")
        if "wake_to_ready_ms" in runs["exchange_rtt50"]:
            report.set("wake_to_ready_ms_rtt50", runs["exchange_rtt50"]["wake_to_ready_ms"])
        else:
            report.unmeasured("wake_to_ready_ms_rtt50", "the daemon's log lacks the marks")

    report.attempt(
        ("wake_to_ready_ms", "wake_to_ready_ms_rtt50", "reply_start_ms", "bargein_ms", "truncate_error_ms"),
        "daemon exchange runs",
        exchange_runs,
        log,
    )

    # streaming: bandwidth per format, and the daemon's CPU while engaged
    def streaming() -> None:
        seconds = 10.0 if quick else 60.0
        kbps: dict[str, float | int | None] = {}
        for fmt in ("pcm16", "g711_ulaw"):
            spec = RunSpec(f"stream_{fmt}", speech_input(seconds), fmt=fmt, timeout_s=seconds + 60)
            result = _run(spec, root, log, rss)
            if result.received_audio_s < 1.0:
                raise DaemonUnavailable(f"{spec.name}: the emulator received no audio{result._why()}")
            kbps[fmt] = round(result.bytes_up * 8 / 1000 / result.received_audio_s, 2)
            entry = {
                "bytes_up": result.bytes_up,
                "bytes_down": result.bytes_down,
                "audio_received_s": round(result.received_audio_s, 2),
            }
            if fmt == "pcm16":
                t0 = result.first("session_ready")
                t1 = result.first("input_ended")
                engaged = result.cpu_between(t0, t1)
                report.set("daemon_cpu_pct_engaged", round(engaged, 3))
                entry["engaged_s"] = round(t1 - t0, 2)
            details[f"stream_{fmt}"] = entry
        report.set("bandwidth_kbps", kbps)

    report.attempt(("bandwidth_kbps", "daemon_cpu_pct_engaged"), "daemon streaming runs", streaming, log)

    # false barge-ins: long replies played with echo at -6 dB and nobody talking over them
    def echo_only() -> None:
        pcm, cycles, onsets, ask_samples = echo_only_input(echo_minutes, reply_s)
        spec = RunSpec(
            "echo_only",
            pcm,
            replies=(audio.LONG_REPLY,) * (cycles + 1),
            timeout_s=pcm.size / audio.RATE_HZ + 90,
        )
        result = _run(spec, root, log, rss)
        played_s = float(np.count_nonzero(result.output)) / REPLY_RATE_HZ
        logged = barge_ins(result)
        false = false_barge_ins(logged, onsets, ask_samples)
        record_echo_only(
            details, cycles, reply_s, played_s, logged, false, result.sessions, echo_minutes, result._why()
        )
        report.set("false_bargeins", len(false))

    report.attempt(("false_bargeins",), "daemon echo-only run", echo_only, log)
