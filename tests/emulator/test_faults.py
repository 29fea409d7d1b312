"""Every fault knob does what it says, seen from a raw websockets client; and `earshot emulate` runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from earshot.emulator import Emulator, EmulatorOptions, Faults
from tests.emulator.conftest import MODEL, Client, open_client, ready, spoken_turn


async def drain(client: Client) -> None:
    while True:
        await client.recv()


def emulator(**faults: object) -> Emulator:
    return Emulator(EmulatorOptions(strict=True, reply_rate=20.0, faults=Faults(**faults)))  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [503, 429])
async def test_refuse_with_http_status_then_accept(status: int) -> None:
    """refuse_status answers the upgrade with that status, refuse_times limits it, then connections succeed."""
    async with emulator(refuse_status=status, refuse_times=2) as emu:
        for _ in range(2):
            with pytest.raises(InvalidStatus) as info:
                async with open_client(emu):
                    pass
            assert info.value.response.status_code == status
        async with open_client(emu) as ws:
            assert (await Client(ws).recv())["type"] == "session.created"
        assert emu.handshakes == 3


async def test_refuse_with_tcp_close() -> None:
    """refuse_status=0 closes the TCP connection instead of answering."""
    async with emulator(refuse_status=0) as emu:
        with pytest.raises((InvalidMessage, OSError, EOFError)):
            async with open_client(emu):
                pass


async def test_stalled_handshake_times_out_the_client() -> None:
    """stall_handshake_s holds the upgrade: a client with a shorter open timeout gives up."""
    async with emulator(stall_handshake_s=float("inf"), stall_times=1) as emu:
        with pytest.raises(TimeoutError):
            async with connect(
                emu.url + f"?model={MODEL}", additional_headers={"Authorization": "Bearer k"}, open_timeout=0.3
            ):
                pass
        async with open_client(emu) as ws:  # the budget was one stall
            assert (await Client(ws).recv())["type"] == "session.created"


async def test_drop_after_n_events() -> None:
    """drop_after_events aborts the TCP connection (no close frame: 1006) after exactly N events."""
    async with emulator(drop_after_events=2, drop_times=1) as emu:
        async with open_client(emu) as ws:
            client = Client(ws)
            assert (await client.recv())["type"] == "session.created"
            assert (await client.recv())["type"] == "conversation.created"
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert ws.close_code == 1006
        await emu.wait_for(lambda: emu.sessions[0].close_code is not None)
        assert emu.sessions[0].close_code == 1006
        async with open_client(emu) as ws:  # drop_times=1: the next connection lives
            client = await ready(emu, ws)
        assert emu.sessions[1].close_code is None or emu.sessions[1].close_code == 1000


@pytest.mark.parametrize(
    ("event", "last_type"),
    [
        ("input_audio_buffer.speech_started", "input_audio_buffer.speech_started"),  # during the user's turn
        ("response.output_audio.delta", "response.output_audio.delta"),  # mid-reply
    ],
)
async def test_drop_on_event(event: str, last_type: str) -> None:
    """drop_on_event aborts right after the first event of that type."""
    async with emulator(drop_on_event=event) as emu, open_client(emu) as ws:
        client = await ready(emu, ws)
        await client.append(spoken_turn())
        with pytest.raises(ConnectionClosed):
            await drain(client)
        assert client.events[-1]["type"] == last_type
        assert ws.close_code == 1006


async def test_half_open_client_ping_times_out() -> None:
    """half_open: the server stops reading, so the client's pings go unanswered and it gives up."""
    async with emulator(half_open_after_events=2) as emu:
        async with connect(
            emu.url + f"?model={MODEL}",
            additional_headers={"Authorization": "Bearer k"},
            ping_interval=0.1,
            ping_timeout=0.2,
            close_timeout=0.2,
        ) as ws:
            client = Client(ws)
            await client.recv()
            await client.recv()
            with pytest.raises(ConnectionClosed) as info:
                await client.recv()  # nothing else ever arrives
        assert info.value.rcvd is None  # no close frame from the server: a keepalive timeout
        assert [e["type"] for e in client.events] == ["session.created", "conversation.created"]


@pytest.mark.parametrize(
    ("code", "closes"), [("insufficient_quota", True), ("invalid_api_key", True), ("server_error", False)]
)
async def test_error_code_knob(code: str, closes: bool) -> None:
    """error_code sends that error after session.created; fatal codes then close with 1008."""
    async with emulator(error_code=code) as emu, open_client(emu) as ws:
        client = Client(ws)
        error = await client.until("error")
        assert error["error"]["code"] == code
        if closes:
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert ws.close_code == 1008
        else:
            await client.send({"type": "input_audio_buffer.clear"})
            assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_error_on_event_and_runtime_error() -> None:
    """error_on_event fires after that event; send_error at run time reaches open connections."""
    async with emulator(error_code="server_error", error_on_event="session.updated") as emu, open_client(emu) as ws:
        client = await ready(emu, ws)
        assert (await client.recv())["error"]["code"] == "server_error"
        emu.send_error("rate_limit_exceeded")
        assert (await client.recv())["error"]["code"] == "rate_limit_exceeded"


async def test_malformed_unknown_and_huge_messages() -> None:
    """Malformed JSON, an unknown event type and a ~10 MB valid event are sent where asked."""
    async with emulator(malformed_after_events=1, unknown_after_events=2) as emu, open_client(emu) as ws:
        frames = [await ws.recv() for _ in range(4)]
        # injected behind what was already queued when the Nth event went out
        assert json.loads(frames[0])["type"] == "session.created"
        assert json.loads(frames[1])["type"] == "conversation.created"
        with pytest.raises(json.JSONDecodeError):
            json.loads(frames[2])
        assert json.loads(frames[3])["type"] == "response.future_feature.delta"
        emu.send_huge()
        huge = await ws.recv()
        assert len(huge) >= 10 * 1024 * 1024
        assert json.loads(huge)["type"] == "conversation.item.retrieved"
        client = Client(ws)
        await client.send({"type": "input_audio_buffer.clear"})
        assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_delay_every_send() -> None:
    """delay_ms holds every message back by at least that long, keeping the order."""
    async with emulator(delay_ms=200) as emu:
        t0 = time.monotonic()
        async with open_client(emu) as ws:
            client = Client(ws)
            assert (await client.recv())["type"] == "session.created"
            assert time.monotonic() - t0 >= 0.2
            emu.options.faults.delay_ms = 0  # changeable at run time
            assert (await client.recv())["type"] == "conversation.created"


async def test_trickle_reply() -> None:
    """reply_rate below 1 trickles the reply: 100 ms chunks arrive no faster than 1 per 200 ms."""
    async with Emulator(EmulatorOptions(strict=True, reply_rate=0.5)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws, turn_detection=None)
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        t0 = time.monotonic()
        await client.until("response.output_audio.delta")
        await client.until("response.output_audio.delta")
        assert time.monotonic() - t0 >= 0.35


async def test_runtime_drop_and_expire() -> None:
    """drop() aborts open connections; expire() sends session_expired and closes 1001."""
    async with emulator() as emu:
        async with open_client(emu) as ws:
            await ready(emu, ws)
            emu.drop()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1006
        async with open_client(emu) as ws:
            client = await ready(emu, ws)
            emu.expire()
            assert (await client.recv())["error"]["code"] == "session_expired"
            with pytest.raises(ConnectionClosed):
                await client.recv()
            assert ws.close_code == 1001


async def test_earshot_emulate_process_runs_until_sigterm() -> None:
    """`earshot emulate` (main) prints its URL, serves a session, and exits 0 on SIGTERM."""
    code = "import sys; from earshot.emulator import main; sys.exit(main(sys.argv[1:]))"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        "--port",
        "0",
        "--fault",
        "delay_ms=1",
        "--reply",
        "hello",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": "daemon"},
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert url.startswith("ws://127.0.0.1:")
        async with connect(url + f"?model={MODEL}", additional_headers={"Authorization": "Bearer k"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, stderr.decode()
        assert b"session 0 opened" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bad_fault_argument() -> None:
    """An unknown --fault key is a usage error (exit 2), not a crash."""
    from earshot.emulator import main

    assert main(["--fault", "nonsense=1"]) == 2
