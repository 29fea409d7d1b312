"""The schema of a device in a fleet: who it is (labels) and its MQTT broker.

Cross-field rules: :func:`check_fleet`.
"""

# ruff: noqa: RUF009  (see schema.py: ``_f`` returns ``dataclasses.field(...)``)

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from earshot.config.fields import _f

__all__ = ["DEVICE_ID", "DeviceConfig", "MqttConfig", "check_fleet", "device_id", "device_labels"]

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A device id: safe in an MQTT topic, a Prometheus label and a Home Assistant unique id."""
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Who this device is in a fleet."""

    id: str | None = _f(None, "its id (metrics label, MQTT topics, Home Assistant); null = the host name")
    name: str | None = _f(None, "its name as people see it (Home Assistant); null = earshot <id>")
    room: str | None = _f(None, "the room it stands in (metrics label, Home Assistant area)")
    site: str | None = _f(None, "the site: a house, a hotel, a store (metrics label)")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """State and commands over an MQTT broker, with Home Assistant discovery (off by default)."""

    url: str | None = _f(None, "the broker: mqtt://host:1883 or mqtts://host:8883 (TLS); null = off")
    username: str | None = _f(None, "user name at the broker")
    password_file: Path | None = _f(
        None, "file holding the broker password (after $CREDENTIALS_DIRECTORY/mqtt-password)"
    )
    ca_file: Path | None = _f(None, "CA of the broker's certificate (PEM); null = the system's")
    client_cert_file: Path | None = _f(None, "client certificate for the broker (PEM)")
    client_key_file: Path | None = _f(None, "its private key (PEM); null = in client_cert_file")
    prefix: str = _f("earshot", "topics are <prefix>/<device id>/...")
    discovery: bool = _f(True, "publish Home Assistant MQTT discovery")
    discovery_prefix: str = _f("homeassistant", "Home Assistant's discovery prefix")
    transcripts: bool = _f(False, "publish the last transcript (privacy: off by default)")
    keepalive_s: int = _f(
        30, "MQTT keepalive; the broker publishes the last will after 1.5 times this", min=5, max=3600
    )
    queue_max_bytes: int = _f(
        65536, "bound of the messages waiting for the broker; the oldest state is dropped first", min=4096, max=16777216
    )
    max_payload_bytes: int = _f(4096, "commands larger than this are dropped", min=256, max=1048576)
    reconnect_initial_s: float = _f(1.0, "first backoff after the broker is lost (full jitter)", min=0.1, max=60.0)
    reconnect_max_s: float = _f(60.0, "backoff cap", min=1.0, max=3600.0)


def device_id(device: DeviceConfig) -> str:
    """The configured id, else the host name (made safe)."""
    if device.id is not None:
        return device.id
    host = re.sub(r"[^A-Za-z0-9._-]", "-", os.uname().nodename).strip("-.") or "earshot"
    return host[:64]


def device_labels(device: DeviceConfig) -> dict[str, str]:
    """The metrics' constant labels: ``device``, ``room`` and ``site`` as configured (none when unset)."""
    labels: dict[str, str] = {}
    if device.id is not None:
        labels["device"] = device.id
    if device.room is not None:
        labels["room"] = device.room
    if device.site is not None:
        labels["site"] = device.site
    return labels


def check_fleet(device: DeviceConfig, mqtt: MqttConfig, add: Callable[[str, str], None]) -> None:
    """The rules the types cannot express."""
    if device.id is not None and not DEVICE_ID.fullmatch(device.id):
        add("device.id", "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    for key in ("name", "room", "site"):
        value = getattr(device, key)
        if value is not None and not _LABEL.fullmatch(value):
            add(f"device.{key}", "must be 1-64 characters, no control characters")
    if mqtt.url is not None:
        parts = urllib.parse.urlsplit(mqtt.url)
        try:
            _ = parts.port
        except ValueError:
            add("mqtt.url", "invalid port")
            return
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            add("mqtt.url", "must be mqtt://host[:port] or mqtts://host[:port]")
        elif parts.username or parts.password:
            add("mqtt.url", "no credentials in the URL: mqtt.username and mqtt.password_file")
        if (mqtt.ca_file or mqtt.client_cert_file) and parts.scheme != "mqtts":
            add("mqtt.url", "certificates need mqtts://")
    for key in ("prefix", "discovery_prefix"):
        value = getattr(mqtt, key)
        if not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", value):
            add(f"mqtt.{key}", "must be topic levels of letters, digits, '.', '_' or '-' (no wildcards)")
