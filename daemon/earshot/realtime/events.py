"""Realtime API (GA) events: typed parsing of server events (and, re-exported, the names and client events).

The wire spelling of events is in :mod:`earshot.realtime.eventnames`, the client events' serializers in
:mod:`earshot.realtime.clientevents`; callers import all three as this one module. Server events the
daemon acts on are parsed into frozen dataclasses; any other well-formed event becomes an
:class:`UnknownServerEvent` (the caller logs it at DEBUG and moves on: the server may add event
types at any time). A frame that is not a JSON object with a string ``type``, or a known event
whose fields have the wrong shape, raises :class:`~earshot.errors.RemoteProtocolError`.

Audio crosses the wire as base64 in the session format (``audio/pcm`` 24 kHz s16le, or G.711
μ-law / A-law at 8 kHz); it is decoded here, once, into mono int16 at the wire rate.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio import g711
from earshot.errors import RemoteProtocolError
from earshot.realtime.clientevents import *  # noqa: F403 - the client events, re-exported (one events module for callers)
from earshot.realtime.eventnames import *  # noqa: F403 - the wire names, likewise
from earshot.realtime.eventnames import (
    CONVERSATION_ITEM_ADDED,
    CONVERSATION_ITEM_CREATED,
    CONVERSATION_ITEM_DONE,
    CONVERSATION_ITEM_TRUNCATED,
    ERROR,
    INPUT_AUDIO_BUFFER_CLEARED,
    INPUT_AUDIO_BUFFER_COMMITTED,
    INPUT_TRANSCRIPTION_COMPLETED,
    INPUT_TRANSCRIPTION_DELTA,
    INPUT_TRANSCRIPTION_FAILED,
    RATE_LIMITS_UPDATED,
    RESPONSE_CREATED,
    RESPONSE_DONE,
    RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE,
    RESPONSE_OUTPUT_AUDIO_DELTA,
    RESPONSE_OUTPUT_AUDIO_DONE,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
    RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE,
    RESPONSE_OUTPUT_ITEM_ADDED,
    RESPONSE_OUTPUT_ITEM_DONE,
    RESPONSE_OUTPUT_TEXT_DELTA,
    RESPONSE_OUTPUT_TEXT_DONE,
    SESSION_CREATED,
    SESSION_UPDATED,
    SPEECH_STARTED,
    SPEECH_STOPPED,
    AudioFormat,
)
from earshot.tokens import TokenUsage, parse_rate_limits, parse_usage

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
    usage: TokenUsage | None = None


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
class McpEvent:
    """A remote MCP server at work (the service talks to it; this device only hears of it).

    ``kind``: ``list_tools_in_progress|completed|failed``, ``call_in_progress|completed|failed``,
    ``call_done`` (the call item, ``name`` its tool) or ``approval_request`` (whether
    ``server_label``'s ``name`` may run).
    """

    kind: str
    item_id: str
    server_label: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitsEvent:
    """``rate_limits.updated``: the limits as the server last stated them (bounded, checked)."""

    limits: tuple[dict[str, Any], ...]


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
    | RateLimitsEvent
    | McpEvent
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
    return ResponseDoneEvent(response_id, status, reason, code, message, parse_usage(response.get("usage")))


def _parse_rate_limits(d: Mapping[str, Any], _etype: str, _fmt: AudioFormat) -> ServerEvent:
    return RateLimitsEvent(parse_rate_limits(d.get("rate_limits")))


_MCP_KINDS = {
    "mcp_list_tools.in_progress": "list_tools_in_progress",
    "mcp_list_tools.completed": "list_tools_completed",
    "mcp_list_tools.failed": "list_tools_failed",
    "response.mcp_call.in_progress": "call_in_progress",
    "response.mcp_call.completed": "call_completed",
    "response.mcp_call.failed": "call_failed",
}


def _parse_mcp(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    return McpEvent(_MCP_KINDS[etype], _str(d, "item_id", etype))


def _parse_output_item(d: Mapping[str, Any], etype: str, _fmt: AudioFormat) -> ServerEvent:
    item = _obj(d, "item", etype)
    kind = item.get("type")
    if etype == RESPONSE_OUTPUT_ITEM_DONE and kind in ("mcp_approval_request", "mcp_call"):
        name = (_opt_str(item, "name") or "")[:64]
        if kind == "mcp_call" and item.get("error"):
            name += " (error)"
        return McpEvent(
            "approval_request" if kind == "mcp_approval_request" else "call_done",
            _str(item, "id", etype),
            (_opt_str(item, "server_label") or "")[:64],
            name,
        )
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
    RATE_LIMITS_UPDATED: _parse_rate_limits,
    **dict.fromkeys(_MCP_KINDS, _parse_mcp),
}
