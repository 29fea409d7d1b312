"""The enrolled devices: who may ask for a secret, and how it proves who it is. Pure.

The registry is a JSON file the operator edits only through ``earshot token-service enrol`` and
``revoke`` (or by hand)::

    {"version": 1, "devices": {
        "kitchen-1": {"token_sha256": "9f86…", "certificate": false, "revoked": false,
                      "labels": {"room": "kitchen", "site": "home"}}}}

A device proves itself with its token (``Authorization: Bearer edt_…``; the file keeps only its
SHA-256, so a leaked registry mints nothing) or with a client certificate whose common name is
its id (``"certificate": true``, the service configured with the CA). A revoked device is refused
on its next request: the service re-reads the file whenever it changes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "MAX_DEVICES",
    "Device",
    "Registry",
    "RegistryError",
    "check_device_id",
    "hash_token",
    "new_token",
    "parse_registry",
]

MAX_DEVICES = 100_000
MAX_REGISTRY_BYTES = 64 * 1024 * 1024
TOKEN_PREFIX = "edt_"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LABEL = re.compile(r"[a-z][a-z0-9_]{0,31}")


class RegistryError(ValueError):
    """The devices file is not a registry; the message names the device and key."""


def new_token() -> str:
    """A fresh device token (256 bits, URL-safe)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the registry keeps of a token."""
    return hashlib.sha256(token.strip().encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class Device:
    """One enrolled device."""

    id: str
    token_sha256: str | None = None
    certificate: bool = False
    revoked: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The device's entry in the file."""
        return {
            "token_sha256": self.token_sha256,
            "certificate": self.certificate,
            "revoked": self.revoked,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True, slots=True)
class Registry:
    """Every enrolled device, by id and by token hash."""

    devices: Mapping[str, Device] = field(default_factory=dict)
    _by_hash: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, devices: list[Device]) -> Registry:
        """A registry of ``devices`` (ids and token hashes unique)."""
        by_id = {d.id: d for d in devices}
        by_hash = {d.token_sha256: d.id for d in devices if d.token_sha256}
        return cls(by_id, by_hash)

    def authenticate(self, bearer: str | None, cert_cn: str | None) -> tuple[Device | None, str]:
        """The device that sent these credentials, or None with why (never quoting the token).

        A token decides when one is sent; otherwise a verified certificate's common name does.
        """
        if bearer:
            device_id = self._by_hash.get(hash_token(bearer))
            if device_id is None:
                return None, "unknown device token"
            device = self.devices[device_id]
        elif cert_cn is not None:
            found = self.devices.get(cert_cn)
            if found is None or not found.certificate:
                return None, f"no device enrolled for the certificate {cert_cn!r}"
            device = found
        else:
            return None, "no credentials: a device token (Authorization: Bearer) or a client certificate"
        if device.revoked:
            return None, f"device {device.id!r} is revoked"
        return device, ""

    def with_device(self, device: Device) -> Registry:
        """This registry with ``device`` added or replaced."""
        devices = {k: v for k, v in self.devices.items() if k != device.id}
        devices[device.id] = device
        return Registry.of(list(devices.values()))

    def revoked(self, device_id: str) -> Registry:
        """This registry with ``device_id`` revoked (and its token forgotten).

        Raises:
            KeyError: no such device.
        """
        device = self.devices[device_id]
        return self.with_device(replace(device, revoked=True, token_sha256=None))

    def to_json(self) -> str:
        """The file's text."""
        doc = {"version": 1, "devices": {k: d.as_json() for k, d in sorted(self.devices.items())}}
        return json.dumps(doc, indent=2) + "\n"


def check_device_id(device_id: str) -> str | None:
    """Why ``device_id`` cannot be a device's id, or None."""
    if not _ID.fullmatch(device_id):
        return "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def parse_registry(data: bytes) -> Registry:
    """The registry in ``data`` (the devices file's bytes; empty = no devices).

    Raises:
        RegistryError: not a registry; the message names the device and key.
    """
    if not data.strip():
        return Registry()
    if len(data) > MAX_REGISTRY_BYTES:
        raise RegistryError(f"larger than {MAX_REGISTRY_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise RegistryError("not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("devices"), dict):
        raise RegistryError('must be {"version": 1, "devices": {...}}')
    raw_devices: dict[str, Any] = doc["devices"]
    if len(raw_devices) > MAX_DEVICES:
        raise RegistryError(f"more than {MAX_DEVICES} devices")
    devices: list[Device] = []
    hashes: set[str] = set()
    for device_id, entry in raw_devices.items():
        where = f"devices.{device_id}"
        problem = check_device_id(device_id)
        if problem is not None:
            raise RegistryError(f"{where}: the id {problem}")
        if not isinstance(entry, dict):
            raise RegistryError(f"{where}: must be an object")
        token = entry.get("token_sha256")
        if token is not None and (not isinstance(token, str) or not _HEX64.fullmatch(token)):
            raise RegistryError(f"{where}.token_sha256: must be 64 lower-case hex digits or null")
        if token is not None and token in hashes:
            raise RegistryError(f"{where}.token_sha256: another device has the same token")
        certificate = entry.get("certificate", False)
        revoked = entry.get("revoked", False)
        if not isinstance(certificate, bool):
            raise RegistryError(f"{where}.certificate: must be true or false")
        if not isinstance(revoked, bool):
            raise RegistryError(f"{where}.revoked: must be true or false")
        labels = entry.get("labels", {})
        if not isinstance(labels, dict) or len(labels) > 16:
            raise RegistryError(f"{where}.labels: must be an object of at most 16 labels")
        for name, value in labels.items():
            if not _LABEL.fullmatch(name) or not isinstance(value, str) or len(value) > 128:
                raise RegistryError(f"{where}.labels.{name}: a lower-case name and a string of at most 128 characters")
        if token:
            hashes.add(token)
        devices.append(Device(device_id, token, certificate, revoked, dict(labels)))
    return Registry.of(devices)
