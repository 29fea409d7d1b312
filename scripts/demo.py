"""scripts/demo: the whole job offline, in one command, with a printed timeline.

It builds a spoken microphone recording with flite (the wake phrase "hey jarvis", a question, silence,
an interruption in another voice while the answer plays, silence for the follow-up reply), starts the
local Realtime emulator (``earshot emulate``) on a free loopback port with a long scripted answer, and
runs the real daemon (``earshot run``) with the file backend: the WAV is the microphone, the speaker
is recorded to a WAV on the same clock, and a delayed, attenuated copy of what is played is fed back
into the microphone like a loudspeaker beside it. Lifecycle lines of both processes are printed as
they happen, then a summary.

``--real`` talks to the real API instead (``$OPENAI_API_KEY``; the answer is the model's own).
``--features`` shows the appliance's features instead (:mod:`demofeatures`): an announcement, a timer
set by voice that rings with the network down, and the stop phrase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from benchlib.proc import earshot_argv, start_daemon, stop_daemon
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
RATE_HZ = 16000
REAL_URL = "wss://api.openai.com/v1/realtime"
FOLLOW_UP_S = 3.0
IDLE_CLOSE_S = 0.5

WAKE = "hey jarvis"
QUESTION = "how did people first measure the distance to the moon"
INTERRUPTION = "wait, stop. just tell me how far it is."
LONG_ANSWER = (
    "Great question. The first serious measurement came from the ancient Greeks. Around two hundred "
    "years before the common era, Hipparchus compared how a solar eclipse looked from two different "
    "cities, and from the difference in the shadow he worked out that the moon is about sixty times "
    "as far away as the radius of the earth. Centuries later, astronomers used parallax from "
    "observatories far apart, and in the twentieth century radar pulses and then lasers bounced off "
    "mirrors left by the Apollo astronauts made the figure precise to a few centimetres."
)
SHORT_ANSWER = "About three hundred and eighty four thousand kilometres, on average."

# The daemon's timeline comes from its JSON events. The emulator is another program: its text lines
# are shown, and the truncate it received is read from them.
_EMULATOR_LINE = re.compile(r"^(?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<what>.*)$")
_EMU_KEEP = ("listening", "opened", "user turn committed", "response", "truncate", "closed")
_TRUNCATE_SERVER = re.compile(r"truncate \S+ at (\d+) ms")


@dataclass(frozen=True, slots=True)
class Segment:
    """One spoken part of the input: where it starts (s), the voice and the words."""

    start_s: float
    end_s: float
    voice: str
    text: str


@dataclass
class Event:
    """One timeline line: wall time since the daemon started, the audio clock if known, who, what."""

    wall_s: float
    audio_s: float | None
    source: str
    what: str
    name: str | None = None
    """The daemon's event name (its JSON line's ``event``), None for other lines."""
    data: dict[str, Any] = field(default_factory=dict)
    """The daemon event's fields."""


@dataclass
class Timeline:
    """Everything printed, kept for the summary."""

    events: list[Event] = field(default_factory=list)

    def first(self, name: str) -> Event | None:
        """The first of the daemon's ``name`` events."""
        return next((e for e in self.events if e.name == name), None)


# ----------------------------------------------------------------------------------------- input audio


def synth(text: str, voice: str, workdir: Path) -> NDArray[np.int16]:
    """Speak ``text`` with flite ``voice``, resampled by sox to 16 kHz mono int16."""
    raw = workdir / f"flite-{voice}.wav"
    out = workdir / f"speech-{voice}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE_HZ), "-c", "1", "-b", "16", str(out)], check=True)
    pcm = read_wav(out)
    raw.unlink()
    out.unlink()
    return pcm


def read_wav(path: Path) -> NDArray[np.int16]:
    """Mono int16 samples of a 16-bit WAV (channels averaged)."""
    with wave.open(str(path), "rb") as w:
        channels, width, data = w.getnchannels(), w.getsampwidth(), w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: {width * 8}-bit WAV, want 16-bit")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
    return pcm.reshape(-1, channels).mean(axis=1).astype(np.int16) if channels > 1 else pcm


def last_sound_s(speaker: Path, around_s: float) -> float | None:
    """The time of the last audible sample of the speaker WAV (24 kHz) within -0.5/+1 s of ``around_s``."""
    try:
        pcm = read_wav(speaker)
    except (OSError, EOFError, ValueError):
        return None
    start = max(0, round((around_s - 0.5) * 24000))
    loud = np.flatnonzero(np.abs(pcm[start : round((around_s + 1.0) * 24000)].astype(np.int32)) > 300)
    return (start + int(loud[-1]) + 1) / 24000 if loud.size else None


def write_wav(path: Path, pcm: NDArray[np.int16], rate_hz: int) -> None:
    """Write mono int16 samples."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate_hz)
        w.writeframes(pcm.astype("<i2").tobytes())


def build_input(workdir: Path, *, reply_wait_s: float, tail_s: float) -> tuple[NDArray[np.int16], list[Segment]]:
    """The microphone: wake phrase, question, silence, interruption (another voice), silence.

    ``reply_wait_s`` is how long after the question the interruption starts (the answer must be
    playing by then); ``tail_s`` the silence after it (the follow-up answer, the follow-up window,
    the idle close). The room has a faint noise floor (-70 dBFS), as a real microphone does.
    """
    plan: list[tuple[float, str, str]] = [
        # One breath with the comma's short pause (flite: ~0.2 s, far under the server VAD's silence, so
        # the turn goes on): microWakeWord, the default engine, needs that pause after the phrase.
        (1.0, "slt", f"{WAKE}, {QUESTION}"),
        (reply_wait_s, "rms", INTERRUPTION),
    ]
    parts: list[NDArray[np.int16]] = []
    segments: list[Segment] = []
    t = 0.0
    for gap_s, voice, text in plan:
        parts.append(np.zeros(round(gap_s * RATE_HZ), dtype=np.int16))
        speech = synth(text, voice, workdir)
        t += gap_s
        segments.append(Segment(t, t + speech.size / RATE_HZ, voice, text))
        t += speech.size / RATE_HZ
        parts.append(speech)
    parts.append(np.zeros(round(tail_s * RATE_HZ), dtype=np.int16))
    pcm = np.concatenate(parts).astype(np.float64)
    pcm += np.random.default_rng(0).normal(0.0, 32768 * 10 ** (-70 / 20), pcm.size)
    return np.clip(pcm, -32768, 32767).astype(np.int16), segments


# --------------------------------------------------------------------------------------------- config


def show_input(label: str, workdir: Path, pcm: NDArray[np.int16], segments: list[Segment]) -> None:
    """Write the microphone WAV and print what is spoken in it, when."""
    write_wav(workdir / "microphone.wav", pcm, RATE_HZ)
    print(f"{label}: microphone input, {pcm.size / RATE_HZ:.1f} s ({workdir / 'microphone.wav'}):")
    for s in segments:
        print(f"  {s.start_s:6.2f}-{s.end_s:6.2f} s  ({s.voice}) {s.text!r}")
    print()


def file_audio(workdir: Path, speed: float) -> dict[str, Any]:
    """The config's ``audio``: the file backend on the WAVs in ``workdir``, a speaker 20 dB into the mic."""
    return {
        "backend": "file",
        "input": {"file": str(workdir / "microphone.wav")},
        "output": {"file": str(workdir / "speaker.wav")},
        "echo": {"delay_ms": 20.0, "gain_db": -20.0},
        "file_speed": speed,
    }


def daemon_config(workdir: Path, url: str, *, speed: float) -> dict[str, Any]:
    """The daemon's YAML config: file backend with the echo feed, openWakeWord gate, the given endpoint."""
    return {
        "audio": file_audio(workdir, speed),
        "gate": {
            "mode": "wakeword",  # the default engine: microWakeWord "hey jarvis"
            "follow_up_s": FOLLOW_UP_S,
            "earcons": {"enabled": False},
        },
        "realtime": {"url": url, "idle_close_s": IDLE_CLOSE_S},
        "bargein": {"duplex": "auto"},
        "state_dir": str(workdir / "state"),
        "control": {"socket": str(workdir / "control.sock")},
        "logging": {"journald": "off", "level": "info", "format": "json"},
    }


# ------------------------------------------------------------------------------------------ processes


async def start_emulator(printer: Printer, log: Path) -> tuple[asyncio.subprocess.Process, str, asyncio.Task[None]]:
    """Start ``earshot emulate`` on a free loopback port with the scripted answers.

    Returns:
        The process, its URL and the task that copies its log to ``log`` and the timeline (ends at its exit).
    """
    argv = [
        *earshot_argv(),
        "--log-level",
        "info",
        "emulate",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--voice",
        "flite",
        "--strict",
        "--reply",
        LONG_ANSWER,
        "--reply",
        SHORT_ANSWER,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, start_new_session=True
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    reader = asyncio.create_task(copy_lines(proc.stderr, log, printer.emulator_line))
    try:
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode().strip()
    except TimeoutError:
        line = ""
    if not line.startswith("ws://"):
        await stop_daemon(proc)
        await reader
        raise RuntimeError(f"the emulator did not start; its log: {log}")
    return proc, line, reader


async def copy_lines(stream: asyncio.StreamReader, log: Path, sink: Callable[[str], None]) -> None:
    """Copy each line of ``stream`` to the file ``log`` and to ``sink`` until end of file."""
    with log.open("w") as f:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            f.write(line + "\n")
            sink(line)


class Printer:
    """Prints timeline events as they arrive and keeps them."""

    def __init__(self, t0: float, verbose: bool) -> None:
        self.t0 = t0
        self.verbose = verbose
        self.timeline = Timeline()

    def header(self) -> None:
        print(f"  {'wall s':>7}  {'audio s':>7}  {'who':<7} what", flush=True)

    def add(
        self, source: str, what: str, audio_s: float | None = None, name: str | None = None, data: Any = None
    ) -> None:
        event = Event(time.monotonic() - self.t0, audio_s, source, what, name, data if isinstance(data, dict) else {})
        self.timeline.events.append(event)
        clock = f"{audio_s:7.3f}" if audio_s is not None else " " * 7
        print(f"  {event.wall_s:7.3f}  {clock}  {source:<7} {what}", flush=True)

    def daemon_line(self, line: str) -> None:
        if self.verbose:
            print(f"      | {line}", flush=True)
        doc = _json_line(line)  # the daemon runs with logging.format: json
        if doc is not None:
            name = doc.get("event") if isinstance(doc.get("event"), str) else None
            if isinstance(doc.get("mark"), str) and isinstance(doc.get("at"), (int, float)):
                self.add("daemon", doc["mark"], float(doc["at"]), name, doc.get("data"))
                return
            level, logger, what = str(doc.get("level")), str(doc.get("logger")), str(doc.get("message"))
            if name == "started":
                self.add("daemon", what, None, name, doc.get("data"))
                return
        else:  # not an event: a traceback or a stray print, shown and never hidden
            if not self.verbose and line.strip():
                print(f"      | {line}", flush=True)
            return
        if level in ("WARNING", "ERROR", "CRITICAL"):
            self.add("daemon", f"{level} {logger}: {what}")
        elif what.startswith(("wake word (", "wake ignored", "wake rejected", "duplex mode")):
            self.add("daemon", what)

    def emulator_line(self, line: str) -> None:
        if self.verbose:
            print(f"      > {line}", flush=True)
        match = _EMULATOR_LINE.match(line)
        if match is None:
            return
        what = match["what"]
        if match["level"] in ("WARNING", "ERROR", "CRITICAL") or (
            match["logger"].startswith("earshot.emulator") and any(k in what for k in _EMU_KEEP)
        ):
            self.add("server", what)


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def run_daemon(config: Path, env: dict[str, str], printer: Printer, log: Path) -> int:
    """Run ``earshot run --config`` to completion, its lifecycle lines to the timeline; the exit status."""
    proc = await start_daemon(config, env, cwd=REPO, start_new_session=True)
    assert proc.stderr is not None
    try:
        await copy_lines(proc.stderr, log, printer.daemon_line)
        return await proc.wait()
    finally:
        await stop_daemon(proc)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Run earshot end to end on spoken input: the local Realtime emulator (default) or the real API.",
    )
    parser.add_argument("--real", action="store_true", help=f"talk to {REAL_URL} with $OPENAI_API_KEY")
    parser.add_argument("--url", help="another Realtime endpoint (default: the emulator, or the real API with --real)")
    parser.add_argument("--out", type=Path, help="directory for the WAVs, config and logs (default .cache/demo)")
    parser.add_argument("--speed", type=float, default=1.0, help="file clock pace (1: real time; the tests use 3)")
    parser.add_argument("--quick", action="store_true", help="same as --speed 3")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print every log line of both processes")
    parser.add_argument(
        "--features",
        action="store_true",
        help="the appliance's features instead: an announcement, a timer set by voice ringing offline, the stop phrase",
    )
    return parser.parse_args(argv)


def summary(printer: Printer, segments: list[Segment], workdir: Path, code: int) -> list[str]:
    """Print what happened; return the missing milestones (empty: the demo showed everything)."""
    tl = printer.timeline
    engaged = [e for e in tl.events if e.name == "engaged"]
    wake = next((e for e in engaged if str(e.data.get("source", "")).startswith("wake word")), None)
    ready = tl.first("session_ready")
    heard = tl.first("truncate")
    server = next((m for e in tl.events if e.source == "server" and (m := _TRUNCATE_SERVER.search(e.what))), None)
    bargein = tl.first("bargein")
    print()
    print("summary")
    if wake and ready:
        print(f"  wake to session ready: {(ready.wall_s - wake.wall_s) * 1000:.0f} ms (wall clock)")
    if bargein and bargein.audio_s is not None:
        onset = bargein.data.get("onset_s")
        print(f"  interruption spoken from {segments[-1].start_s:.3f} s of the microphone clock", end="")
        print(f"; speech onset found at {onset:.3f} s" if isinstance(onset, (int, float)) else "", end="")
        print(f"; playback stopped at {bargein.audio_s:.3f} s")
        last = last_sound_s(workdir / "speaker.wav", bargein.audio_s)
        if last is not None:
            print(f"  last reply sound in the speaker WAV: {last:.3f} s")
    if heard:
        also = f"; the server truncated the item at {server.group(1)} ms" if server else ""
        print(f"  reply heard before the interruption: {heard.data.get('heard_ms')} ms (truncate audio_end_ms){also}")
    print(f"  microphone input: {workdir / 'microphone.wav'}")
    print(f"  speaker output:   {workdir / 'speaker.wav'}   (24 kHz, same clock as the microphone)")
    print(f"  config and logs:  {workdir}")
    milestones = {
        "wake": wake,
        "session ready": ready,
        "reply started": tl.first("reply_started"),
        "barge-in": bargein,
        "truncate": heard,
    }
    missing = [name for name, seen in milestones.items() if seen is None]
    if code != 0:
        missing.append(f"daemon exit {code}")
    print(f"  daemon exit code {code}" + (f"; missing: {', '.join(missing)}" if missing else "; all milestones seen"))
    return missing


def write_config(workdir: Path, url: str, speed: float) -> Path:
    """Write the daemon's config next to the WAVs; its path."""
    config = workdir / "earshot.yaml"
    config.write_text(yaml.safe_dump(daemon_config(workdir, url, speed=speed), sort_keys=False))
    return config


async def run_processes(args: argparse.Namespace, workdir: Path, speed: float, printer: Printer) -> int:
    """Start the emulator (unless --real/--url), run the daemon to its end, stop the emulator; the daemon's status."""
    emulator: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    try:
        if args.url or args.real:
            url = args.url or REAL_URL
        else:
            printer.add("demo", "starting the Realtime emulator: earshot emulate --port 0 --reply … --reply …")
            emulator, url, reader = await start_emulator(printer, workdir / "emulator.log")
        config = write_config(workdir, url, speed)
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if not (args.url or args.real):
            env["OPENAI_API_KEY"] = "sk-demo-emulator"  # the emulator accepts any key; never send a real one to it
        where = "the real API" if args.real else url
        printer.add("demo", f"earshot run --config {config}  ({where}, file clock x{speed:g})")
        return await run_daemon(config, env, printer, workdir / "daemon.log")
    finally:
        if emulator is not None:
            await stop_daemon(emulator)
        if reader is not None:
            await reader


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every milestone showed (with --real: the daemon's own exit status)."""
    args = parse_args(argv)
    for tool in ("flite", "sox"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} is needed to speak the input (scripts/setup installs it)", file=sys.stderr)
            return 1
    if args.real and not os.environ.get("OPENAI_API_KEY"):
        print("demo: --real needs $OPENAI_API_KEY", file=sys.stderr)
        return 2
    if args.features:
        import demofeatures

        return demofeatures.main(args)
    speed = 3.0 if args.quick else args.speed
    workdir: Path = args.out or REPO / ".cache" / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The server's latency and the daemon's timers (follow-up window, idle close) run on the wall clock:
        # at speed x they take x times more of the microphone clock.
        wait_s = 6.0 if args.real else 3.5 + 1.0 * speed
        tail_s = 6.0 + (FOLLOW_UP_S + IDLE_CLOSE_S + 3.0) * speed
        pcm, segments = build_input(Path(tmp), reply_wait_s=wait_s, tail_s=tail_s)
    show_input("demo", workdir, pcm, segments)
    printer = Printer(time.monotonic(), args.verbose)
    printer.header()
    code = asyncio.run(run_processes(args, workdir, speed, printer))
    missing = summary(printer, segments, workdir, code)
    if args.real:
        return code  # the real model decides what to say; only the daemon's own exit status judges the run
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
