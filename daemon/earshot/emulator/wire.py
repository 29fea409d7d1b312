"""What the emulator's protocol core is made of: wire constants, ids, the default session, records' redaction.

Pure data and helpers for :mod:`earshot.emulator.protocol` and :mod:`earshot.emulator.replies`.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CLIENT_TYPES",
    "HUGE_MESSAGE_BYTES",
    "MIN_COMMIT_MS",
    "PATH",
    "SEMANTIC_SILENCE_MS",
    "Out",
    "ServerError",
    "check_format",
    "default_session",
    "merge_session",
    "new_id",
    "redact",
    "strip_audio",
]

PATH = "/v1/realtime"
MIN_COMMIT_MS = 100
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 400}
HUGE_MESSAGE_BYTES = 10 * 1024 * 1024
CLIENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)


def new_id(prefix: str) -> str:
    """A fresh server id: ``prefix`` and 20 hex digits."""
    return f"{prefix}_{secrets.token_hex(10)}"


def redact(event: dict[str, Any]) -> dict[str, Any]:
    """A copy for the record with audio payloads replaced by their size."""
    out = dict(event)
    for key in ("audio", "delta") if event.get("type") in AUDIO_TYPES else ():
        value = out.get(key)
        if isinstance(value, str):
            out[key] = f"<{len(value) * 3 // 4} bytes>"
    if event.get("type") == "conversation.item.create" and isinstance(out.get("item"), dict):
        out["item"] = strip_audio(out["item"])
    return out


AUDIO_TYPES = frozenset({"input_audio_buffer.append", "response.output_audio.delta"})


def strip_audio(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of an item without its audio payloads (for the records)."""
    item = dict(item)
    content = item.get("content")
    if isinstance(content, list):
        item["content"] = [
            {k: v for k, v in part.items() if k != "audio"} if isinstance(part, dict) else part for part in content
        ]
    return item


def default_session(model: str, expires_at: int) -> dict[str, Any]:
    """The full GA session a new connection starts with (what ``session.created`` carries)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": model,
        "expires_at": expires_at,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful assistant emulated by earshot.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
        },
    }


def merge_session(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of a ``session.update``: only fields sent change; an explicit null clears."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key in ("turn_detection", "format", "noise_reduction", "transcription") or not isinstance(value, dict):
            out[key] = copy.deepcopy(value)
        elif isinstance(out.get(key), dict):
            out[key] = merge_session(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_format(fmt: Any, param: str) -> str | None:
    """Why a GA audio format object is unsupported, or None."""
    if not isinstance(fmt, dict):
        return f"{param} must be an object"
    kind = fmt.get("type")
    if kind == "audio/pcm":
        rate = fmt.get("rate", 24000)
        return None if rate == 24000 else f"{param}.rate: only 24000 is supported for audio/pcm, got {rate}"
    if kind in ("audio/pcmu", "audio/pcma"):
        return None
    return f"{param}.type: unsupported audio format {kind!r}"


@dataclass
class Out:
    """One thing for the shell to send, in order, no earlier than ``due`` (monotonic seconds)."""

    due: float
    text: str | None
    kind: str
    close: tuple[int, str] | None = None
    raw: bool = False
    size: int = 0  # > 0: send ``text`` as the head of one fragmented message of this many characters


class ServerError(Exception):
    """A client event the server refuses: sent back as an ``error`` event."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
