"""CPU of the daemon's own code with audio pushed through as fast as it goes (method (a)).

Each measurement builds the same objects the daemon builds from the default config and feeds them
10 ms capture chunks in order, exactly as :class:`earshot.pipeline.Conversation` does; the process
CPU time (all threads: onnxruntime's included) divided by the audio time, × 100, is the % of one
core the daemon would spend in real time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from websockets.frames import Frame, Opcode

from benchlib import audio
from earshot.audio.backend import CaptureChunk
from earshot.audio.echo import EchoCanceller
from earshot.audio.playback import Playback
from earshot.audio.resample import StreamResampler
from earshot.audio.ring import AudioRing
from earshot.config import Config, GateConfig, RealtimeConfig, WakewordConfig, default_config
from earshot.gate.bargein import BargeInDetector
from earshot.gate.gate import Gate
from earshot.gate.vad import default_silero_model
from earshot.gate.wakeword import build_wakeword
from earshot.realtime.session import PlayAudio, RealtimeSession

CHUNK = 160
ENGINES = ("microwakeword", "template", "openwakeword", "pocketsphinx")


@dataclass(frozen=True, slots=True)
class CpuFigure:
    """CPU seconds spent on ``audio_s`` seconds of audio; ``pct`` is % of one core in real time."""

    cpu_s: float
    audio_s: float
    wall_s: float

    @property
    def pct(self) -> float:
        """CPU seconds per audio second × 100."""
        return 100.0 * self.cpu_s / self.audio_s

    def as_dict(self) -> dict[str, float]:
        """For the JSON details."""
        return {
            "pct": round(self.pct, 4),
            "cpu_s": round(self.cpu_s, 4),
            "audio_s": round(self.audio_s, 2),
            "wall_s": round(self.wall_s, 3),
        }


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Silence the daemon's INFO lines (wake heard …) while measuring: logging is not the subject."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)


def chunks(pcm: NDArray[np.int16]) -> list[CaptureChunk]:
    """``pcm`` as 10 ms capture chunks with their positions (prepared before the clock starts)."""
    n = pcm.size // CHUNK
    return [CaptureChunk(pcm[i * CHUNK : (i + 1) * CHUNK].copy(), i * CHUNK) for i in range(n)]


def template_dir(root: Path) -> Path:
    """Three enrolled takes of "hey jarvis" (flite voices) for the template engine."""
    directory = root / "wakeword"
    directory.mkdir(parents=True, exist_ok=True)
    for i, voice in enumerate(("slt", "rms", "awb")):
        path = directory / f"take-{i}.wav"
        if not path.exists():
            from tests.support.speech import write_wav

            write_wav(path, audio.say("hey jarvis", voice), audio.RATE_HZ)
    return directory


def build_gate(engine: str, state_dir: Path, base: GateConfig | None = None) -> Gate:
    """The gate the daemon builds for ``gate.wakeword.engine: engine`` (default config otherwise)."""
    gate_cfg = base or default_config().gate
    wake_cfg = dataclasses.replace(gate_cfg.wakeword, engine=engine)  # type: ignore[arg-type]
    if engine == "template":
        wake_cfg = dataclasses.replace(wake_cfg, templates_dir=template_dir(state_dir))
    gate_cfg = dataclasses.replace(gate_cfg, wakeword=wake_cfg)
    return Gate(gate_cfg, wakeword=build_wakeword(wake_cfg, state_dir))


def time_gate(gate: Gate, pcm: NDArray[np.int16]) -> CpuFigure:
    """Run the gate over ``pcm`` (after one warm-up second) and time it."""
    warm = chunks(audio.room_noise(1.0, seed=99))
    for c in warm:
        gate.process(c)
    gate.reset()
    items = chunks(pcm)
    with quiet_logs():
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for c in items:
            gate.process(c)
        cpu1, wall1 = time.process_time(), time.perf_counter()
    return CpuFigure(cpu1 - cpu0, len(items) * CHUNK / audio.RATE_HZ, wall1 - wall0)


def gate_idle(seconds: float, state_dir: Path) -> tuple[CpuFigure, dict[str, Any]]:
    """The gate (default engine, VAD + Silero as configured) plus the bypassed echo canceller, quiet room."""
    cfg = default_config()
    pcm = audio.room_noise(seconds)
    figure = time_gate(build_gate(cfg.gate.wakeword.engine, state_dir), pcm)
    # The capture path in front of the gate: the canceller, bypassed when nothing plays.
    echo = EchoCanceller(filter_ms=cfg.bargein.echo_filter_ms)
    items = chunks(pcm)
    cpu0 = time.process_time()
    for c in items:
        echo.process(c.pcm)
    echo_cpu = time.process_time() - cpu0
    echo.close()
    extra = {
        "engine": cfg.gate.wakeword.engine,
        "silero": default_silero_model().is_file() and cfg.gate.vad.silero.enabled != "off",
        "room_noise_dbfs": -60.0,
        "bypassed_echo_canceller_pct": round(100.0 * echo_cpu / figure.audio_s, 4),
    }
    return figure, extra


def gate_speech(seconds: float, state_dir: Path) -> tuple[dict[str, float | None], dict[str, Any], dict[str, str]]:
    """The gate over continuous speech for each wake-word engine (engine running all the time)."""
    pcm = audio.with_noise(audio.continuous_speech(seconds))
    out: dict[str, float | None] = {}
    details: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for engine in ENGINES:
        try:
            gate = build_gate(engine, state_dir)
        except Exception as exc:  # noqa: BLE001 - an engine missing here is reported, not fatal
            out[engine] = None
            problems[engine] = f"{type(exc).__name__}: {exc}"
            continue
        figure = time_gate(gate, pcm)
        out[engine] = round(figure.pct, 3)
        details[engine] = {**figure.as_dict(), "engine_calls": gate.engine_calls}
    return out, details, problems


class BenchSink:
    """An AudioSink that takes audio at once (a device that is never full), keeping the 16 kHz reference.

    Like :class:`earshot.audio.wavfile.FileSink` it resamples what it is given to 16 kHz for the echo
    canceller; it holds nothing, so :class:`Playback` writes as fast as the loop lets it.
    """

    rate_hz = 24000
    write_samples = 240

    def __init__(self) -> None:
        self._ref = StreamResampler(24000, 16000)
        self._reference: list[NDArray[np.int16]] = []
        self.written = 0

    async def write(self, pcm: NDArray[np.int16]) -> None:
        self.written += int(pcm.size)
        self._reference.append(self._ref.process(pcm))

    def queued_samples(self) -> int:
        return 0

    def drop(self) -> None:
        return None

    async def drain(self) -> None:
        return None

    def pop_reference(self) -> NDArray[np.int16]:
        if not self._reference:
            return np.zeros(0, dtype=np.int16)
        out = np.concatenate(self._reference)
        self._reference.clear()
        return out

    @property
    def status(self) -> Any:
        return None


def _server_event(event: dict[str, Any]) -> str:
    return json.dumps({"event_id": "event_bench", **event})


def ready_session(config: RealtimeConfig, now: float) -> RealtimeSession:
    """A RealtimeSession taken through session.created / session.updated, as on a live connection."""
    session = RealtimeSession(config)
    session.connection_opened(now)
    session.receive_message(
        _server_event(
            {
                "type": "session.created",
                "session": {"type": "realtime", "id": "sess_bench", "object": "realtime.session", "expires_at": 0},
            }
        ),
        now,
    )
    session.receive_message(_server_event({"type": "session.updated", "session": {"type": "realtime"}}), now)
    session.messages_to_send()
    session.events_received()
    return session


def delta_messages(reply24k: NDArray[np.int16], fmt: str, chunk_ms: int = 100) -> list[str]:
    """The reply as ``response.output_audio.delta`` messages in ``fmt``, as the emulator streams it."""
    from earshot.emulator import voice

    wire_fmt: dict[str, object] = {"type": "audio/pcm", "rate": 24000} if fmt == "pcm16" else {"type": "audio/pcmu"}
    step = 24000 * chunk_ms // 1000
    out = []
    for i in range(0, reply24k.size, step):
        wire = voice.to_wire(reply24k[i : i + step], wire_fmt)
        out.append(
            _server_event(
                {
                    "type": "response.output_audio.delta",
                    "response_id": "resp_bench",
                    "item_id": "item_bench",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": base64.b64encode(wire).decode(),
                }
            )
        )
    return out


async def _stream_run(
    cfg: Config, user: NDArray[np.int16], reply24k: NDArray[np.int16], state_dir: Path
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rt = cfg.realtime
    wire_rate = 24000 if rt.format == "pcm16" else 8000
    gate = build_gate(cfg.gate.wakeword.engine, state_dir, cfg.gate)
    # As in the daemon (pipeline.Conversation): while engaged the wake-word engine is off, except
    # over playback in gated duplex; the VAD keeps running.
    gate.set_suppressed(True)
    echo = EchoCanceller(filter_ms=cfg.bargein.echo_filter_ms)
    bargein = BargeInDetector(cfg.bargein)
    ring = AudioRing(60 * 16000)
    up = StreamResampler(16000, wire_rate)
    down = StreamResampler(wire_rate, 24000) if wire_rate != 24000 else None
    sink = BenchSink()
    playback = Playback(sink, prebuffer_ms=cfg.audio.output.prebuffer_ms)
    session = ready_session(rt, loop.time())
    deltas = delta_messages(reply24k, rt.format)
    per_delta = max(1, len(deltas) and (user.size // CHUNK) // len(deltas))
    items = chunks(user)
    # The echo: what the sink was given, 20 ms later and 6 dB down (audio.echo's defaults).
    echo_gain = 10.0 ** (-6.0 / 20.0)
    echo_line = np.zeros(320, dtype=np.int16)
    bytes_up = 0
    messages_up = 0
    task = asyncio.create_task(playback.run())
    bargein.start(0, erle_db=None)
    cursor = 0
    enqueued = 0
    playback_prebuffer = cfg.audio.output.prebuffer_ms * 24
    stages = dict.fromkeys(
        ("downlink", "playback_task", "echo_feed", "echo_canceller", "gate", "bargein", "uplink"), 0.0
    )
    clock = time.thread_time  # CPU of this thread: other processes on the machine do not count
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with quiet_logs():
        for n, c in enumerate(items):
            now = loop.time()
            t0 = clock()
            # downlink: one 100 ms delta per 10 chunks, decoded by the session, queued for playback
            if n % per_delta == 0 and n // per_delta < len(deltas):
                session.receive_message(deltas[n // per_delta], now)
                for event in session.events_received():
                    if isinstance(event, PlayAudio):
                        pcm = event.pcm if down is None else down.process(event.pcm)
                        playback.enqueue(event.item_id, pcm)
                        enqueued += int(pcm.size)
            t1 = clock()
            # Let Playback.run hand over what a device would take in 10 ms (each write takes two loop turns).
            due = min(enqueued, sink.written + 240) if enqueued >= playback_prebuffer else sink.written
            for _ in range(8):
                await asyncio.sleep(0)
                if sink.written >= due:
                    break
            t2 = clock()
            played = sink.pop_reference()
            echo.add_reference(played)
            line = np.concatenate((echo_line, played))
            mic = (
                c.pcm.astype(np.float64) + line[:CHUNK].astype(np.float64) * echo_gain if line.size >= CHUNK else c.pcm
            )
            echo_line = line[CHUNK:] if line.size >= CHUNK else line
            raw = np.clip(np.rint(mic), -32768, 32767).astype(np.int16)
            t3 = clock()
            # capture path, as Conversation.on_capture
            cleaned = echo.process(raw)
            t4 = clock()
            ring.append(cleaned, c.position)
            gate.process(CaptureChunk(cleaned, c.position))
            t5 = clock()
            bargein.process(cleaned, raw, echo.frame, c.position)
            t6 = clock()
            # uplink: ring → 24 kHz (or 8 kHz) → append → JSON → masked WebSocket frame
            pcm_up = ring.since(cursor)
            cursor = c.position + CHUNK
            session.append_audio(up.process(pcm_up), now)
            for text in session.messages_to_send():
                frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=True)
                bytes_up += len(frame)
                messages_up += 1
            t7 = clock()
            for stage, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6), strict=True):
                stages[stage] += dt
    cpu1, wall1 = time.process_time(), time.perf_counter()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    echo.close()
    audio_s = len(items) * CHUNK / 16000
    figure = CpuFigure(cpu1 - cpu0, audio_s, wall1 - wall0)
    return {
        **figure.as_dict(),
        "format": rt.format,
        "uplink_messages": messages_up,
        "uplink_kbps_frames": round(bytes_up * 8 / 1000 / audio_s, 2),
        "played_s": round(sink.written / 24000, 2),
        "erle_db": None if echo.erle_db is None else round(echo.erle_db, 1),
        "bargein_armed_at_end": bargein.armed,
        "stage_pct": {stage: round(100.0 * t / audio_s, 3) for stage, t in stages.items()},
        # process CPU not spent in this thread: onnxruntime's (Silero) worker threads, the GC …
        "other_threads_pct": round(figure.pct - 100.0 * sum(stages.values()) / audio_s, 3),
    }


def stream(seconds: float, state_dir: Path, fmt: str = "pcm16") -> dict[str, Any]:
    """The engaged path: the user's speech streamed up while a reply streams down and plays, with echo.

    The upper bound of the engaged state: the daemon does both at once only in the seconds around a
    barge-in; this keeps both running the whole time.
    """
    cfg = default_config()
    cfg = dataclasses.replace(cfg, realtime=dataclasses.replace(cfg.realtime, format=fmt))  # type: ignore[arg-type]
    user = audio.with_noise(audio.continuous_speech(seconds))
    reply16 = audio.continuous_speech(seconds + 1.0)[::-1].copy()  # other speech, time-reversed
    from earshot.audio.resample import resample

    reply24k = resample(reply16, 16000, 24000)
    return asyncio.run(_stream_run(cfg, user, reply24k, state_dir))


def temp_state() -> tempfile.TemporaryDirectory[str]:
    """A scratch state directory (templates, nothing else)."""
    return tempfile.TemporaryDirectory(prefix="earshot-bench-")


__all__ = ["ENGINES", "CpuFigure", "WakewordConfig", "gate_idle", "gate_speech", "stream", "temp_state"]
