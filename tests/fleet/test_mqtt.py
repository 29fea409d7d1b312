"""The real daemon on a real mosquitto (passwords, per-device ACLs), seen and driven as Home Assistant would.

The daemon runs on the file backend with the gate as a plain install has it; the emulator answers.
A test client, logged in as Home Assistant's user, reads discovery and state and sends commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from earshot.app import Daemon
from earshot.control import format_status, request
from earshot.emulator import Emulator, EmulatorOptions
from tests.fleet.broker import Broker, mosquitto
from tests.fleet.ha_schema import problems
from tests.integration.replies import check_events, client_types
from tests.support.daemon import DEFAULT_GATE, run_daemon
from tests.support.speech import concat, read_wav, silence, synth

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None, reason="mosquitto (a Debian package; scripts/setup installs it on x86-64)"
)

USERS = {"ha": "ha-password", "kitchen-1": "kitchen-password", "hall-2": "hall-password"}


class HomeAssistant:
    """A client that keeps every message, and lets a test wait for one."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.messages: list[tuple[str, bytes, bool]] = []
        self.retained: dict[str, bytes] = {}
        self._new = asyncio.Condition()

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            topic = str(message.topic)
            async with self._new:
                self.messages.append((topic, payload, message.retain))
                self.retained[topic] = payload
                self._new.notify_all()

    async def wait(self, what: Callable[[], Any], within_s: float = 20.0) -> Any:
        async with asyncio.timeout(within_s), self._new:
            while not (found := what()):
                await self._new.wait()
            return found

    def state(self) -> dict[str, Any] | None:
        raw = self.retained.get("earshot/kitchen-1/state")
        return json.loads(raw) if raw else None

    def results(self) -> list[dict[str, Any]]:
        return [json.loads(p) for t, p, _ in self.messages if t == "earshot/kitchen-1/result"]


@contextlib.asynccontextmanager
async def home_assistant(broker: Broker) -> AsyncIterator[HomeAssistant]:
    async with aiomqtt.Client("127.0.0.1", broker.port, username="ha", password=USERS["ha"], identifier="ha") as client:
        await client.subscribe("homeassistant/#", qos=1)
        await client.subscribe("earshot/#", qos=1)
        ha = HomeAssistant(client)
        pump = asyncio.create_task(ha.pump())
        try:
            yield ha
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


def device_config(tmp_path: Path, broker_url: str) -> dict[str, Any]:
    (tmp_path / "mqtt-password").write_text(USERS["kitchen-1"] + "\n")
    return {
        "gate": DEFAULT_GATE,
        "device": {"id": "kitchen-1", "name": "Kitchen speaker", "room": "kitchen", "site": "home"},
        "mqtt": {"url": broker_url, "password_file": str(tmp_path / "mqtt-password")},
    }


async def test_home_assistant_sees_the_device_and_drives_it(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def operator(daemon: Daemon) -> None:
        async with home_assistant(broker) as ha:
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"online")
            discovery = await ha.wait(
                lambda: (
                    (d := [(t, p) for t, p in ha.retained.items() if t.startswith("homeassistant/")])
                    and len(d) == 12
                    and d
                )
            )
            seen["discovery"] = discovery
            await ha.wait(lambda: (s := ha.state()) and s["phase"] == "idle" and s["volume"] is not None)
            # Mute and unmute (a switch), the volume (a number).
            await ha.client.publish("earshot/kitchen-1/set/mute", b"ON", qos=1)
            await ha.wait(lambda: (s := ha.state()) and s["muted"])
            await ha.client.publish("earshot/kitchen-1/set/mute", b"OFF", qos=1)
            await ha.wait(lambda: (s := ha.state()) and not s["muted"])
            await ha.client.publish("earshot/kitchen-1/set/volume", b"40", qos=1)
            await ha.wait(lambda: (s := ha.state()) and s["volume"] == 40)
            # The control socket's own requests, answered with their id; a bad one is said to be bad.
            await ha.client.publish("earshot/kitchen-1/cmd", json.dumps({"cmd": "timers", "id": 7}).encode(), qos=1)
            await ha.client.publish(
                "earshot/kitchen-1/cmd", json.dumps({"cmd": "mute", "args": 3, "id": 8}).encode(), qos=1
            )
            await ha.client.publish("earshot/kitchen-1/cmd", b"not json", qos=1)
            await ha.wait(lambda: len(ha.results()) >= 3)
            seen["results"] = ha.results()
            # An oversize command is dropped; the device still answers the next one.
            await ha.client.publish("earshot/kitchen-1/cmd/say", b"x" * 10000, qos=1)
            await ha.client.publish("earshot/kitchen-1/cmd/say", b"Dinner is ready.", qos=1)
            await ha.wait(lambda: (s := ha.state()) and s["phase"] == "speaking")
            await ha.wait(lambda: (s := ha.state()) and s["phase"] == "idle")
            # Another device's credentials cannot reach this one's topics, nor publish as it.
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username="hall-2", password=USERS["hall-2"], identifier="hall-2"
            ) as hall:
                await hall.publish("earshot/kitchen-1/set/mute", b"ON", qos=1)
                await hall.publish("earshot/hall-2/availability", b"online", qos=1, retain=True)
            await ha.wait(lambda: ha.retained.get("earshot/hall-2/availability") == b"online")
            seen["muted_by_hall"] = (ha.state() or {}).get("muted")
            assert daemon.mqtt is not None
            seen["bridge"] = (daemon.mqtt.connects, daemon.mqtt.commands, daemon.mqtt.refused)
            seen["status"] = await asyncio.to_thread(request, tmp_path / "control.sock", "status")
            daemon.stop("the test is done")
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"offline")
            seen["states"] = [json.loads(p) for t, p, _ in ha.messages if t == "earshot/kitchen-1/state"]

    with mosquitto(tmp_path / "broker", USERS) as broker:
        async with Emulator(EmulatorOptions(strict=True)) as emu:
            run = await run_daemon(
                tmp_path, silence(60.0), url=emu.url, config=device_config(tmp_path, broker.url), during=operator
            )
            check_events(emu)
    assert run.exit_code == 0
    for topic, payload in seen["discovery"]:
        assert problems(topic, json.loads(payload)) == [], topic
    results = seen["results"]
    assert results[0] == {"timers": [], "ok": True, "id": 7}
    assert results[1]["ok"] is False
    assert results[1]["id"] == 8
    assert "args" in results[1]["error"]
    assert results[2]["ok"] is False
    # The announcement was said (the oversize one never reached the daemon).
    creates = [e for e in emu.sessions[0].client_events if e.get("type") == "response.create"]
    assert len(creates) == 1
    assert "Dinner is ready." in creates[0]["response"]["instructions"]
    assert seen["muted_by_hall"] is False
    connects, commands, refused = seen["bridge"]
    assert connects == 1
    assert commands == 6  # mute, unmute, volume, the two JSON requests, say
    assert refused == 2  # the bad JSON and the oversize say
    mqtt = seen["status"]["mqtt"]
    assert mqtt["connected"] is True
    assert mqtt["topic"] == "earshot/kitchen-1"
    assert mqtt["commands"] == 6
    assert "mqtt:" in format_status(seen["status"])
    # State messages only on change: no two in a row are the same.
    states = seen["states"]
    assert all(a != b for a, b in itertools.pairwise(states))


async def test_a_broker_down_or_mute_never_touches_the_exchange(tmp_path: Path) -> None:
    """The broker refuses connections, then (a second run) accepts TCP and never answers: the question is answered."""
    wake, _ = read_wav(synth("hey jarvis, what time is it"))

    held: list[asyncio.StreamWriter] = []

    async def mute_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read()  # takes CONNECT, says nothing
        writer.close()

    silent = await asyncio.start_server(mute_server, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    closed = await asyncio.start_server(mute_server, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    try:
        for name, port in (("refused", closed_port), ("silent", silent_port)):
            where = tmp_path / name
            where.mkdir()
            async with Emulator(EmulatorOptions(strict=True)) as emu:
                run = await run_daemon(
                    where,
                    concat(silence(0.5), wake, silence(6.0)),
                    url=emu.url,
                    config=device_config(where, f"mqtt://127.0.0.1:{port}"),
                )
                check_events(emu)
            assert run.exit_code == 0, name
            assert run.marks("engaged by wake word"), (name, run.timeline)
            assert len(emu.sessions[0].responses) == 1, name
            assert "input_audio_buffer.append" in client_types(emu)
            assert run.daemon.mqtt is not None
            assert run.daemon.mqtt.connects == 0
            assert run.daemon.mqtt.outbox.size <= run.daemon.config.mqtt.queue_max_bytes
    finally:
        silent.close()
        for writer in held:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await silent.wait_closed()


@pytest.mark.timeout(60)
async def test_the_last_will_says_offline_when_the_device_dies(tmp_path: Path) -> None:
    """A device killed outright (no goodbye): the broker publishes its will once the keepalive lapses."""
    script = tmp_path / "device.py"
    script.write_text(
        "import asyncio, sys\n"
        "from earshot.config import parse_config\n"
        "from earshot.mqttlink import MqttBridge\n"
        "cfg = parse_config(sys.argv[1])\n"
        "async def answer(m): return {'ok': True}\n"
        "bridge = MqttBridge(cfg, status=lambda: {}, answer=answer, environ={}, version='test')\n"
        "async def main():\n"
        "    task = asyncio.create_task(bridge.run())\n"
        "    while not bridge.connected: await asyncio.sleep(0.05)\n"
        "    print('connected', flush=True)\n"
        "    await task\n"
        "asyncio.run(main())\n"
    )
    (tmp_path / "pw").write_text(USERS["kitchen-1"])
    with mosquitto(tmp_path / "broker", USERS) as broker:
        config = json.dumps(
            {
                "device": {"id": "kitchen-1"},
                "mqtt": {
                    "url": broker.url,
                    "password_file": str(tmp_path / "pw"),
                    "keepalive_s": 5,
                    "discovery": False,
                },
            }
        )
        async with home_assistant(broker) as ha:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), config, stdout=asyncio.subprocess.PIPE
            )
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"connected"
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"online")
            proc.kill()
            await proc.wait()
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"offline", within_s=30.0)


async def test_a_broker_that_goes_away_mid_session_is_found_again(tmp_path: Path) -> None:
    """The broker dies while the device is connected and comes back empty: the device says it all again."""
    seen: dict[str, Any] = {}
    stack = contextlib.ExitStack()
    first = stack.enter_context(mosquitto(tmp_path / "broker-1", USERS))

    async def operator(daemon: Daemon) -> None:
        async with home_assistant(first) as ha:
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"online")
            await ha.wait(lambda: (s := ha.state()) and s["phase"] == "idle")
        await asyncio.to_thread(stack.close)  # the broker dies under the connected device (the stack is reused)
        again = await asyncio.to_thread(stack.enter_context, mosquitto(tmp_path / "broker-2", USERS, port=first.port))
        async with home_assistant(again) as ha:
            # A new broker with nothing retained: availability, discovery and the state come again.
            await ha.wait(lambda: ha.retained.get("earshot/kitchen-1/availability") == b"online", within_s=30.0)
            await ha.wait(lambda: ha.state() is not None)
            await ha.wait(lambda: sum(t.startswith("homeassistant/") for t in ha.retained) == 12)
            await ha.client.publish("earshot/kitchen-1/set/mute", b"ON", qos=1)
            await ha.wait(lambda: (s := ha.state()) and s["muted"])
        assert daemon.mqtt is not None
        seen["connects"] = daemon.mqtt.connects
        daemon.stop("the test is done")

    config = device_config(tmp_path, first.url)
    config["mqtt"]["reconnect_max_s"] = 1.0
    try:
        async with Emulator(EmulatorOptions(strict=True)) as emu:
            run = await run_daemon(tmp_path, silence(60.0), url=emu.url, config=config, during=operator)
    finally:
        stack.close()
    assert run.exit_code == 0
    assert seen["connects"] == 2


async def test_a_flood_of_commands_stays_bounded_and_the_device_answers_after_it(tmp_path: Path) -> None:
    """500 commands at once (QoS 0, as fast as the broker takes them): what the device takes is bounded,
    it keeps up with what it takes, and a request after the flood is answered."""
    seen: dict[str, Any] = {}

    async def operator(daemon: Daemon) -> None:
        async with home_assistant(broker) as ha:
            await ha.wait(lambda: (s := ha.state()) and s["phase"] == "idle")
            for _ in range(500):
                await ha.client.publish("earshot/kitchen-1/cmd", b'{"cmd": "status"}', qos=0)
            # What the device could not take was dropped (aiomqtt's queue is bounded): ask until it answers.
            for attempt in range(12):
                request_ = json.dumps({"cmd": "timers", "id": f"after {attempt}"}).encode()
                await ha.client.publish("earshot/kitchen-1/cmd", request_, qos=1)
                with contextlib.suppress(TimeoutError):
                    await ha.wait(lambda: any(str(r.get("id")).startswith("after") for r in ha.results()), 5.0)
                    break
            seen["answered_after"] = attempt
            assert daemon.mqtt is not None
            seen["report"] = daemon.mqtt.report()
            seen["results"] = len(ha.results())
            daemon.stop("the test is done")

    with mosquitto(tmp_path / "broker", USERS) as broker:
        async with Emulator(EmulatorOptions(strict=True)) as emu:
            run = await run_daemon(
                tmp_path, silence(90.0), url=emu.url, config=device_config(tmp_path, broker.url), during=operator
            )
    assert run.exit_code == 0
    report = seen["report"]
    assert report["queued_bytes"] <= 65536
    assert report["commands"] <= 501
    assert report["connects"] == 1  # the flood did not cost the connection
    assert seen["answered_after"] < 12
