"""Server events for the RealtimeSession tests, each checked against the SDK model when built."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.config import RealtimeConfig
from earshot.realtime.session import RealtimeSession, SessionEvent
from tests.support.schema import check_client_event, validate_server_event

_seq = 0


def _ev(event: dict[str, Any]) -> str:
    global _seq
    _seq += 1
    event = {"event_id": f"event_{_seq}", **event}
    validate_server_event(event)
    return json.dumps(event)


def session_created() -> str:
    return _ev(
        {
            "type": "session.created",
            "session": {"type": "realtime", "id": "sess_1", "object": "realtime.session", "expires_at": 1900000000},
        }
    )


def session_updated() -> str:
    return _ev({"type": "session.updated", "session": {"type": "realtime", "id": "sess_1"}})


def error(code: str | None, message: str, event_id: str | None = None, etype: str = "invalid_request_error") -> str:
    return _ev(
        {
            "type": "error",
            "error": {"type": etype, "code": code, "message": message, "param": None, "event_id": event_id},
        }
    )


def response(kind: str, response_id: str, status: str = "in_progress", **details: Any) -> str:
    body: dict[str, Any] = {"id": response_id, "object": "realtime.response", "status": status, "output": []}
    if details:
        body["status_details"] = details
    return _ev({"type": f"response.{kind}", "response": body})


def output_item_added(response_id: str, item_id: str) -> str:
    return _ev(
        {
            "type": "response.output_item.added",
            "response_id": response_id,
            "output_index": 0,
            "item": {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []},
        }
    )


def audio_delta(response_id: str, item_id: str, pcm: NDArray[np.int16]) -> str:
    return _ev(
        {
            "type": "response.output_audio.delta",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
        }
    )


def audio_done(response_id: str, item_id: str) -> str:
    return _ev(
        {
            "type": "response.output_audio.done",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
    )


def transcript_done(response_id: str, item_id: str, text: str) -> str:
    return _ev(
        {
            "type": "response.output_audio_transcript.done",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "transcript": text,
        }
    )


def transcript_delta(response_id: str, item_id: str, text: str) -> str:
    return _ev(
        {
            "type": "response.output_audio_transcript.delta",
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        }
    )


def speech_started(ms: int, item_id: str) -> str:
    return _ev({"type": "input_audio_buffer.speech_started", "audio_start_ms": ms, "item_id": item_id})


def speech_stopped(ms: int, item_id: str) -> str:
    return _ev({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ms, "item_id": item_id})


def committed(item_id: str) -> str:
    return _ev({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None})


def user_transcript(item_id: str, text: str) -> str:
    return _ev(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": 1.0},
        }
    )


def function_call_done(response_id: str, call_id: str, name: str, arguments: str) -> str:
    return _ev(
        {
            "type": "response.function_call_arguments.done",
            "response_id": response_id,
            "item_id": "item_fc",
            "output_index": 0,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
        }
    )


class Driver:
    """A RealtimeSession with its outputs collected; every client message is schema-checked."""

    def __init__(self, config: RealtimeConfig, **kwargs: Any) -> None:
        self.session = RealtimeSession(config, **kwargs)
        self.now = 100.0

    def feed(self, *raw: str | bytes) -> None:
        for message in raw:
            self.session.receive_message(message, self.now)

    def sent(self) -> list[dict[str, Any]]:
        out = [json.loads(m) for m in self.session.messages_to_send()]
        for message in out:
            check_client_event(message)
        return out

    def events(self) -> list[SessionEvent]:
        return self.session.events_received()

    def ready(self) -> None:
        self.session.connection_opened(self.now)
        self.feed(session_created())
        self.feed(session_updated())


def decode_appends(messages: list[dict[str, Any]]) -> NDArray[np.int16]:
    parts = [
        np.frombuffer(base64.b64decode(m["audio"]), dtype="<i2")
        for m in messages
        if m["type"] == "input_audio_buffer.append"
    ]
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)


def ramp(n: int, start: int = 0) -> NDArray[np.int16]:
    return ((np.arange(start, start + n) % 2000) - 1000).astype(np.int16)
