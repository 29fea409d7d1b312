"""Remote MCP servers as tools (issue 19): the session declares them with the token from a file, the
service's approval requests are answered as configured, and the answer is spoken.

The emulator plays the service: it lists the server's tools, asks for approval when the server says
``always``, runs the call (the server "answers" at once) and speaks what it said.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from earshot.emulator import Emulator, EmulatorOptions, FunctionCall, Reply, Script, Turn
from tests.integration.replies import check_events, locate, reply_pcm
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

TOKEN = "mcp-token-0123456789"


def _model(call: FunctionCall) -> Script:
    def reply(turn: Turn) -> Reply:
        return Reply(function_call=call) if turn.number == 1 else Reply(text="Sure.")

    return reply


@pytest.mark.parametrize(
    ("tool", "said"),
    [("lights_off", "The lights_off tool said lights_off done."), ("unlock_door", "The unlock_door call was refused.")],
)
async def test_an_mcp_call_is_approved_only_as_configured_and_its_answer_spoken(
    tmp_path: Path, tool: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "home-token"
    token_file.write_text(TOKEN + "\n")
    server: dict[str, Any] = {
        "server_label": "home",
        "server_url": "https://mcp.example.net/mcp",
        "require_approval": "always",
        "approve": ["lights_off"],
        "authorization_file": str(token_file),
    }
    question, _ = read_wav(synth("turn off the lights"))
    script = _model(FunctionCall(tool, {"room": "kitchen"}, server_label="home"))
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(
            tmp_path,
            concat(silence(0.5), question, silence(8.0)),
            url=emu.url,
            config={"realtime": {"mcp_servers": [server]}},
        )
        check_events(emu)
    assert run.exit_code == 0
    record = emu.sessions[0]
    update = next(e for e in record.client_events if e.get("type") == "session.update")["session"]
    mcp = [t for t in update["tools"] if t["type"] == "mcp"]
    assert mcp == [
        {
            "type": "mcp",
            "server_label": "home",
            "server_url": "https://mcp.example.net/mcp",
            "require_approval": "always",
            "authorization": TOKEN,
        }
    ]
    answers = [
        e["item"]
        for e in record.client_events
        if e.get("type") == "conversation.item.create" and e["item"].get("type") == "mcp_approval_response"
    ]
    assert [a["approve"] for a in answers] == [tool == "lights_off"]
    spoken = locate(run.output, await reply_pcm(said))
    assert spoken is not None, run.timeline
    assert spoken.played == spoken.length
    assert "mcp home." in caplog.text
    assert TOKEN not in caplog.text  # the token goes to the service, never to a log


async def test_a_server_whose_token_cannot_be_read_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = {
        "server_label": "home",
        "server_url": "https://mcp.example.net/mcp",
        "authorization_file": str(tmp_path / "none"),
    }
    question, _ = read_wav(synth("hello there"))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(
            tmp_path,
            concat(silence(0.5), question, silence(4.0)),
            url=emu.url,
            config={"realtime": {"mcp_servers": [server]}},
        )
        check_events(emu)
    assert run.exit_code == 0
    update = next(e for e in emu.sessions[0].client_events if e.get("type") == "session.update")["session"]
    assert not [t for t in update["tools"] if t["type"] == "mcp"]
    assert "MCP server home left out" in caplog.text
