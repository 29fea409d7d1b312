"""scripts/demo --features: what the appliance does besides answering, offline, with a printed timeline.

1. An announcement: once the daemon is up, ``earshot say`` (the real CLI, over the control socket)
   makes it speak without a wake word (an out-of-band response of the emulator's).
2. A timer set by voice: "hey jarvis, set a timer for twenty seconds for the tea"; the emulator's model
   calls ``set_timer``, the daemon runs it locally and the model confirms.
3. The network goes down: once the session is closed, the demo stops the emulator.
4. The timer rings anyway, here, with no connection; "stop" (the stop phrase, or any speech over the
   ring) answers it.

The daemon runs with the gate a plain install has (wake word, earcons on), in a room with echo.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from benchlib.proc import earshot_argv, start_daemon, stop_daemon
from numpy.typing import NDArray

from demo import RATE_HZ, REPO, Printer, Segment, _json_line, copy_lines, file_audio, show_input, synth

TIMER_S = 20
ANNOUNCEMENT = "Good evening. Dinner is at seven."
QUESTION = "hey jarvis, set a timer for twenty seconds for the tea"
ANSWER_TO_RING = "stop"
FOLLOW_UP_S = 3.0
IDLE_CLOSE_S = 0.5


class FeaturePrinter(Printer):
    """The demo's printer, also showing the timer service's lines; it signals the moments the demo acts on."""

    def __init__(self, t0: float, verbose: bool) -> None:
        super().__init__(t0, verbose)
        self.started = asyncio.Event()
        self.session_closed_after_timer = asyncio.Event()
        self._timer_set = False

    def add(
        self, source: str, what: str, audio_s: float | None = None, name: str | None = None, data: Any = None
    ) -> None:
        super().add(source, what, audio_s, name, data)
        if name == "started":
            self.started.set()
        if source == "daemon" and what.startswith("timer ") and " set: due " in what:
            self._timer_set = True
        if name == "session_closed" and self._timer_set:
            self.session_closed_after_timer.set()

    def daemon_line(self, line: str) -> None:
        super().daemon_line(line)
        doc = _json_line(line)
        if doc is not None and doc.get("logger") == "earshot.timerservice":
            self.add("daemon", str(doc.get("message")))


def build_input(workdir: Path, speed: float) -> tuple[NDArray[np.int16], list[Segment]]:
    """The microphone: quiet while the announcement plays, the timer question, quiet, "stop" over the ring.

    The daemon's clocks (the announcement's audio, the timer) run on the wall clock, the file on
    ``speed`` times it: the gaps are scaled so the question comes after the announcement and the
    answer while the timer rings.
    """
    question = synth(QUESTION, "slt", workdir)
    answer = synth(ANSWER_TO_RING, "rms", workdir)
    q_start = 2.0 + 5.0 * speed
    q_end = q_start + question.size / RATE_HZ
    a_start = q_end + (TIMER_S + 4.0) * speed  # the timer is set ~1 s after the question; rings ~3 s then
    a_end = a_start + answer.size / RATE_HZ
    total = a_end + 4.0 * speed
    pcm = np.zeros(round(total * RATE_HZ), dtype=np.float64)
    for start, speech in ((q_start, question), (a_start, answer)):
        i = round(start * RATE_HZ)
        pcm[i : i + speech.size] += speech
    pcm += np.random.default_rng(0).normal(0.0, 32768 * 10 ** (-70 / 20), pcm.size)
    segments = [Segment(q_start, q_end, "slt", QUESTION), Segment(a_start, a_end, "rms", ANSWER_TO_RING)]
    return np.clip(pcm, -32768, 32767).astype(np.int16), segments


def daemon_config(workdir: Path, url: str, speed: float) -> dict[str, Any]:
    """File backend in a room with echo, the gate as installed (wake word, earcons on), a fresh state dir."""
    return {
        "audio": file_audio(workdir, speed),
        "gate": {"follow_up_s": FOLLOW_UP_S},
        "realtime": {"url": url, "idle_close_s": IDLE_CLOSE_S},
        "state_dir": str(workdir / "state"),
        "control": {"socket": str(workdir / "control.sock")},
        "logging": {"journald": "off", "level": "info", "format": "json"},
    }


async def _emulator(printer: Printer, log: Path) -> tuple[asyncio.subprocess.Process, str, asyncio.Task[None]]:
    argv = [
        *earshot_argv(),
        "--log-level",
        "info",
        "emulate",
        "--port",
        "0",
        "--voice",
        "flite",
        "--strict",
        "--call",
        f'1:set_timer:{{"seconds": {TIMER_S}, "label": "tea"}}',
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, start_new_session=True
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    reader = asyncio.create_task(copy_lines(proc.stderr, log, printer.emulator_line))
    async with asyncio.timeout(60):
        url = (await proc.stdout.readline()).decode().strip()
    if not url.startswith("ws://"):
        await stop_daemon(proc)
        await reader
        raise RuntimeError(f"the emulator did not start; its log: {log}")
    return proc, url, reader


async def _announce(printer: FeaturePrinter, socket: Path, env: dict[str, str]) -> None:
    await printer.started.wait()
    for _ in range(100):  # the socket is bound just after the start line
        if await asyncio.to_thread(socket.exists):
            break
        await asyncio.sleep(0.05)
    printer.add("demo", f"earshot say {ANNOUNCEMENT!r}")
    proc = await asyncio.create_subprocess_exec(
        *earshot_argv(),
        "say",
        "--socket",
        str(socket),
        ANNOUNCEMENT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await proc.communicate()
    printer.add("demo", f"earshot say: {out.decode().strip()} (exit {proc.returncode})")


async def _network_down(printer: FeaturePrinter, emulator: asyncio.subprocess.Process) -> None:
    await printer.session_closed_after_timer.wait()
    await stop_daemon(emulator)
    printer.add("demo", "network down: the emulator is stopped; nothing listens on its port any more")


async def run(workdir: Path, speed: float, printer: FeaturePrinter) -> int:
    """The emulator, the daemon, the announcement and the network going down; the daemon's exit status."""
    printer.add("demo", "starting the Realtime emulator: earshot emulate --call '1:set_timer:…'")
    emulator, url, reader = await _emulator(printer, workdir / "emulator.log")
    config = workdir / "earshot.yaml"
    config.write_text(yaml.safe_dump(daemon_config(workdir, url, speed), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    env["OPENAI_API_KEY"] = "sk-demo-emulator"  # the emulator accepts any key; never send a real one to it
    printer.add("demo", f"earshot run --config {config}  ({url}, file clock x{speed:g})")
    helpers = [asyncio.create_task(_announce(printer, workdir / "control.sock", env))]
    helpers.append(asyncio.create_task(_network_down(printer, emulator)))
    proc = await start_daemon(config, env, cwd=REPO, start_new_session=True)
    assert proc.stderr is not None
    try:
        await copy_lines(proc.stderr, workdir / "daemon.log", printer.daemon_line)
        return await proc.wait()
    finally:
        await stop_daemon(proc)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await stop_daemon(emulator)
        await reader


def summary(printer: FeaturePrinter, code: int) -> list[str]:
    """Print what happened; the missing milestones (empty: everything was shown)."""
    events = printer.timeline.events

    def seen(test: Any) -> Any:
        return next((e for e in events if test(e)), None)

    down = seen(lambda e: e.source == "demo" and e.what.startswith("network down"))
    milestones = {
        "announcement": seen(lambda e: e.name == "announcing"),
        "announcement spoken": seen(lambda e: e.name == "reply_started"),
        "timer set by voice": seen(lambda e: e.source == "daemon" and " set: due " in e.what),
        "network down": down,
        "timer rang offline": seen(
            lambda e: (
                e.source == "daemon"
                and e.what.startswith("timer ")
                and "ringing" in e.what
                and down is not None
                and e.wall_s >= down.wall_s
            )
        ),
        "ring stopped": seen(lambda e: e.name == "ring_stopped"),
    }
    print()
    print("summary")
    ringing, stopped = milestones["timer rang offline"], milestones["ring stopped"]
    if down is not None and ringing is not None:
        print(f"  the timer rang {ringing.wall_s - down.wall_s:.1f} s after the network went down (wall clock)")
    if stopped is not None:
        print(f"  the ring was stopped by {stopped.data.get('by', '?')} at {stopped.audio_s:.3f} s of the microphone")
    missing = [name for name, event in milestones.items() if event is None]
    if code != 0:
        missing.append(f"daemon exit {code}")
    print(f"  daemon exit code {code}" + (f"; missing: {', '.join(missing)}" if missing else "; all milestones seen"))
    return missing


def main(args: argparse.Namespace) -> int:
    """``scripts/demo --features``: 0 when every milestone showed."""
    if args.real or args.url:
        print("demo: --features runs against the emulator only (it stops it to take the network down)")
        return 2
    speed = 3.0 if args.quick else args.speed
    workdir: Path = args.out or REPO / ".cache" / "demo-features"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "state", ignore_errors=True)  # no timer of an earlier run
    with tempfile.TemporaryDirectory() as tmp:
        pcm, segments = build_input(Path(tmp), speed)
    show_input("demo --features", workdir, pcm, segments)
    printer = FeaturePrinter(time.monotonic(), args.verbose)
    printer.header()
    code = asyncio.run(run(workdir, speed, printer))
    return 0 if not summary(printer, code) else 1
