"""Validate Realtime (GA) events against the official SDK's pydantic models (PROTOCOL.md §6).

``validate_client_event(d)`` / ``validate_server_event(d)`` validate with pydantic's discriminator
on ``type`` (one precise error instead of a smart-union cascade) and return the model;
``unknown_keys(model)`` lists every key the SDK does not model (the models accept extras, so a
beta-shaped or misspelled key would otherwise pass silently). ``check_client_event(d)`` does both
and raises on either problem: what tests use for every event the daemon sends.
"""

from __future__ import annotations

from typing import Annotated, Any, Union, cast, get_args

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, Field, TypeAdapter

__all__ = ["check_client_event", "unknown_keys", "validate_client_event", "validate_server_event"]


def _tagged(sdk_union: Any) -> TypeAdapter[Any]:
    members = get_args(get_args(sdk_union)[0])  # Annotated -> Union -> members
    # Union[...] of a runtime tuple: mypy cannot see the members, pydantic can
    tagged = Annotated[Union[members], Field(discriminator="type")]  # type: ignore[valid-type]  # noqa: UP007
    return TypeAdapter(cast(Any, tagged))


_CLIENT = _tagged(RealtimeClientEvent)
_SERVER = _tagged(RealtimeServerEvent)


def validate_client_event(event: dict[str, Any]) -> BaseModel:
    """The SDK model of a client event; raises ``pydantic.ValidationError`` when it does not conform."""
    model: BaseModel = _CLIENT.validate_python(event)
    return model


def validate_server_event(event: dict[str, Any]) -> BaseModel:
    """The SDK model of a server event; raises ``pydantic.ValidationError`` when it does not conform."""
    model: BaseModel = _SERVER.validate_python(event)
    return model


def unknown_keys(model: Any, path: str = "$") -> list[str]:
    """JSON paths of every key the SDK models do not declare (``model_extra``), depth first."""
    found: list[str] = []
    if isinstance(model, BaseModel):
        for key in sorted(model.model_extra or {}):
            found.append(f"{path}.{key}")
        for name in type(model).model_fields:
            found.extend(unknown_keys(getattr(model, name), f"{path}.{name}"))
    elif isinstance(model, (list, tuple)):
        for i, value in enumerate(model):
            found.extend(unknown_keys(value, f"{path}[{i}]"))
    elif isinstance(model, dict):
        for key, value in model.items():
            found.extend(unknown_keys(value, f"{path}.{key}"))
    return found


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
