"""A raw websockets client for driving the emulator (no daemon code involved)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection, connect

from earshot.emulator import Emulator, EmulatorOptions
from earshot.emulator.schema import validate_server_event
from tests.support.speech import read_wav, silence, synth

MODEL = "gpt-realtime-2.1"


class Client:
    """Sends GA client events and reads server events, validating every one against the SDK union."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._n = 0

    async def send(self, event: dict[str, Any]) -> str:
        self._n += 1
        event = {"event_id": f"evt_{self._n}", **event}
        await self.ws.send(json.dumps(event))
        return str(event["event_id"])

    async def recv(self) -> dict[str, Any]:
        raw = await self.ws.recv()
        assert isinstance(raw, str)
        problems = validate_server_event(raw)
        assert not problems, (problems, raw[:500])
        event: dict[str, Any] = json.loads(raw)
        self.events.append(event)
        return event

    async def until(self, kind: str) -> dict[str, Any]:
        while True:
            event = await self.recv()
            if event["type"] == kind:
                return event

    async def append(self, pcm: NDArray[np.int16], chunk_ms: int = 40, rate_hz: int = 24000) -> None:
        step = rate_hz * chunk_ms // 1000
        for i in range(0, pcm.size, step):
            chunk = pcm[i : i + step].astype("<i2").tobytes()
            await self.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def session_update(**audio_input: Any) -> dict[str, Any]:
    td = {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": MODEL,
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": {"type": "far_field"},
                    "turn_detection": td,
                    **audio_input,
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
            },
        },
    }


def speech(text: str = "hey there, what time is it", rate_hz: int = 24000) -> NDArray[np.int16]:
    pcm, rate = read_wav(synth(text, rate_hz=rate_hz))
    assert rate == rate_hz
    return pcm


def spoken_turn(text: str = "hey there, what time is it") -> NDArray[np.int16]:
    """300 ms of silence, the speech, 1 s of silence (enough for a 500 ms VAD silence)."""
    return np.concatenate([silence(0.3, 24000), speech(text), silence(1.0, 24000)]).astype(np.int16)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorOptions(strict=True, reply_rate=20.0, ping_interval_s=None)) as emu:
        yield emu
        assert not [v for v in emu.violations if v.direction == "server"], emu.violations


def open_client(emu: Emulator, *, key: str = "sk-test", query: str = f"?model={MODEL}", **headers: str) -> Any:
    return connect(
        emu.url + query,
        additional_headers={"Authorization": f"Bearer {key}", **headers},
        max_size=None,
        compression=None,
        open_timeout=5,
        ping_interval=None,
    )


async def ready(emu: Emulator, ws: ClientConnection, **audio_input: Any) -> Client:
    client = Client(ws)
    assert (await client.recv())["type"] == "session.created"
    await client.send(session_update(**audio_input))
    await client.until("session.updated")
    return client
