"""Client events of the Realtime API (GA), as the daemon sends them: serializers and the audio encoding.

Audio goes up as base64 in the session format (``audio/pcm`` 24 kHz s16le, or G.711 μ-law / A-law at
8 kHz), encoded here for ``input_audio_buffer.append``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from earshot.audio import g711
from earshot.realtime.eventnames import (
    CONVERSATION_ITEM_CREATE,
    CONVERSATION_ITEM_TRUNCATE,
    INPUT_AUDIO_BUFFER_APPEND,
    INPUT_AUDIO_BUFFER_CLEAR,
    INPUT_AUDIO_BUFFER_COMMIT,
    RESPONSE_CANCEL,
    RESPONSE_CREATE,
    SESSION_UPDATE,
    AudioFormat,
)

__all__ = [
    "ANNOUNCE_INSTRUCTIONS",
    "audio_append",
    "audio_clear",
    "audio_commit",
    "dumps",
    "encode_audio",
    "function_call_output_item",
    "item_create",
    "item_truncate",
    "message_item",
    "response_announce",
    "response_cancel",
    "response_create",
    "session_update",
]


def encode_audio(pcm: NDArray[np.int16], audio_format: AudioFormat) -> str:
    """Encode mono int16 at the wire rate as base64 in the session format."""
    if audio_format == "pcm16":
        raw = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    elif audio_format == "g711_ulaw":
        raw = g711.ulaw_encode(pcm)
    else:
        raw = g711.alaw_encode(pcm)
    return base64.b64encode(raw).decode("ascii")


def dumps(event: Mapping[str, Any]) -> str:
    """Serialize a client event as one compact JSON text frame."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def _with_id(event: dict[str, Any], event_id: str | None) -> dict[str, Any]:
    if event_id is not None:
        event["event_id"] = event_id
    return event


def session_update(session: Mapping[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """``session.update`` with a full GA ``session`` object (``type: realtime``)."""
    return _with_id({"type": SESSION_UPDATE, "session": dict(session)}, event_id)


def audio_append(audio_b64: str) -> dict[str, Any]:
    """``input_audio_buffer.append`` (no event_id: never acknowledged, and it is the hot path)."""
    return {"type": INPUT_AUDIO_BUFFER_APPEND, "audio": audio_b64}


def audio_commit(event_id: str | None = None) -> dict[str, Any]:
    """``input_audio_buffer.commit``."""
    return _with_id({"type": INPUT_AUDIO_BUFFER_COMMIT}, event_id)


def audio_clear(event_id: str | None = None) -> dict[str, Any]:
    """``input_audio_buffer.clear``."""
    return _with_id({"type": INPUT_AUDIO_BUFFER_CLEAR}, event_id)


def item_create(
    item: Mapping[str, Any], *, previous_item_id: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """``conversation.item.create``; ``previous_item_id`` chains replayed history."""
    event: dict[str, Any] = {"type": CONVERSATION_ITEM_CREATE, "item": dict(item)}
    if previous_item_id is not None:
        event["previous_item_id"] = previous_item_id
    return _with_id(event, event_id)


def message_item(role: Literal["user", "assistant"], text: str, item_id: str | None = None) -> dict[str, Any]:
    """A text message item: user ``input_text`` or assistant ``output_text`` (PROTOCOL.md §3.4)."""
    part = "input_text" if role == "user" else "output_text"
    item: dict[str, Any] = {"type": "message", "role": role, "content": [{"type": part, "text": text}]}
    if item_id is not None:
        item["id"] = item_id
    return item


def function_call_output_item(call_id: str, output: str) -> dict[str, Any]:
    """A ``function_call_output`` item answering the call ``call_id``."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def item_truncate(item_id: str, content_index: int, audio_end_ms: int, event_id: str | None = None) -> dict[str, Any]:
    """``conversation.item.truncate``: the server keeps the item's audio up to ``audio_end_ms``."""
    return _with_id(
        {
            "type": CONVERSATION_ITEM_TRUNCATE,
            "item_id": item_id,
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        },
        event_id,
    )


def response_create(event_id: str | None = None) -> dict[str, Any]:
    """``response.create`` with the session defaults."""
    return _with_id({"type": RESPONSE_CREATE}, event_id)


ANNOUNCE_INSTRUCTIONS = "Say this to the user, word for word, and nothing else: "
"""How an announcement asks the model to speak its text (the text follows, in « »)."""


def response_announce(text: str, event_id: str | None = None) -> dict[str, Any]:
    """``response.create`` out of band (``conversation: "none"``, no input): the model says ``text``.

    The announcement never enters the conversation: the next turn's context is as it was.
    """
    response = {
        "conversation": "none",
        "input": [],
        "instructions": f"{ANNOUNCE_INSTRUCTIONS}«{text}»",
        "output_modalities": ["audio"],
        "metadata": {"earshot": "announcement"},
    }
    return _with_id({"type": RESPONSE_CREATE, "response": response}, event_id)


def response_cancel(response_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """``response.cancel`` (of ``response_id``, or of the active response when None)."""
    event: dict[str, Any] = {"type": RESPONSE_CANCEL}
    if response_id is not None:
        event["response_id"] = response_id
    return _with_id(event, event_id)
