"""The composition root: every part of a running earshot, built from the config and wired together.

:func:`build` makes the audio edges, the playback, the Realtime link, the tools, the gate with its
echo canceller and barge-in detectors, and the :class:`~earshot.pipeline.Conversation` that runs the
conversation core against them. It starts nothing: the supervisor (:mod:`earshot.app`) runs the
parts' tasks in its one TaskGroup, and a test can drive the same parts without a daemon.

Two edges can be injected, the two that reach outside the process:

- ``audio``: the microphone and the speaker (default: :func:`earshot.audio.devices.open_audio` on
  ``config.audio``, ALSA or the file backend);
- ``connect``: how a WebSocket is opened (default: :func:`earshot.realtime.connection.open_websocket`).

What the parts report goes to an :class:`App`: phase changes, hooks, tool calls, recordings,
playback events and the credentials for each connection. The daemon is one; a test's is a recorder.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from earshot import toolexec
from earshot.audio.devices import open_audio
from earshot.audio.echo import EchoCanceller
from earshot.audio.playback import Playback
from earshot.config import Config
from earshot.engage import Phase
from earshot.errors import AudioDeviceError
from earshot.gate.bargein import BargeInDetector, WakeGuard
from earshot.gate.gate import Gate
from earshot.gate.vad import Vad
from earshot.gate.wakeword import build_stop_word, build_wakeword
from earshot.pipeline import Conversation
from earshot.realtime.connection import ConnectFn, Link
from earshot.realtime.mcp import session_tools
from earshot.realtime.timertools import TimerControl
from earshot.realtime.tools import AmixerMixer, ToolRunner
from earshot.volume import VOLUME_FILE, Volume

__all__ = ["App", "Parts", "build"]

logger = logging.getLogger(__name__)


class App(Protocol):
    """What the built parts report to, and ask of, whoever runs them."""

    def on_phase(self, old: Phase, new: Phase, reason: str) -> None:
        """The engagement moved from ``old`` to ``new``."""

    def on_hook(self, name: str, data: dict[str, Any]) -> None:
        """An event hook fires (``wake``, ``error``, ``offline``…)."""

    def run_tool(self, call_id: str, name: str, arguments: str) -> None:
        """The model called a tool; its result goes back through ``parts.link.tool_result``."""

    def on_record(self, kind: str, pcm: NDArray[np.int16], info: dict[str, Any]) -> None:
        """Audio worth a debug recording (a wake hit, a user turn)."""

    def on_playback_event(self, ev: Any) -> None:
        """A ``PlaybackStarted`` / ``PlaybackFinished`` from the playback (hand it to the conversation)."""

    def cancel_tools(self) -> None:
        """The engagement ended: cancel the tool calls still running."""

    def stop_ring(self, by: str) -> None:
        """A ringing timer was answered (the wake word, the button, speech over it)."""

    async def headers(self) -> Mapping[str, str]:
        """Fresh auth headers for one connection attempt."""


@dataclass
class Parts:
    """Everything :func:`build` made.

    The supervisor runs ``playback.run()``, ``link.run()``, the capture loop over ``source.chunks()`` and
    the link's events into ``conversation``, and closes the audio edges.
    """

    config: Config
    source: Any
    """The microphone (``AudioSource``)."""
    sink: Any
    """The speaker (``AudioSink``)."""
    playback: Playback
    link: Link
    tools: ToolRunner
    conversation: Conversation
    volume: Volume


def build(
    config: Config,
    app: App,
    *,
    state_dir: Path,
    environ: Mapping[str, str],
    stats: Any | None = None,
    audio: tuple[Any, Any] | None = None,
    connect: ConnectFn | None = None,
    refused: Mapping[str, str] | None = None,
    timers: TimerControl | None = None,
) -> Parts:
    """Build and wire the parts of an earshot (see the module docstring).

    Args:
        config: the validated configuration.
        app: receives what the parts report (:class:`App`).
        state_dir: where enrolled wake-word templates live.
        environ: the environment tools run with (the key is never in it) and the tool socket is read from.
        stats: the daemon's counters, or None.
        audio: ``(source, sink)`` to use instead of opening ``config.audio``.
        connect: opens the WebSocket instead of :func:`earshot.realtime.connection.open_websocket`.
        refused: native parts not to load, name -> why (:func:`earshot.doctor.refusals`: they crashed
            in ``earshot doctor`` here): ``wakeword`` (then only the button and the control socket
            engage), ``vad`` (webrtcvad without Silero), ``canceller`` (half duplex while speaking).
        timers: the daemon's timers, driven by the ``timers`` built-in tools (None: not offered).

    Raises:
        ConfigError: a part cannot be built from this config (e.g. nothing enrolled for ``template``).
        AudioDeviceError: the file backend's input cannot be read.
    """
    source, sink = audio if audio is not None else open_audio(config.audio)
    playback = Playback(sink, prebuffer_ms=config.audio.output.prebuffer_ms, on_event=app.on_playback_event)
    tool_socket = environ.get(toolexec.ENV_SOCKET)
    remote = functools.partial(toolexec.call, Path(tool_socket)) if tool_socket else None
    volume = _volume(config, sink, state_dir)
    mixer = volume if "volume" in config.realtime.builtin_tools else None
    tools = ToolRunner(config.realtime, mixer=mixer, env=dict(environ), remote=remote, timers=timers)
    mcp = functools.partial(session_tools, config.realtime, environ) if config.realtime.mcp_servers else None
    link = Link(config.realtime, headers=app.headers, tools=tools.specs(), connect=connect, mcp_tools=mcp)
    gate, echo, bargein, guard = _build_gate(config, state_dir, refused or {})
    conversation = Conversation(
        config,
        gate=gate,
        playback=playback,
        link=link,
        echo=echo,
        bargein=bargein,
        wake_guard=guard,
        stats=stats,
        on_phase=app.on_phase,
        on_hook=app.on_hook,
        run_tool=app.run_tool,
        on_record=app.on_record,
        set_capture_latency=source.set_low_latency,
        cancel_tools=app.cancel_tools,
        stop_ring=app.stop_ring,
    )
    return Parts(config, source, sink, playback, link, tools, conversation, volume)


def _volume(config: Config, sink: Any, state_dir: Path) -> Volume:
    output = config.audio.output
    mixer = AmixerMixer.from_config(output) if output.volume_control == "mixer" else None
    return Volume(sink, base_db=output.volume_db, mixer=mixer, path=state_dir / VOLUME_FILE)


def _build_gate(config: Config, state_dir: Path, refused: Mapping[str, str]) -> tuple[Gate, Any, Any, Any]:
    """The gate and, when enabled, the echo canceller, barge-in detector and wake guard."""
    for name, why in refused.items():
        logger.warning("not loading the %s: %s (run `earshot doctor` again once fixed)", name, why)
    engine = None
    if config.gate.mode == "wakeword" and "wakeword" not in refused:
        engine = build_wakeword(config.gate.wakeword, state_dir)
    stop = build_stop_word(config.gate.stop_word, state_dir) if "wakeword" not in refused else None
    vad = Vad(config.gate.vad, silero=None) if "vad" in refused else None
    gate = Gate(config.gate, wakeword=engine, vad=vad, stop_word=stop)
    echo = None
    if config.bargein.echo_cancel and "canceller" not in refused:
        try:
            echo = EchoCanceller(filter_ms=config.bargein.echo_filter_ms)
        except AudioDeviceError as exc:
            logger.warning("no echo canceller (%s): half duplex while speaking", exc)
    bargein = BargeInDetector(config.bargein)
    guard = WakeGuard() if echo is not None else None
    silero = gate.vad.silero
    logger.info(
        "wake word: %s; stop word: %s; VAD: webrtcvad%s; echo canceller: %s",
        ", ".join(getattr(engine, "names", [engine.name])) if engine is not None else "none",
        stop.name if stop is not None else "none",
        f" + Silero ({type(silero).__name__})" if silero is not None else " only",
        echo.library if echo is not None else "none",
    )
    return gate, echo, bargein, guard
