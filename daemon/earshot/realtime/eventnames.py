"""The Realtime API's (GA) event names and error codes: the wire spelling, in one place (PROTOCOL.md §3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

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

__all__ = [
    "CANCEL_FAILED_PREFIX",
    "CODE_ACTIVE_RESPONSE",
    "CODE_BETA_DISABLED",
    "CODE_COMMIT_EMPTY",
    "CODE_RATE_LIMIT",
    "CODE_RESPONSE_CANCEL_NOT_ACTIVE",
    "CODE_SESSION_EXPIRED",
    "CONVERSATION_ITEM_ADDED",
    "CONVERSATION_ITEM_CREATE",
    "CONVERSATION_ITEM_CREATED",
    "CONVERSATION_ITEM_DELETE",
    "CONVERSATION_ITEM_DONE",
    "CONVERSATION_ITEM_TRUNCATE",
    "CONVERSATION_ITEM_TRUNCATED",
    "ERROR",
    "FATAL_CODES",
    "INPUT_AUDIO_BUFFER_APPEND",
    "INPUT_AUDIO_BUFFER_CLEAR",
    "INPUT_AUDIO_BUFFER_CLEARED",
    "INPUT_AUDIO_BUFFER_COMMIT",
    "INPUT_AUDIO_BUFFER_COMMITTED",
    "INPUT_AUDIO_BUFFER_TIMEOUT_TRIGGERED",
    "INPUT_TRANSCRIPTION_COMPLETED",
    "INPUT_TRANSCRIPTION_DELTA",
    "INPUT_TRANSCRIPTION_FAILED",
    "RATE_LIMITS_UPDATED",
    "RESPONSE_CANCEL",
    "RESPONSE_CREATE",
    "RESPONSE_CREATED",
    "RESPONSE_DONE",
    "RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE",
    "RESPONSE_OUTPUT_AUDIO_DELTA",
    "RESPONSE_OUTPUT_AUDIO_DONE",
    "RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA",
    "RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE",
    "RESPONSE_OUTPUT_ITEM_ADDED",
    "RESPONSE_OUTPUT_ITEM_DONE",
    "RESPONSE_OUTPUT_TEXT_DELTA",
    "RESPONSE_OUTPUT_TEXT_DONE",
    "SESSION_CREATED",
    "SESSION_UPDATE",
    "SESSION_UPDATED",
    "SPEECH_STARTED",
    "SPEECH_STOPPED",
    "TRUNCATE_NOT_AUDIO_MARKER",
    "TRUNCATE_TOO_LONG_MARKER",
    "WIRE_RATE_HZ",
    "AudioFormat",
]

"""Error codes that no retry can fix until a person acts (PROTOCOL.md §4.5)."""
TRUNCATE_TOO_LONG_MARKER = "already shorter than"
TRUNCATE_NOT_AUDIO_MARKER = "Only model output audio messages can be truncated"
CANCEL_FAILED_PREFIX = "Cancellation failed"

WIRE_RATE_HZ: Mapping[str, int] = {"pcm16": 24000, "g711_ulaw": 8000, "g711_alaw": 8000}
