"""What a device says over MQTT and what it takes: topics, the state document, Home Assistant discovery, commands. Pure.

Topics, under ``base = <mqtt.prefix>/<device id>``:

- ``base/availability``: ``online`` / ``offline`` (retained; ``offline`` is also the last will);
- ``base/state``: one retained JSON document (:func:`state_document`): phase, connection, muted,
  volume, timers, the last error, today's connected minutes and usage;
- ``base/transcript``: the last transcript (retained; only with ``mqtt.transcripts``);
- ``base/cmd``: a control-socket request, ``{"cmd": ..., "args": {...}, "id": ...}``; the answer
  goes to ``base/result`` (not retained) with the same ``id``;
- Home Assistant's command topics, mapped onto the same commands (:func:`parse_command`):
  ``base/set/mute`` (``ON``/``OFF``), ``base/set/volume`` (0-100), ``base/cmd/engage``,
  ``base/cmd/stop``, ``base/cmd/cancel`` (any payload) and ``base/cmd/say`` (the text).

Discovery (:func:`discovery_messages`) makes one Home Assistant device with an entity for each
(its node id is the device id, so a broker ACL can confine each device to its own topics).
:class:`Outbox` is the bounded queue of messages waiting for the broker.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTROL_COMMANDS",
    "Outbox",
    "Topics",
    "discovery_messages",
    "parse_command",
    "state_document",
]

CONTROL_COMMANDS = ("engage", "cancel", "stop", "status", "mute", "unmute", "volume", "say", "timers")
"""The control-socket commands MQTT takes (``follow`` is the socket's own)."""

MAX_TIMERS_SHOWN = 8


@dataclass(frozen=True, slots=True)
class Topics:
    """One device's topics."""

    base: str
    discovery_prefix: str
    node_id: str

    @classmethod
    def of(cls, prefix: str, device_id: str, discovery_prefix: str) -> Topics:
        """The topics of ``device_id`` (Home Assistant's node id allows no '.')."""
        return cls(f"{prefix}/{device_id}", discovery_prefix, device_id.replace(".", "_"))

    @property
    def availability(self) -> str:
        """``online`` / ``offline``."""
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        """The state document."""
        return f"{self.base}/state"

    @property
    def transcript(self) -> str:
        """The last transcript."""
        return f"{self.base}/transcript"

    @property
    def result(self) -> str:
        """Answers to ``base/cmd``."""
        return f"{self.base}/result"

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """What the device listens to."""
        return (f"{self.base}/cmd", f"{self.base}/cmd/+", f"{self.base}/set/+")


def state_document(status: Mapping[str, Any]) -> dict[str, Any]:
    """The retained state, from the control socket's ``status``.

    Only what changes with what the device does (no uptime, no session age, no time left on a
    timer), so an idle device publishes nothing.
    """
    usage = status.get("usage")
    usage = usage if isinstance(usage, Mapping) else {}
    volume = status.get("volume")
    timers = [t for t in status.get("timers", ()) if isinstance(t, Mapping)]
    error = status.get("last_error")
    return {
        "phase": status.get("phase", "idle"),
        "connection": status.get("connection", "disconnected"),
        "muted": bool(status.get("muted", False)),
        "volume": volume.get("volume") if isinstance(volume, Mapping) else None,
        "speaker_muted": bool(volume.get("muted")) if isinstance(volume, Mapping) else False,
        "timers_pending": sum(1 for t in timers if t.get("state") == "pending"),
        "timers_ringing": sum(1 for t in timers if t.get("state") == "ringing"),
        "timers": [{k: t.get(k) for k in ("id", "kind", "label", "state", "due")} for t in timers[:MAX_TIMERS_SHOWN]],
        "last_error": error.get("text") if isinstance(error, Mapping) else None,
        "connected_minutes_today": round(float(status.get("connected_minutes_today") or 0.0), 1),
        "tokens": dict(usage.get("tokens") or {}),
        "cost_usd": usage.get("cost_usd_estimate", 0.0),
    }


def _entity(
    topics: Topics, device: Mapping[str, Any], key: str, name: str, **options: Any
) -> tuple[str, dict[str, Any]]:
    component = options.pop("component")
    payload: dict[str, Any] = {
        "name": name,
        "unique_id": f"earshot_{topics.node_id}_{key}",
        "availability_topic": topics.availability,
        "device": device,
        **options,
    }
    return f"{topics.discovery_prefix}/{component}/{topics.node_id}/{key}/config", payload


def discovery_messages(topics: Topics, *, name: str, room: str | None, version: str) -> list[tuple[str, str]]:
    """Home Assistant MQTT discovery: ``(topic, JSON payload)`` of every entity, retained.

    The last-transcript entity is offered always, disabled by default: it shows something only once
    both Home Assistant's user enables it and ``mqtt.transcripts`` publishes.
    """
    device: dict[str, Any] = {
        "identifiers": [f"earshot_{topics.node_id}"],
        "name": name,
        "manufacturer": "earshot",
        "model": "earshot voice appliance",
        "sw_version": version,
    }
    if room:
        device["suggested_area"] = room
    state = topics.state
    entities = [
        _entity(topics, device, "phase", "Phase", component="sensor", state_topic=state,
                value_template="{{ value_json.phase }}", icon="mdi:account-voice"),
        _entity(topics, device, "connected", "Realtime connection", component="binary_sensor", state_topic=state,
                value_template="{{ 'ON' if value_json.connection == 'connected' else 'OFF' }}",
                device_class="connectivity", entity_category="diagnostic"),
        _entity(topics, device, "mute", "Microphone muted", component="switch", state_topic=state,
                value_template="{{ 'ON' if value_json.muted else 'OFF' }}", command_topic=f"{topics.base}/set/mute",
                payload_on="ON", payload_off="OFF", icon="mdi:microphone-off"),
        _entity(topics, device, "volume", "Volume", component="number", state_topic=state,
                value_template="{{ value_json.volume }}", command_topic=f"{topics.base}/set/volume",
                min=0, max=100, step=1, unit_of_measurement="%", mode="slider"),
        _entity(topics, device, "engage", "Talk", component="button", command_topic=f"{topics.base}/cmd/engage",
                payload_press="PRESS", icon="mdi:microphone"),
        _entity(topics, device, "stop", "Stop", component="button", command_topic=f"{topics.base}/cmd/stop",
                payload_press="PRESS", icon="mdi:stop"),
        _entity(topics, device, "say", "Say", component="text", command_topic=f"{topics.base}/cmd/say",
                min=1, max=255, mode="text", icon="mdi:bullhorn"),
        _entity(topics, device, "timers", "Timers", component="sensor", state_topic=state,
                value_template="{{ value_json.timers_pending }}", json_attributes_topic=state,
                json_attributes_template="{{ {'timers': value_json.timers} | tojson }}", icon="mdi:timer-outline"),
        _entity(topics, device, "last_error", "Last error", component="sensor", state_topic=state,
                value_template="{{ (value_json.last_error or 'none')[:255] }}", entity_category="diagnostic"),
        _entity(topics, device, "connected_minutes", "Connected today", component="sensor", state_topic=state,
                value_template="{{ value_json.connected_minutes_today }}", unit_of_measurement="min",
                state_class="total_increasing", entity_category="diagnostic"),
        _entity(topics, device, "cost", "Realtime cost", component="sensor", state_topic=state,
                value_template="{{ value_json.cost_usd }}", unit_of_measurement="USD", device_class="monetary",
                state_class="total", entity_category="diagnostic"),
        _entity(topics, device, "last_transcript", "Last transcript", component="sensor",
                state_topic=topics.transcript, value_template="{{ value_json.text[:255] }}",
                json_attributes_topic=topics.transcript, enabled_by_default=False, icon="mdi:text"),
    ]  # fmt: skip
    return [(topic, json.dumps(payload, separators=(",", ":"))) for topic, payload in entities]


def parse_command(topics: Topics, topic: str, payload: bytes) -> tuple[dict[str, Any] | None, str]:
    """The control request a message on a command topic makes, or None with why it is dropped.

    ``base/cmd`` takes the control socket's own JSON request; the Home Assistant topics are mapped
    onto it. The request is then checked by the same code as the socket's.
    """
    if not topic.startswith(topics.base + "/"):
        return None, "not this device's topic"
    rest = topic[len(topics.base) + 1 :]
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, "the payload is not UTF-8"
    if rest == "cmd":
        try:
            request = json.loads(text)
        except ValueError:
            return None, "base/cmd takes a JSON request"
        if not isinstance(request, dict):
            return None, 'base/cmd takes {"cmd": ..., "args": {...}}'
        if request.get("cmd") not in CONTROL_COMMANDS:
            return None, f"unknown command {str(request.get('cmd'))[:40]!r}"
        return request, ""
    if rest == "set/mute":
        if text.upper() not in ("ON", "OFF"):
            return None, "set/mute takes ON or OFF"
        return {"cmd": "mute" if text.upper() == "ON" else "unmute"}, ""
    if rest == "set/volume":
        try:
            level = round(float(text))
        except ValueError:
            return None, "set/volume takes 0-100"
        if not 0 <= level <= 100:
            return None, "set/volume takes 0-100"
        return {"cmd": "volume", "args": {"set": level}}, ""
    if rest in ("cmd/engage", "cmd/stop", "cmd/cancel"):
        return {"cmd": rest.removeprefix("cmd/")}, ""
    if rest == "cmd/say":
        if text.startswith("{"):
            try:
                args = json.loads(text)
            except ValueError:
                return None, 'cmd/say takes the text, or {"text": ..., "listen": ...}'
            return {"cmd": "say", "args": args if isinstance(args, dict) else {}}, ""
        if not text:
            return None, "cmd/say takes the text to say"
        return {"cmd": "say", "args": {"text": text}}, ""
    return None, f"unknown topic {rest[:40]!r}"


class Outbox:
    """Messages waiting for the broker, bounded in bytes.

    A message replaces one still waiting on the same topic (only the newest state matters); past
    the bound the oldest messages are dropped (counted in :attr:`dropped`).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[str, bytes, bool]] = OrderedDict()
        self._bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes waiting (topics and payloads)."""
        return self._bytes

    def put(self, topic: str, payload: str | bytes, *, retain: bool, key: str | None = None) -> None:
        """Queue a message, replacing one waiting under the same ``key`` (default: the topic)."""
        data = payload.encode() if isinstance(payload, str) else payload
        key = topic if key is None else key
        self._remove(key)
        size = len(topic) + len(data)
        if size > self.max_bytes:
            self.dropped += 1
            return
        while self._bytes + size > self.max_bytes:
            self._remove(next(iter(self._items)))
            self.dropped += 1
        self._items[key] = (topic, data, retain)
        self._bytes += size

    def peek(self) -> tuple[str, str, bytes, bool] | None:
        """The oldest message ``(key, topic, payload, retain)``, left in place until :meth:`done`."""
        if not self._items:
            return None
        key, (topic, data, retain) = next(iter(self._items.items()))
        return key, topic, data, retain

    def done(self, key: str, payload: bytes) -> None:
        """The broker took ``payload`` queued under ``key`` (a newer one queued since stays)."""
        item = self._items.get(key)
        if item is not None and item[1] == payload:
            self._remove(key)

    def _remove(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= len(item[0]) + len(item[1])
