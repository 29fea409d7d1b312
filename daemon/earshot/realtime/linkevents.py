"""What the Realtime link reports besides the session's own events: pure data.

Apart from :mod:`earshot.realtime.connection` (the WebSocket edge), so that the conversation core can
match on them without importing websockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from earshot.realtime.policy import Verdict
from earshot.realtime.session import SessionEvent

__all__ = ["LinkDown", "LinkEvent", "OfflineOverflow"]


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The connection failed or ended; the next attempt is in ``retry_in_s``.

    Attributes:
        error: one line saying why (never the key).
        verdict: RETRY or FATAL_FOR_NOW (bad key, quota …: slow retry).
        retry_in_s: delay before the next attempt.
        attempt: consecutive failures.
        retry_at: the loop time of the next attempt (the event may be taken a little later).
    """

    error: str
    verdict: Verdict
    retry_in_s: float
    attempt: int
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class OfflineOverflow:
    """More than ``reconnect.offline_buffer_s`` of audio arrived while disconnected: end the engagement."""


LinkEvent = SessionEvent | LinkDown | OfflineOverflow
