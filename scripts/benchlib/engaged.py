"""The engaged path's CPU through the product's own parts (the ``stream`` figure, method (a)).

:func:`earshot.compose.build` makes the daemon's parts from the default config (microWakeWord, earcons
on, the default VAD and canceller) on the file backend with its room (loudspeaker soft clip, room
response, delay), paced :data:`SPEED` × real time. The Realtime link is the product's own, over a real
WebSocket on loopback to the emulator, which runs in a thread of its own so that its CPU can be told
apart. The bench plays the supervisor's part with the supervisor's own objects: capture goes through
:class:`earshot.capturefeed.CaptureFeed`, the link's events and the playback's events go to the
conversation, as in :mod:`earshot.app`.

The exchange is what an engaged device does: the user asks (button, then follow-ups), the server's
VAD ends the turn, a reply streams down and plays while its echo comes back through the room, the
user asks again within the follow-up window. The figure is the process's CPU (every thread: onnxruntime's
included) less the emulator's threads and the simulated room (the file backend's loudspeaker and room
model, which stands in for the air, not for anything the daemon does), per second of audio, × 100:
% of one core in real time.

Nothing here copies a decision of the product; a change to the capture path, the core, the uplink or
the playback shows in this figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from tests.support.speech import write_wav

from benchlib import audio
from benchlib.devices import thread_cpu_s
from earshot.audio.room import EchoPath
from earshot.capturefeed import CaptureFeed
from earshot.compose import build
from earshot.config import load_config
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from earshot.engage import Phase

__all__ = ["SPEED", "stream"]

SPEED = 4.0
"""Pace of the file backend's clock (× real time); the emulator streams replies this much faster too."""
QUESTION = audio.SENTENCES[2]
REPLY = audio.SENTENCES[0]
CYCLE_S = 15.0
"""One question and its reply: 0.5 s of room, the question (~4 s), the server's VAD (0.5 s), the reply
(~5.3 s) and room until the next question, well inside the 6 s follow-up window."""
_EMULATOR_THREADS = "bench-emulator"


class EmulatorThread:
    """The emulator in its own thread and event loop (its CPU is read per thread and left out)."""

    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self.emu: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=_EMULATOR_THREADS, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # noqa: BLE001 - reported to the bench's thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        import concurrent.futures

        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix=_EMULATOR_THREADS))
        self._loop, self._stop = loop, asyncio.Event()
        async with Emulator(self.options) as emu:
            self.emu = emu
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None or self.emu is None:
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def url(self) -> str:
        assert self.emu is not None
        return self.emu.url

    def cpu_s(self) -> float:
        """CPU seconds of the emulator's threads so far."""
        return sum(
            thread_cpu_s(t.native_id)
            for t in threading.enumerate()
            if t.name.startswith(_EMULATOR_THREADS) and t.native_id is not None
        )


class _App:
    """What the built parts report to: the conversation gets the playback's events; the rest is dropped."""

    def __init__(self, clock: Any) -> None:
        self.conversation: Any = None
        self.clock = clock

    def on_phase(self, old: Phase, new: Phase, reason: str) -> None:
        pass

    def on_hook(self, name: str, data: dict[str, Any]) -> None:
        pass

    def run_tool(self, call_id: str, name: str, arguments: str) -> None:
        pass

    def on_record(self, kind: str, pcm: NDArray[np.int16], info: dict[str, Any]) -> None:
        pass

    def on_playback_event(self, ev: Any) -> None:
        self.conversation.on_playback_event(ev, self.clock())

    def cancel_tools(self) -> None:
        pass

    def stop_ring(self, by: str) -> None:
        pass

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": "Bearer sk-bench-emulator"}


@dataclass(frozen=True, slots=True)
class _Input:
    pcm: NDArray[np.int16]
    questions: list[int]  # sample positions where the user starts to ask


def _input(seconds: float) -> _Input:
    question = audio.say(QUESTION, voice="rms")
    cycle = round(CYCLE_S * audio.RATE_HZ)
    lead = audio.RATE_HZ // 2
    n = max(1, round(seconds / CYCLE_S))
    pcm = np.zeros(max(n * cycle, round(seconds * audio.RATE_HZ)), dtype=np.int16)
    starts = []
    for i in range(n):
        start = i * cycle + lead
        piece = question[: max(0, pcm.size - start)]
        pcm[start : start + piece.size] = piece
        starts.append(start)
    pcm = pcm[: round(seconds * audio.RATE_HZ)]
    return _Input(audio.with_noise(pcm), [s for s in starts if s < pcm.size])


def _config(workdir: Path, url: str, fmt: str) -> Path:
    path = workdir / "earshot.yaml"
    cfg = {
        "audio": {
            "backend": "file",
            "input": {"file": str(workdir / "input.wav")},
            "echo": {"delay_ms": 20, "gain_db": -6},  # the room: response and soft clip by default
            "file_speed": SPEED,
        },
        "realtime": {"url": url, "format": fmt},
        "state_dir": str(workdir / "state"),
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class _Events(logging.Handler):
    """Counts the conversation's events by name (its log records' ``event``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "event", None)
        if isinstance(name, str):
            self.counts[name] = self.counts.get(name, 0) + 1


class _RoomClock:
    """Thread CPU spent in the simulated room (:meth:`earshot.audio.room.EchoPath.process`), to leave out."""

    def __init__(self) -> None:
        self.cpu_s = 0.0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        original = EchoPath.process
        clock = self

        def timed(path: EchoPath, played: NDArray[np.int16]) -> NDArray[np.float64]:
            t0 = time.thread_time()
            try:
                return original(path, played)
            finally:
                clock.cpu_s += time.thread_time() - t0

        EchoPath.process = timed  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            EchoPath.process = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _quiet_counting() -> Iterator[_Events]:
    """Logs quiet (errors only) while the run lasts; the conversation's events counted."""
    root, core = logging.getLogger(), logging.getLogger("earshot.conversation.core")
    saved = root.level, core.level, core.propagate
    events = _Events()
    root.setLevel(logging.ERROR)
    core.setLevel(logging.INFO)
    core.propagate = False
    core.addHandler(events)
    try:
        yield events
    finally:
        core.removeHandler(events)
        root.setLevel(saved[0])
        core.setLevel(saved[1])
        core.propagate = saved[2]


async def _run(
    config_path: Path, state_dir: Path, emulator: EmulatorThread, questions: list[int], room: _RoomClock
) -> dict[str, Any]:
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    def clock() -> float:  # the audio's time: the file backend ticks SPEED times faster than the loop
        return (loop.time() - t0) * SPEED

    app = _App(clock)
    parts = build(config, app, state_dir=state_dir, environ={})
    conv = app.conversation = parts.conversation
    feed = CaptureFeed(conv, parts.sink)
    pending = list(questions)
    engaged_by_button = 0

    async def link_events() -> None:
        async for ev in parts.link.events():
            conv.on_link_event(ev, clock())

    cpu0 = time.process_time()
    emu0 = emulator.cpu_s()
    room0 = room.cpu_s
    wall0 = time.perf_counter()
    audio_samples = 0
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(parts.playback.run()),
            tg.create_task(parts.link.run()),
            tg.create_task(link_events()),
        ]
        async for chunk in parts.source.chunks():
            now = clock()
            if pending and chunk.position >= pending[0]:
                pending.pop(0)
                if conv.phase is Phase.IDLE and conv.engage(now, chunk.position, source="button"):
                    engaged_by_button += 1
            feed.chunk(chunk.pcm, chunk.position, now, backlog=parts.source.backlog)
            audio_samples = chunk.position + len(chunk.pcm)
        feed.flush(clock())
        cpu1, emu1, wall1, room1 = time.process_time(), emulator.cpu_s(), time.perf_counter(), room.cpu_s
        for task in tasks:
            task.cancel()
    await parts.source.aclose()
    await parts.sink.aclose()
    echo = conv.echo
    erle = None if echo is None or echo.erle_db is None else round(float(echo.erle_db), 1)
    if echo is not None:
        echo.close()
    audio_s = audio_samples / audio.RATE_HZ
    cpu_s = (cpu1 - cpu0) - (emu1 - emu0) - (room1 - room0)
    return {
        "pct": round(100.0 * cpu_s / audio_s, 3),
        "cpu_s": round(cpu_s, 3),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall1 - wall0, 2),
        "emulator_cpu_s": round(emu1 - emu0, 3),
        "room_cpu_s": round(room1 - room0, 3),
        "speed": SPEED,
        "engaged_by_button": engaged_by_button,
        "erle_db": erle,
    }


def stream(seconds: float, state_dir: Path, fmt: str = "pcm16") -> dict[str, Any]:
    """The engaged exchange for ``seconds`` of audio in ``fmt`` (see the module docstring)."""
    data = _input(max(seconds, CYCLE_S / 2))
    workdir = state_dir / f"engaged-{fmt}"
    workdir.mkdir(parents=True, exist_ok=True)
    write_wav(workdir / "input.wav", data.pcm, audio.RATE_HZ)
    options = EmulatorOptions(reply_rate=4.0 * SPEED, script=DefaultScript(replies=[REPLY] * 100))
    room = _RoomClock()
    with _quiet_counting() as events, EmulatorThread(options) as emulator, room.timing():
        result = asyncio.run(_run(_config(workdir, emulator.url, fmt), state_dir, emulator, data.questions, room))
        assert emulator.emu is not None
        sessions = emulator.emu.sessions
        responses = [r for s in sessions for r in s.responses]
        result.update(
            format=fmt,
            questions=len(data.questions),
            replies_completed=sum(r.status == "completed" for r in responses),
            replies_cancelled=sum(r.status == "cancelled" for r in responses),
            truncates=sum(len(s.truncations) for s in sessions),
            uplink_audio_s=round(emulator.emu.received_audio().size / 24000, 2),
            reply_audio_s=round(sum(r.audio_samples_sent / r.rate_hz for r in responses), 2),
            bargeins=events.counts.get("bargein", 0),
            events=dict(sorted(events.counts.items())),
        )
    return result
