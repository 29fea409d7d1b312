"""The emulator's client_secrets: OpenAI's answer, checked against the SDK; the ek_ it mints opens sessions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from earshot.emulator import Emulator, EmulatorOptions
from earshot.realtime.auth import post

KEY = "sk-emulated-real-key"


async def mint(emu: Emulator, body: Any, key: str = KEY) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    status, data = await asyncio.to_thread(post, emu.secrets_url, json.dumps(body).encode(), headers, 5.0)
    return status, json.loads(data)


async def test_a_minted_secret_opens_a_session_with_its_session() -> None:
    body = {
        "expires_after": {"anchor": "created_at", "seconds": 60},
        "session": {"type": "realtime", "model": "gpt-realtime-mini", "instructions": "Pinned."},
    }
    async with Emulator(EmulatorOptions(api_key=KEY, secrets_port=0, strict=True)) as emu:
        status, answer = await mint(emu, body)
        assert status == 200, answer
        assert answer["value"].startswith("ek_")
        assert answer["session"]["instructions"] == "Pinned."
        assert emu.secrets.violations == []
        url = emu.url + "?model=gpt-realtime"
        async with connect(url, additional_headers={"Authorization": f"Bearer {answer['value']}"}) as ws:
            created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["model"] == "gpt-realtime-mini"
        assert created["session"]["instructions"] == "Pinned."
        assert emu.sessions[0].pinned is not None
        # An ek_ it never minted is refused at the handshake.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={"Authorization": "Bearer ek_forged"}):
                pass
        assert refused.value.response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status_"),
    [
        ({"session": {"type": "realtime", "audio": {"input": {"transcription": None}}}}, 400),  # the SDK takes no null
        ({"expires_after": {"anchor": "created_at", "seconds": 5}, "session": {"type": "realtime"}}, 400),
        ({"expires_after": {"anchor": "now", "seconds": 60}, "session": {"type": "realtime"}}, 400),
        ([], 400),
    ],
)
async def test_requests_the_sdk_would_not_send_are_refused_and_recorded(body: Any, status_: int) -> None:
    async with Emulator(EmulatorOptions(api_key=KEY, secrets_port=0)) as emu:
        status, answer = await mint(emu, body)
        assert status == status_, answer
        assert "error" in answer
        assert emu.secrets.violations
        assert emu.secrets.minted == []


async def test_a_wrong_key_is_401() -> None:
    async with Emulator(EmulatorOptions(api_key=KEY, secrets_port=0)) as emu:
        status, answer = await mint(emu, {"session": {"type": "realtime"}}, key="sk-wrong")
    assert status == 401
    assert answer["error"]["message"] == "Incorrect API key provided"
