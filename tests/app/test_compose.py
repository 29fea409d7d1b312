"""The composition root: the parts :func:`earshot.compose.build` wires run a whole exchange with no daemon.

The default gate (wake word, earcons on) on the file backend, against the emulator: a test plays the
supervisor's part in a few lines (capture into the conversation, the link's events into it, playback),
and an injected ``connect`` counts every WebSocket the link opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from earshot.compose import build
from earshot.config import RealtimeConfig, load_config
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from earshot.engage import Phase
from earshot.realtime.connection import open_websocket
from tests.support.daemon import DEFAULT_GATE, merge
from tests.support.speech import concat, read_wav, silence, synth, write_wav


class RecordingApp:
    """An :class:`earshot.compose.App` that keeps what it is told."""

    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.hooks: list[str] = []
        self.conversation: Any = None
        self.tools_cancelled = 0
        self.rings_stopped: list[str] = []

    def on_phase(self, old: Phase, new: Phase, reason: str) -> None:
        self.phases.append(new)

    def on_hook(self, name: str, data: dict[str, Any]) -> None:
        self.hooks.append(name)

    def run_tool(self, call_id: str, name: str, arguments: str) -> None:
        raise AssertionError("no tool is called in this exchange")

    def on_record(self, kind: str, pcm: NDArray[np.int16], info: dict[str, Any]) -> None:
        pass

    def on_playback_event(self, ev: Any) -> None:
        self.conversation.on_playback_event(ev, asyncio.get_running_loop().time())

    def cancel_tools(self) -> None:
        self.tools_cancelled += 1

    def stop_ring(self, by: str) -> None:
        self.rings_stopped.append(by)

    async def headers(self) -> Mapping[str, str]:
        return {"Authorization": "Bearer sk-test-key"}


async def test_built_parts_run_a_wake_word_exchange_without_the_daemon(tmp_path: Path) -> None:
    wake, _ = read_wav(synth("hey jarvis, what is the weather like"))
    pcm = concat(silence(1.0), wake, silence(7.0))
    opened: list[str] = []

    async def connect(url: str, headers: Mapping[str, str], config: RealtimeConfig) -> Any:
        opened.append(url)
        return await open_websocket(url, headers, config)

    reply = "It is sunny."
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[reply]))) as emu:
        url = emu.url
        cfg = {
            "audio": {
                "backend": "file",
                "input": {"file": str(write_wav(tmp_path / "in.wav", pcm, 16000))},
                "output": {"file": str(tmp_path / "out.wav")},
                "echo": {"delay_ms": 20, "gain_db": -6},  # a room: response and soft clip by default
            },
            "gate": merge(DEFAULT_GATE, {"follow_up_s": 1.0}),
            "realtime": {"url": emu.url, "idle_close_s": 0.0},
        }
        path = tmp_path / "earshot.yaml"
        path.write_text(yaml.safe_dump(cfg))
        config = load_config(path)
        app = RecordingApp()
        parts = build(config, app, state_dir=tmp_path, environ={}, connect=connect)
        conv = app.conversation = parts.conversation
        loop = asyncio.get_running_loop()

        async def capture() -> None:
            async for chunk in parts.source.chunks():
                ref = parts.sink.pop_reference()
                if conv.echo is not None and len(ref):
                    conv.echo.add_reference(ref)
                conv.on_capture(chunk.pcm, chunk.position, loop.time())

        async def link_events() -> None:
            async for ev in parts.link.events():
                conv.on_link_event(ev, loop.time())

        async with asyncio.timeout(60):
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(parts.playback.run()),
                    tg.create_task(parts.link.run()),
                    tg.create_task(link_events()),
                ]
                await capture()
                while conv.busy() or conv.phase is not Phase.IDLE:
                    await asyncio.sleep(0.05)
                    conv.tick(loop.time())
                for task in tasks:
                    task.cancel()
            await parts.source.aclose()

    assert len(opened) == 1  # the injected edge opened the one connection
    assert opened[0].startswith(url)
    assert Phase.SPEAKING in app.phases
    assert app.phases[-1] is Phase.IDLE
    assert "wake" in app.hooks
    assert app.tools_cancelled == 1  # the engagement's end cancels whatever tool still ran
    assert [r.status for s in emu.sessions for r in s.responses] == ["completed"]
    assert [c for s in emu.sessions for c in s.cancels] == []
    assert any("reply played out" in what for _, what in conv.timeline)
