"""Checking Realtime events against the official SDK's pydantic types (PROTOCOL.md §6).

The ``openai`` package and pydantic are development dependencies, so they are imported lazily: when
they are missing, :func:`available` is false, every check returns no problems and one warning is logged.

The SDK unions are ``Annotated[Union[...], PropertyInfo(discriminator="type")]``; pydantic ignores
``PropertyInfo``, so the members are re-wrapped with a real pydantic discriminator to get one precise
error per bad event (§6.1). The SDK models allow extra keys, so outgoing (client) events are also walked
for keys no model declares (§6.3): a beta-shaped ``session.voice`` validates but is ignored by GA.

``tests/support/schema.py`` may simply re-export these functions.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["adapters", "available", "unknown_keys", "validate_client_event", "validate_server_event"]


@functools.cache
def adapters() -> tuple[Any, Any] | None:
    """Build the (client, server) discriminated TypeAdapters, or None without openai/pydantic."""
    try:
        from typing import Annotated, Union, get_args

        from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
        from pydantic import Field, TypeAdapter
    except ImportError:
        logger.warning("openai/pydantic not installed: Realtime events are not schema-checked")
        return None

    def tagged(sdk_union: Any) -> Any:
        members = get_args(get_args(sdk_union)[0])  # Annotated -> Union -> members
        return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])  # type: ignore[arg-type]  # noqa: UP007

    return tagged(RealtimeClientEvent), tagged(RealtimeServerEvent)


def available() -> bool:
    """Whether the SDK types are importable (otherwise every check passes vacuously)."""
    return adapters() is not None


def _load(event: str | bytes | dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    if isinstance(event, dict):
        return event, []
    try:
        data = json.loads(event)
    except ValueError as exc:
        return None, [f"malformed JSON: {exc}"]
    if not isinstance(data, dict):
        return None, [f"not a JSON object: {type(data).__name__}"]
    return data, []


def _errors(exc: Any) -> list[str]:
    return [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]


def unknown_keys(model: Any, path: str = "$") -> list[str]:
    """Every key in a validated pydantic model tree that no model declares (``model_extra``), as JSON paths."""
    found: list[str] = []
    extra = getattr(model, "model_extra", None)
    if extra:
        found.extend(f"{path}.{key}" for key in sorted(extra))
    fields = getattr(type(model), "model_fields", None)
    if fields is not None:
        for name in fields:
            found.extend(unknown_keys(getattr(model, name, None), f"{path}.{name}"))
    elif isinstance(model, list | tuple):
        for i, value in enumerate(model):
            found.extend(unknown_keys(value, f"{path}[{i}]"))
    elif isinstance(model, dict):
        for key, value in model.items():
            found.extend(unknown_keys(value, f"{path}.{key}"))
    return found


def validate_client_event(event: str | bytes | dict[str, Any]) -> list[str]:
    """Problems with a client event: schema errors against ``RealtimeClientEvent``, then unknown keys.

    Returns:
        One line per problem; empty when the event is valid (or the SDK is not installed).
    """
    data, problems = _load(event)
    pair = adapters()
    if data is None or pair is None:
        return problems
    from pydantic import ValidationError

    try:
        model = pair[0].validate_python(data)
    except ValidationError as exc:
        return _errors(exc)
    return [f"unknown key {key}" for key in unknown_keys(model)]


def validate_server_event(event: str | bytes | dict[str, Any]) -> list[str]:
    """Problems with a server event against ``RealtimeServerEvent`` (extra keys are allowed, §6.3).

    Returns:
        One line per problem; empty when the event is valid (or the SDK is not installed).
    """
    data, problems = _load(event)
    pair = adapters()
    if data is None or pair is None:
        return problems
    from pydantic import ValidationError

    try:
        pair[1].validate_python(data)
    except ValidationError as exc:
        return _errors(exc)
    return []
