"""The listening gate's CPU with audio pushed through as fast as it goes (method (a)).

Each measurement builds the gate the daemon builds from the default config (one wake-word engine at a
time) and feeds it 10 ms capture chunks in order; the process CPU time (all threads: onnxruntime's
included) divided by the audio time, × 100, is the % of one core the gate would spend in real time.
The engaged path (capture, conversation core, uplink, playback) is measured through the product's
own parts by :mod:`benchlib.engaged`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchlib import audio
from earshot.audio.backend import CaptureChunk
from earshot.audio.echo import EchoCanceller
from earshot.config import GateConfig, WakewordConfig, default_config
from earshot.gate.gate import Gate
from earshot.gate.vad import default_silero_model
from earshot.gate.wakeword import build_wakeword

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


def temp_state() -> tempfile.TemporaryDirectory[str]:
    """A scratch state directory (templates, nothing else)."""
    return tempfile.TemporaryDirectory(prefix="earshot-bench-")


__all__ = ["ENGINES", "CpuFigure", "WakewordConfig", "gate_idle", "gate_speech", "temp_state"]
