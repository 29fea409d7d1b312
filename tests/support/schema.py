"""Validate Realtime (GA) events against the official SDK's pydantic models (PROTOCOL.md §6).

``validate_client_event(d)`` / ``validate_server_event(d)`` validate with pydantic's discriminator
on ``type`` (one precise error instead of a smart-union cascade) and return the model;
``unknown_keys(model)`` lists every key the SDK does not model (the models accept extras, so a
beta-shaped or misspelled key would otherwise pass silently). ``check_client_event(d)`` does both
and raises on either problem: what tests use for every event the daemon sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from earshot.emulator.schema import adapters, unknown_keys

__all__ = ["check_client_event", "unknown_keys", "validate_client_event", "validate_server_event"]


def _adapter(index: int) -> TypeAdapter[Any]:
    # The emulator validates at run time with the same discriminated adapters; one implementation.
    pair = adapters()
    assert pair is not None, "the openai SDK (dev extra) is needed for schema checks"
    adapter: TypeAdapter[Any] = pair[index]
    return adapter


def validate_client_event(event: dict[str, Any]) -> BaseModel:
    """The SDK model of a client event; raises ``pydantic.ValidationError`` when it does not conform."""
    model: BaseModel = _adapter(0).validate_python(event)
    return model


def validate_server_event(event: dict[str, Any]) -> BaseModel:
    """The SDK model of a server event; raises ``pydantic.ValidationError`` when it does not conform."""
    model: BaseModel = _adapter(1).validate_python(event)
    return model


def check_client_event(event: dict[str, Any]) -> BaseModel:
    """Validate a client event and reject unknown keys.

    Raises:
        pydantic.ValidationError: the event does not conform.
        AssertionError: it has keys the GA interface does not define.
    """
    model = validate_client_event(event)
    extra = unknown_keys(model)
    assert not extra, f"{event.get('type')}: keys the GA interface does not define: {extra}"
    return model
