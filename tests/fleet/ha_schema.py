"""Home Assistant's MQTT discovery schema, as its documentation gives it, for the entities earshot makes.

From https://www.home-assistant.io/integrations/{sensor,binary_sensor,switch,number,button,text}.mqtt/
and the MQTT discovery page: the options each platform takes, the required ones and their types.
An unknown option is an error in Home Assistant (``extra keys not allowed``), so it is one here.
"""

from __future__ import annotations

import re
from typing import Any

COMMON = {
    "name": str,
    "unique_id": str,
    "object_id": str,
    "availability_topic": str,
    "payload_available": str,
    "payload_not_available": str,
    "device": dict,
    "icon": str,
    "entity_category": str,
    "enabled_by_default": bool,
    "json_attributes_topic": str,
    "json_attributes_template": str,
    "qos": int,
    "encoding": str,
}
PLATFORMS: dict[str, tuple[dict[str, type], set[str]]] = {
    "sensor": (
        {"state_topic": str, "value_template": str, "device_class": str, "unit_of_measurement": str,
         "state_class": str, "expire_after": int, "force_update": bool, "suggested_display_precision": int},
        {"state_topic"},
    ),
    "binary_sensor": (
        {"state_topic": str, "value_template": str, "device_class": str, "payload_on": str, "payload_off": str,
         "expire_after": int, "force_update": bool, "off_delay": int},
        {"state_topic"},
    ),
    "switch": (
        {"state_topic": str, "value_template": str, "command_topic": str, "payload_on": str, "payload_off": str,
         "state_on": str, "state_off": str, "device_class": str, "optimistic": bool, "retain": bool},
        {"command_topic"},
    ),
    "number": (
        {"state_topic": str, "value_template": str, "command_topic": str, "command_template": str, "min": (int, float),
         "max": (int, float), "step": (int, float), "mode": str, "unit_of_measurement": str, "device_class": str,
         "optimistic": bool, "retain": bool},
        {"command_topic"},
    ),
    "button": (
        {"command_topic": str, "command_template": str, "payload_press": str, "device_class": str, "retain": bool},
        {"command_topic"},
    ),
    "text": (
        {"state_topic": str, "value_template": str, "command_topic": str, "command_template": str, "min": int,
         "max": int, "mode": str, "pattern": str, "retain": bool},
        {"command_topic"},
    ),
}  # fmt: skip
DEVICE = {
    "identifiers": list,
    "name": str,
    "manufacturer": str,
    "model": str,
    "sw_version": str,
    "hw_version": str,
    "suggested_area": str,
    "configuration_url": str,
    "connections": list,
    "via_device": str,
}
CHOICES = {
    "entity_category": {"config", "diagnostic"},
    "state_class": {"measurement", "total", "total_increasing"},
    "number.mode": {"auto", "box", "slider"},
    "text.mode": {"text", "password"},
    "binary_sensor.device_class": {"connectivity", "problem", "running", "sound", "update"},
    "sensor.device_class": {"monetary", "duration", "timestamp", "enum"},
}
TOPIC = re.compile(
    r"(?P<prefix>[^/#+]+)/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config"
)


def problems(topic: str, payload: dict[str, Any]) -> list[str]:
    """Why Home Assistant would refuse this discovery message (empty: it takes it)."""
    m = TOPIC.fullmatch(topic)
    if m is None:
        return [f"{topic}: not a discovery topic"]
    component = m["component"]
    if component not in PLATFORMS:
        return [f"{topic}: unknown component {component}"]
    options, required = PLATFORMS[component]
    allowed = {**COMMON, **options}
    out = [f"{topic}: unknown option {k!r}" for k in payload if k not in allowed]
    out += [f"{topic}: missing {k!r}" for k in required | {"unique_id"} if k not in payload]
    for key, value in payload.items():
        kind = allowed.get(key)
        if kind is not None and not isinstance(value, kind):
            out.append(f"{topic}: {key} must be {kind}")
        choices = CHOICES.get(f"{component}.{key}") or CHOICES.get(key)
        if choices is not None and value not in choices:
            out.append(f"{topic}: {key} {value!r} not one of {sorted(choices)}")
        if key.endswith("_topic") and isinstance(value, str) and ("#" in value or "+" in value or not value):
            out.append(f"{topic}: {key} is not a topic to publish to")
    device = payload.get("device", {})
    out += [f"{topic}: device.{k} unknown" for k in device if k not in DEVICE]
    if not device.get("identifiers"):
        out.append(f"{topic}: device.identifiers missing (entities would not share a device)")
    if payload.get("device_class") == "monetary" and payload.get("state_class") not in (None, "total"):
        out.append(f"{topic}: a monetary sensor's state_class must be total")
    if component == "text" and isinstance(payload.get("max"), int) and payload["max"] > 255:
        out.append(f"{topic}: a text entity holds at most 255 characters")
    return out
