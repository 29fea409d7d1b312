"""What a :class:`~earshot.realtime.session.RealtimeSession` tells the app.

One frozen dataclass per event, and their union :data:`SessionEvent`. Pure data: the conversation
core takes these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from earshot.tokens import TokenUsage

__all__ = [
    "AudioDone",
    "McpActivity",
    "PlayAudio",
    "RateLimits",
    "ResponseDone",
    "ResponseStarted",
    "ServerError",
    "SessionEvent",
    "SessionExpired",
    "SessionReady",
    "SpeechStarted",
    "SpeechStopped",
    "ToolCall",
    "Transcript",
    "TurnCommitted",
]


@dataclass(frozen=True, slots=True)
class SessionReady:
    """``session.updated`` arrived: our configuration is in effect and audio flows."""

    session_id: str | None


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Assistant audio to play: mono int16 at :attr:`RealtimeSession.output_rate_hz`."""

    item_id: str
    content_index: int
    response_id: str
    pcm: NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class AudioDone:
    """No more audio will come for this item."""

    item_id: str
    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """``response.created``."""

    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """``response.done``: status is completed, cancelled, failed or incomplete."""

    response_id: str
    status: str
    reason: str | None
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class McpActivity:
    """A remote MCP tool is being asked for or run: the spoken answer comes in a later response."""

    kind: str
    server_label: str
    name: str


@dataclass(frozen=True, slots=True)
class RateLimits:
    """``rate_limits.updated``: what the server last said of the limits (for status)."""

    limits: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Server VAD heard the user start (the server-side barge-in trigger)."""

    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Server VAD heard the user stop."""

    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True)
class TurnCommitted:
    """The user's turn became the item ``item_id``."""

    item_id: str


@dataclass(frozen=True, slots=True)
class Transcript:
    """An item's transcript so far (bounded; ``final``: the whole text of the item)."""

    role: Literal["user", "assistant"]
    item_id: str
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool; answer with :meth:`RealtimeSession.tool_result`."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """A server ``error`` worth reporting (harmless ones are not reported).

    Attributes:
        code: the server's code (may be None).
        message: the server's message.
        event_id: our client event that caused it, when known.
        fatal: no retry can fix it (bad key, quota, …): the connection is given up.
        client_event_type: the type of that client event, when known.
    """

    code: str | None
    message: str
    event_id: str | None
    fatal: bool
    client_event_type: str | None = None


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The server ended the session at its 60-minute cap; a new connection continues."""


SessionEvent = (
    SessionReady
    | PlayAudio
    | AudioDone
    | ResponseStarted
    | ResponseDone
    | SpeechStarted
    | SpeechStopped
    | TurnCommitted
    | Transcript
    | ToolCall
    | ServerError
    | SessionExpired
    | RateLimits
    | McpActivity
)
