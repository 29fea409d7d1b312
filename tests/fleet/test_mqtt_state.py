"""What a device says over MQTT and takes from it (pure): topics, state, discovery, commands, the bounded outbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from earshot.mqttstate import Outbox, Topics, discovery_messages, parse_command, state_document
from tests.fleet.ha_schema import problems

TOPICS = Topics.of("earshot", "kitchen-1", "homeassistant")


def status(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "phase": "idle",
        "connection": "disconnected",
        "muted": False,
        "uptime_s": 12.5,
        "session_age_s": None,
        "volume": {"volume": 80, "muted": False, "control": "software"},
        "timers": [
            {"id": "t1", "kind": "timer", "label": "pasta", "state": "pending", "due": "2026-12-07T18:00:00+00:00",
             "remaining_s": 540},
        ],
        "usage": {"tokens": {"audio_in": 10}, "cost_usd_estimate": 0.0123},
        "last_error": {"text": "connection refused", "time": "2026-12-07T17:00:00Z"},
        "connected_minutes_today": 3.456,
    }  # fmt: skip
    return {**base, **changes}


def test_the_state_holds_what_people_look_at_and_nothing_that_ticks() -> None:
    doc = state_document(status())
    assert doc == {
        "phase": "idle",
        "connection": "disconnected",
        "muted": False,
        "volume": 80,
        "speaker_muted": False,
        "timers_pending": 1,
        "timers_ringing": 0,
        "timers": [
            {"id": "t1", "kind": "timer", "label": "pasta", "state": "pending", "due": "2026-12-07T18:00:00+00:00"}
        ],
        "last_error": "connection refused",
        "connected_minutes_today": 3.5,
        "tokens": {"audio_in": 10},
        "cost_usd": 0.0123,
    }
    # Uptime and the time left on a timer move every second: an idle device's state does not.
    later = status(uptime_s=99.0)
    later["timers"] = [{**later["timers"][0], "remaining_s": 480}]
    assert state_document(later) == doc


def test_the_state_of_a_daemon_still_starting_is_still_a_state() -> None:
    doc = state_document({})
    assert doc["phase"] == "idle"
    assert doc["volume"] is None
    assert doc["timers"] == []


def test_every_discovery_message_is_one_home_assistant_takes() -> None:
    messages = discovery_messages(TOPICS, name="Kitchen speaker", room="kitchen", version="0.1.0")
    components = sorted(topic.split("/")[1] for topic, _ in messages)
    assert components == sorted(["sensor"] * 6 + ["binary_sensor", "switch", "number", "button", "button", "text"])
    ids = set()
    for topic, payload in messages:
        doc = json.loads(payload)
        assert problems(topic, doc) == [], (topic, doc)
        assert topic.startswith("homeassistant/")
        assert "/kitchen-1/" in topic
        assert doc["device"]["identifiers"] == ["earshot_kitchen-1"]
        assert doc["device"]["suggested_area"] == "kitchen"
        assert doc["availability_topic"] == "earshot/kitchen-1/availability"
        ids.add(doc["unique_id"])
    assert len(ids) == len(messages)
    transcript = next(json.loads(p) for t, p in messages if "last_transcript" in t)
    assert transcript["enabled_by_default"] is False


def test_the_schema_check_can_fail() -> None:
    topic, payload = discovery_messages(TOPICS, name="x", room=None, version="1")[0]
    doc = json.loads(payload)
    assert problems(topic, {**doc, "colour": "red"}) == [f"{topic}: unknown option 'colour'"]
    assert problems(topic.replace("sensor", "switch"), doc)  # a switch needs a command topic
    assert problems(topic, {**doc, "state_topic": "earshot/#"})


def test_a_dotted_device_id_makes_a_node_id_home_assistant_takes() -> None:
    topics = Topics.of("fleet/site-a", "kiosk.7", "homeassistant")
    assert topics.base == "fleet/site-a/kiosk.7"
    assert topics.node_id == "kiosk_7"
    for topic, payload in discovery_messages(topics, name="k", room=None, version="1"):
        assert problems(topic, json.loads(payload)) == []


@pytest.mark.parametrize(
    ("topic", "payload", "request_"),
    [
        ("earshot/kitchen-1/set/mute", b"ON", {"cmd": "mute"}),
        ("earshot/kitchen-1/set/mute", b"off", {"cmd": "unmute"}),
        ("earshot/kitchen-1/set/volume", b"42.4", {"cmd": "volume", "args": {"set": 42}}),
        ("earshot/kitchen-1/cmd/engage", b"PRESS", {"cmd": "engage"}),
        ("earshot/kitchen-1/cmd/stop", b"", {"cmd": "stop"}),
        ("earshot/kitchen-1/cmd/say", "Dîner est prêt".encode(), {"cmd": "say", "args": {"text": "Dîner est prêt"}}),
        ("earshot/kitchen-1/cmd/say", b'{"text": "Hi", "listen": true}',
         {"cmd": "say", "args": {"text": "Hi", "listen": True}}),
        ("earshot/kitchen-1/cmd", b'{"cmd": "timers", "id": 7}', {"cmd": "timers", "id": 7}),
    ],
)  # fmt: skip
def test_home_assistant_topics_are_the_control_sockets_commands(
    topic: str, payload: bytes, request_: dict[str, Any]
) -> None:
    assert parse_command(TOPICS, topic, payload) == (request_, "")


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("earshot/kitchen-1/set/mute", b"maybe"),
        ("earshot/kitchen-1/set/volume", b"101"),
        ("earshot/kitchen-1/set/volume", b"loud"),
        ("earshot/kitchen-1/set/volume", b"nan"),
        ("earshot/kitchen-1/cmd/say", b""),
        ("earshot/kitchen-1/cmd/say", b"\xff\xfe"),
        ("earshot/kitchen-1/cmd", b"[1]"),
        ("earshot/kitchen-1/cmd", b'{"cmd": "follow"}'),
        ("earshot/kitchen-1/cmd", b"{"),
        ("earshot/kitchen-1/cmd/reboot", b"now"),
        ("earshot/hall-2/cmd/engage", b"PRESS"),
    ],
)
def test_anything_else_is_dropped_with_a_reason(topic: str, payload: bytes) -> None:
    request_, why = parse_command(TOPICS, topic, payload)
    assert request_ is None
    assert why


def test_the_outbox_keeps_the_newest_state_and_its_bound() -> None:
    box = Outbox(max_bytes=200)
    box.put("a/state", b'{"phase":"idle"}', retain=True)
    box.put("a/avail", b"online", retain=True)
    box.put("a/state", b'{"phase":"speaking"}', retain=True)  # replaces the waiting one, moves to the end
    assert len(box) == 2
    assert box.peek() == ("a/avail", "a/avail", b"online", True)
    key, _topic, payload, _ = box.peek() or ("", "", b"", False)
    box.done(key, payload)
    assert box.peek() == ("a/state", "a/state", b'{"phase":"speaking"}', True)
    # A newer state queued while the older was being published stays.
    box.put("a/state", b'{"phase":"idle"}', retain=True)
    box.done("a/state", b'{"phase":"speaking"}')
    assert box.peek() == ("a/state", "a/state", b'{"phase":"idle"}', True)
    # Past the bound the oldest go first; results have keys of their own.
    for i in range(20):
        box.put("a/result", b"x" * 30, retain=False, key=f"result {i}")
        assert box.size <= 200
    assert box.dropped > 0
    assert all(k.startswith("result") for k in [box.peek()[0]])  # type: ignore[index]
    box.put("a/huge", b"y" * 500, retain=True)
    assert box.size <= 200


def test_mqtt_takes_the_control_sockets_commands_but_follow() -> None:
    from earshot.control import COMMANDS
    from earshot.mqttstate import CONTROL_COMMANDS

    assert set(CONTROL_COMMANDS) == set(COMMANDS) - {"follow"}


def test_the_broker_password_comes_from_the_credential_then_the_file(tmp_path: Path) -> None:
    from earshot.config import parse_config
    from earshot.mqttlink import MqttBridge

    (tmp_path / "file").write_text("from-the-file\n")
    cfg = parse_config(f"mqtt: {{url: 'mqtt://broker', password_file: '{tmp_path / 'file'}'}}\n")

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        return {}

    def password(environ: dict[str, str]) -> str | None:
        return MqttBridge(cfg, status=dict, answer=answer, environ=environ, version="t")._password()

    assert password({}) == "from-the-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd")
    assert password({"CREDENTIALS_DIRECTORY": str(creds)}) == "from-systemd"
    # One token: a file holding two words is refused (said without its content), and the next is tried.
    (creds / "mqtt-password").write_text("two words")
    assert password({"CREDENTIALS_DIRECTORY": str(creds)}) == "from-the-file"
