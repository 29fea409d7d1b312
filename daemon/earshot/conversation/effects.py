"""What the conversation core asks its executor to do: plain data, carried out in order.

:class:`~earshot.conversation.core.ConversationCore` decides; :class:`~earshot.pipeline.Conversation`
carries these out against the link, the playback, the stats and the app's callbacks, and decides
nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from earshot.config import ProfileConfig
from earshot.engage import Phase
from earshot.tokens import TokenUsage

__all__ = [
    "Announce",
    "CancelTools",
    "CaptureLatency",
    "CloseLink",
    "CommitAudio",
    "ConnectionState",
    "Counted",
    "DiscardTurn",
    "DuplexChanged",
    "Effect",
    "EngagementEnded",
    "EngagementStarted",
    "ErrorSeen",
    "FinishPlayback",
    "FlushAudio",
    "Hook",
    "Interrupt",
    "Measured",
    "OpenLink",
    "PhaseChanged",
    "PlayCue",
    "PlayReply",
    "RateLimitsSeen",
    "Record",
    "ReplayTurn",
    "RotateLink",
    "RunTool",
    "SendAudio",
    "StopPlayback",
    "StopRing",
    "Usage",
    "UseProfile",
]


@dataclass(frozen=True, slots=True)
class Effect:
    """Base of everything the core asks for."""


# ---------------------------------------------------------------------------------- the link


@dataclass(frozen=True, slots=True)
class OpenLink(Effect):
    """Connect (and keep reconnecting) for this engagement."""


@dataclass(frozen=True, slots=True)
class CloseLink(Effect):
    """Close the connection and forget the conversation."""

    reason: str


@dataclass(frozen=True, slots=True)
class RotateLink(Effect):
    """Replace the session now, keeping the conversation (before the server's 60-minute cap)."""


@dataclass(frozen=True, slots=True)
class UseProfile(Effect):
    """Sessions from now on use this profile's instructions, voice and tools (None: ``realtime``'s own).

    The core closes a session of another profile first: one person's conversation is not another's.
    """

    profile: ProfileConfig | None


@dataclass(frozen=True, slots=True)
class DiscardTurn(Effect):
    """Forget the user's turn sent so far (the stop phrase, said over a reply, is not a question)."""


@dataclass(frozen=True, slots=True)
class SendAudio(Effect):
    """Microphone audio at the wire rate, in order (only what the core let through)."""

    pcm: NDArray[np.int16] = field(repr=False)


@dataclass(frozen=True, slots=True)
class FlushAudio(Effect):
    """Send the partial audio batch now (the uplink stops)."""


@dataclass(frozen=True, slots=True)
class ReplayTurn(Effect):
    """After a drop: the next session gets the unanswered user turn again (``replay``), or forgets it."""

    replay: bool


@dataclass(frozen=True, slots=True)
class CommitAudio(Effect):
    """The user's turn ends here: commit the input buffer and ask for a response."""


@dataclass(frozen=True, slots=True)
class Interrupt(Effect):
    """Barge-in: stop playback now and truncate the reply at what was really heard.

    Attributes:
        local: detected on the device (so the server is asked to cancel too).
        reaction_ms: capture time from the user's speech onset to this decision, when known.
    """

    local: bool
    reaction_ms: float | None


@dataclass(frozen=True, slots=True)
class RunTool(Effect):
    """Start a tool call; its output goes back through the link."""

    call_id: str
    name: str
    arguments: str


# ---------------------------------------------------------------------------------- playback


@dataclass(frozen=True, slots=True)
class PlayReply(Effect):
    """Reply audio of ``item_id`` at ``rate_hz`` (the wire rate): fit it to the queue, resample, queue it."""

    item_id: str
    pcm: NDArray[np.int16] = field(repr=False)
    rate_hz: int


@dataclass(frozen=True, slots=True)
class PlayCue(Effect):
    """A whole earcon (24 kHz), played as a reply of its own."""

    key: str
    pcm: NDArray[np.int16] = field(repr=False)


@dataclass(frozen=True, slots=True)
class FinishPlayback(Effect):
    """No more audio of this reply: play out what is queued, then report it finished."""


@dataclass(frozen=True, slots=True)
class StopPlayback(Effect):
    """Drop a reply nobody has heard yet (the user went on talking)."""


# ---------------------------------------------------------------------------------- the app


@dataclass(frozen=True, slots=True)
class CaptureLatency(Effect):
    """Short capture periods (``low``) while engaged, long ones while idle (fewer wake-ups)."""

    low: bool


@dataclass(frozen=True, slots=True)
class CancelTools(Effect):
    """The engagement is over: tool calls still running have no listener; cancel them."""


@dataclass(frozen=True, slots=True)
class Announce(Effect):
    """Have the session say ``text`` out of band (an announcement)."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage(Effect):
    """A response's tokens, for the counters and the cost estimate."""

    tokens: TokenUsage


@dataclass(frozen=True, slots=True)
class RateLimitsSeen(Effect):
    """The server's rate limits as it last stated them (status)."""

    limits: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class StopRing(Effect):
    """A ringing timer is answered (the wake word, the button, speech over it): stop it."""

    by: str


@dataclass(frozen=True, slots=True)
class PhaseChanged(Effect):
    """The phase changed (status line, hooks, counters)."""

    old: Phase
    new: Phase
    reason: str


@dataclass(frozen=True, slots=True)
class Hook(Effect):
    """Fire an event hook (``wake``, ``error``, ``offline``…)."""

    name: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Record(Effect):
    """Audio worth a debug recording: ``wake`` (engine, score) or ``turn`` (turn)."""

    kind: Literal["wake", "turn"]
    pcm: NDArray[np.int16] = field(repr=False)
    info: dict[str, Any]


# ---------------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class Counted(Effect):
    """One more of: a wake word heard, a user turn, a reconnect."""

    what: Literal["wake", "turn", "reconnect"]


@dataclass(frozen=True, slots=True)
class Measured(Effect):
    """A latency of this engagement: wake → session ready, or end of turn → reply heard."""

    what: Literal["session_ready", "reply_started"]
    ms: float


@dataclass(frozen=True, slots=True)
class ConnectionState(Effect):
    """``connecting``, ``connected``, ``disconnected`` or ``resting``."""

    state: Literal["connecting", "connected", "disconnected", "resting"]


@dataclass(frozen=True, slots=True)
class DuplexChanged(Effect):
    """The duplex mode the barge-in detector runs in (``full``, ``gated``, ``half``)."""

    mode: str


@dataclass(frozen=True, slots=True)
class ErrorSeen(Effect):
    """An error worth counting and showing in status."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class EngagementStarted(Effect):
    """An engagement began from IDLE."""

    trigger: str


@dataclass(frozen=True, slots=True)
class EngagementEnded(Effect):
    """The engagement is over."""

    reason: str
