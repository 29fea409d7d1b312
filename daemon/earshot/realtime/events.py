"""Realtime API (GA) events: every event name, typed parsing of server events, client serializers.

This is the one module that knows the wire spelling of events (PROTOCOL.md §3). Server events the
daemon acts on are parsed into frozen dataclasses; any other well-formed event becomes an
:class:`UnknownServerEvent` (the caller logs it at DEBUG and moves on: the server may add event
types at any time). A frame that is not a JSON object with a string ``type``, or a known event
whose fields have the wrong shape, raises :class:`~earshot.errors.RemoteProtocolError`.

Audio crosses the wire as base64 in the session format (``audio/pcm`` 24 kHz s16le, or G.711
μ-law / A-law at 8 kHz); it is decoded here, once, into mono int16 at the wire rate, and encoded
here for ``input_audio_buffer.append``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from earshot.audio import g711
from earshot.errors import RemoteProtocolError

AudioFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]

# ----------------------------------------------------------------------------- client event names
SESSION_UPDATE = "session.update"
INPUT_AUDIO_BUFFER_APPEND = "input_audio_buffer.append"
INPUT_AUDIO_BUFFER_COMMIT = "input_audio_buffer.commit"
INPUT_AUDIO_BUFFER_CLEAR = "input_audio_buffer.clear"
CONVERSATION_ITEM_CREATE = "conversation.item.create"
CONVERSATION_ITEM_TRUNCATE = "conversation.item.truncate"
CONVERSATION_ITEM_DELETE = "conversation.item.delete"
RESPONSE_CREATE = "response.create"
RESPONSE_CANCEL = "response.cancel"

# ----------------------------------------------------------------------------- server event names
SESSION_CREATED = "session.created"
SESSION_UPDATED = "session.updated"
ERROR = "error"
RATE_LIMITS_UPDATED = "rate_limits.updated"
SPEECH_STARTED = "input_audio_buffer.speech_started"
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
INPUT_AUDIO_BUFFER_COMMITTED = "input_audio_buffer.committed"
INPUT_AUDIO_BUFFER_CLEARED = "input_audio_buffer.cleared"
INPUT_AUDIO_BUFFER_TIMEOUT_TRIGGERED = "input_audio_buffer.timeout_triggered"
CONVERSATION_ITEM_ADDED = "conversation.item.added"
CONVERSATION_ITEM_CREATED = "conversation.item.created"
CONVERSATION_ITEM_DONE = "conversation.item.done"
CONVERSATION_ITEM_TRUNCATED = "conversation.item.truncated"
INPUT_TRANSCRIPTION_DELTA = "conversation.item.input_audio_transcription.delta"
INPUT_TRANSCRIPTION_COMPLETED = "conversation.item.input_audio_transcription.completed"
INPUT_TRANSCRIPTION_FAILED = "conversation.item.input_audio_transcription.failed"
RESPONSE_CREATED = "response.created"
RESPONSE_DONE = "response.done"
RESPONSE_OUTPUT_ITEM_ADDED = "response.output_item.added"
RESPONSE_OUTPUT_ITEM_DONE = "response.output_item.done"
RESPONSE_OUTPUT_AUDIO_DELTA = "response.output_audio.delta"
RESPONSE_OUTPUT_AUDIO_DONE = "response.output_audio.done"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA = "response.output_audio_transcript.delta"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE = "response.output_audio_transcript.done"
RESPONSE_OUTPUT_TEXT_DELTA = "response.output_text.delta"
RESPONSE_OUTPUT_TEXT_DONE = "response.output_text.done"
RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE = "response.function_call_arguments.done"

# ------------------------------------------------------------------------------------ error codes
CODE_SESSION_EXPIRED = "session_expired"
CODE_RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"
CODE_COMMIT_EMPTY = "input_audio_buffer_commit_empty"
CODE_ACTIVE_RESPONSE = "conversation_already_has_active_response"
CODE_BETA_DISABLED = "beta_api_shape_disabled"
CODE_RATE_LIMIT = "inference_rate_limit_exceeded"
FATAL_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached", CODE_BETA_DISABLED}
)
"""Error codes that no retry can fix until a person acts (PROTOCOL.md §4.5)."""
TRUNCATE_TOO_LONG_MARKER = "already shorter than"
TRUNCATE_NOT_AUDIO_MARKER = "Only model output audio messages can be truncated"
CANCEL_FAILED_PREFIX = "Cancellation failed"

WIRE_RATE_HZ: Mapping[str, int] = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}


# ------------------------------------------------------------------------------- server events


@dataclass(frozen=True, slots=True)
class SessionCreatedEvent:
    """``session.created``: the first event of a connection."""

    session_id: str | None
    expires_at: int | None


@dataclass(frozen=True, slots=True)
class SessionUpdatedEvent:
    """``session.updated``: our configuration is in effect."""

    session_id: str | None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """``error``; ``event_id`` is the id of *our* client event that caused it, when we set one."""

    error_type: str | None
    code: str | None
    message: str
    param: str | None
    event_id: str | None


@dataclass(frozen=True, slots=True)
class SpeechStartedEvent:
    """``input_audio_buffer.speech_started`` (server VAD): the barge-in trigger."""

    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStoppedEvent:
    """``input_audio_buffer.speech_stopped``."""

    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class CommittedEvent:
    """``input_audio_buffer.committed``: a user item was created from the buffer."""

    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ClearedEvent:
    """``input_audio_buffer.cleared``."""


@dataclass(frozen=True, slots=True)
class ItemEvent:
    """``conversation.item.added`` / ``.created`` / ``.done`` (no audio bytes in GA)."""

    type: str
    item_id: str | None
    item_type: str | None
    role: str | None
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ItemTruncatedEvent:
    """``conversation.item.truncated``."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class InputTranscriptionEvent:
    """``conversation.item.input_audio_transcription.delta`` / ``.completed`` (``final``) / ``.failed``."""

    item_id: str
    text: str
    final: bool
    failed: bool = False


@dataclass(frozen=True, slots=True)
class ResponseCreatedEvent:
    """``response.created``: the busy flag goes up."""

    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseDoneEvent:
    """``response.done`` (always sent). ``reason``/``error_code`` come from ``status_details``."""

    response_id: str
    status: str
    reason: str | None
    error_code: str | None
    error_message: str | None


@dataclass(frozen=True, slots=True)
class OutputItemEvent:
    """``response.output_item.added`` / ``.done``."""

    done: bool
    response_id: str
    item_id: str | None
    item_type: str | None
    role: str | None


@dataclass(frozen=True, slots=True)
class AudioDeltaEvent:
    """``response.output_audio.delta``, its audio decoded to int16 at the wire rate."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int
    pcm: NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class AudioDoneEvent:
    """``response.output_audio.done``: no more audio for this item."""

    response_id: str
    item_id: str
    content_index: int


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """``response.output_audio_transcript.delta``/``.done`` (and ``output_text`` in text mode)."""

    response_id: str
    item_id: str
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class FunctionCallEvent:
    """``response.function_call_arguments.done``: the model wants a tool run."""

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class UnknownServerEvent:
    """A well-formed event this daemon does not act on (logged at DEBUG by the caller)."""

    type: str


ServerEvent = (
    SessionCreatedEvent
    | SessionUpdatedEvent
    | ErrorEvent
    | SpeechStartedEvent
    | SpeechStoppedEvent
    | CommittedEvent
    | ClearedEvent
    | ItemEvent
    | ItemTruncatedEvent
    | InputTranscriptionEvent
    | ResponseCreatedEvent
    | ResponseDoneEvent
    | OutputItemEvent
    | AudioDeltaEvent
    | AudioDoneEvent
    | TranscriptEvent
    | FunctionCallEvent
    | UnknownServerEvent
)


# ------------------------------------------------------------------------------------- parsing


def _str(obj: Mapping[str, Any], key: str, etype: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{etype}: {key} must be a string")
    return value


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _int(obj: Mapping[str, Any], key: str, etype: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    # bool is an int in Python; the protocol never means true/false by a number
    if not isinstance(value, int) or isinstance(value, bool):
        raise RemoteProtocolError(f"{etype}: {key} must be an integer")
    return value


def _obj(obj: Mapping[str, Any], key: str, etype: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{etype}: {key} must be an object")
    return value


def decode_audio(b64: str, audio_format: AudioFormat) -> NDArray[np.int16]:
    """Decode base64 audio in the session format into mono int16 at the wire rate.

    Raises:
        RemoteProtocolError: invalid base64, or PCM16 with an odd number of bytes.
    """
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"audio is not valid base64: {exc}") from exc
    if audio_format == "pcm16":
        if len(raw) % 2:
            raise RemoteProtocolError(f"PCM16 audio with an odd byte count ({len(raw)})")
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    codes = np.frombuffer(raw, dtype=np.uint8)
    if audio_format == "g711_ulaw":
        return g711.ulaw_decode(codes)
    return g711.alaw_decode(codes)


def encode_audio(pcm: NDArray[np.int16], audio_format: AudioFormat) -> str:
    """Encode mono int16 at the wire rate as base64 in the session format."""
    if audio_format == "pcm16":
        raw = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    elif audio_format == "g711_ulaw":
        raw = g711.ulaw_encode(pcm)
    else:
        raw = g711.alaw_encode(pcm)
    return base64.b64encode(raw).decode("ascii")


def parse_server_event(raw: str | bytes, audio_format: AudioFormat = "pcm16") -> ServerEvent:
    """Parse one WebSocket message from the server.

    Args:
        raw: the text (or binary) frame as received.
        audio_format: the session's audio format, to decode ``response.output_audio.delta``.

    Returns:
        A typed event, or :class:`UnknownServerEvent` for a type the daemon does not use.

    Raises:
        RemoteProtocolError: not JSON, not an object with a string ``type``, or a known event
            with missing or mistyped fields.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise RemoteProtocolError(f"server sent malformed JSON: {str(exc)[:200]}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise RemoteProtocolError("server event is not an object with a string type")
    etype: str = data["type"]
    parser = _PARSERS.get(etype)
    if parser is None:
        return UnknownServerEvent(etype)
    return parser(data, etype, audio_format)


def _parse_session(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    session = _obj(d, "session", etype)
    if etype == SESSION_CREATED:
        expires = session.get("expires_at")
        return SessionCreatedEvent(
            _opt_str(session, "id"), expires if isinstance(expires, int) and not isinstance(expires, bool) else None
        )
    return SessionUpdatedEvent(_opt_str(session, "id"))


def _parse_error(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    err = _obj(d, "error", etype)
    message = err.get("message")
    return ErrorEvent(
        error_type=_opt_str(err, "type"),
        code=_opt_str(err, "code"),
        message=message if isinstance(message, str) else "",
        param=_opt_str(err, "param"),
        event_id=_opt_str(err, "event_id"),
    )


def _parse_speech(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    if etype == SPEECH_STARTED:
        return SpeechStartedEvent(_int(d, "audio_start_ms", etype), _str(d, "item_id", etype))
    return SpeechStoppedEvent(_int(d, "audio_end_ms", etype), _str(d, "item_id", etype))


def _parse_committed(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return CommittedEvent(_str(d, "item_id", etype), _opt_str(d, "previous_item_id"))


def _parse_cleared(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return ClearedEvent()


def _parse_item(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    item = _obj(d, "item", etype)
    return ItemEvent(
        etype, _opt_str(item, "id"), _opt_str(item, "type"), _opt_str(item, "role"), _opt_str(d, "previous_item_id")
    )


def _parse_truncated(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return ItemTruncatedEvent(
        _str(d, "item_id", etype), _int(d, "content_index", etype, 0), _int(d, "audio_end_ms", etype)
    )


def _parse_input_transcription(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    item_id = _str(d, "item_id", etype)
    if etype == INPUT_TRANSCRIPTION_COMPLETED:
        return InputTranscriptionEvent(item_id, _str(d, "transcript", etype), final=True)
    if etype == INPUT_TRANSCRIPTION_FAILED:
        return InputTranscriptionEvent(item_id, "", final=True, failed=True)
    delta = d.get("delta")
    return InputTranscriptionEvent(item_id, delta if isinstance(delta, str) else "", final=False)


def _parse_response(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    response = _obj(d, "response", etype)
    response_id = _str(response, "id", etype)
    if etype == RESPONSE_CREATED:
        return ResponseCreatedEvent(response_id)
    status = _opt_str(response, "status") or "unknown"
    details = response.get("status_details")
    reason = code = message = None
    if isinstance(details, dict):
        reason = _opt_str(details, "reason")
        err = details.get("error")
        if isinstance(err, dict):
            code = _opt_str(err, "code")
            message = _opt_str(err, "message")
    return ResponseDoneEvent(response_id, status, reason, code, message)


def _parse_output_item(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    item = _obj(d, "item", etype)
    return OutputItemEvent(
        etype == RESPONSE_OUTPUT_ITEM_DONE,
        _str(d, "response_id", etype),
        _opt_str(item, "id"),
        _opt_str(item, "type"),
        _opt_str(item, "role"),
    )


def _parse_audio_delta(d: Mapping[str, Any], etype: str, fmt: AudioFormat) -> ServerEvent:
    return AudioDeltaEvent(
        _str(d, "response_id", etype),
        _str(d, "item_id", etype),
        _int(d, "output_index", etype, 0),
        _int(d, "content_index", etype, 0),
        decode_audio(_str(d, "delta", etype), fmt),
    )


def _parse_audio_done(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return AudioDoneEvent(_str(d, "response_id", etype), _str(d, "item_id", etype), _int(d, "content_index", etype, 0))


def _parse_transcript(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    final = etype in (RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE, RESPONSE_OUTPUT_TEXT_DONE)
    key = "delta" if not final else ("transcript" if etype == RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE else "text")
    return TranscriptEvent(_str(d, "response_id", etype), _str(d, "item_id", etype), _str(d, key, etype), final)


def _parse_function_call(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return FunctionCallEvent(
        _str(d, "response_id", etype),
        _str(d, "item_id", etype),
        _str(d, "call_id", etype),
        _str(d, "name", etype),
        _str(d, "arguments", etype),
    )


_PARSERS = {
    SESSION_CREATED: _parse_session,
    SESSION_UPDATED: _parse_session,
    ERROR: _parse_error,
    SPEECH_STARTED: _parse_speech,
    SPEECH_STOPPED: _parse_speech,
    INPUT_AUDIO_BUFFER_COMMITTED: _parse_committed,
    INPUT_AUDIO_BUFFER_CLEARED: _parse_cleared,
    CONVERSATION_ITEM_ADDED: _parse_item,
    CONVERSATION_ITEM_CREATED: _parse_item,
    CONVERSATION_ITEM_DONE: _parse_item,
    CONVERSATION_ITEM_TRUNCATED: _parse_truncated,
    INPUT_TRANSCRIPTION_DELTA: _parse_input_transcription,
    INPUT_TRANSCRIPTION_COMPLETED: _parse_input_transcription,
    INPUT_TRANSCRIPTION_FAILED: _parse_input_transcription,
    RESPONSE_CREATED: _parse_response,
    RESPONSE_DONE: _parse_response,
    RESPONSE_OUTPUT_ITEM_ADDED: _parse_output_item,
    RESPONSE_OUTPUT_ITEM_DONE: _parse_output_item,
    RESPONSE_OUTPUT_AUDIO_DELTA: _parse_audio_delta,
    RESPONSE_OUTPUT_AUDIO_DONE: _parse_audio_done,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA: _parse_transcript,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE: _parse_transcript,
    RESPONSE_OUTPUT_TEXT_DELTA: _parse_transcript,
    RESPONSE_OUTPUT_TEXT_DONE: _parse_transcript,
    RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE: _parse_function_call,
}


# --------------------------------------------------------------------------------- serializers


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


def response_cancel(response_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """``response.cancel`` (of ``response_id``, or of the active response when None)."""
    event: dict[str, Any] = {"type": RESPONSE_CANCEL}
    if response_id is not None:
        event["response_id"] = response_id
    return _with_id(event, event_id)
