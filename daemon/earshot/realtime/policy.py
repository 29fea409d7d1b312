"""Reconnect policy (pure): error classification, backoff with full jitter, history trimming.

Nothing here does I/O or reads a clock: the connection loop asks :class:`Reconnector` how long
to wait after a failure and sleeps itself.

Classification (PROTOCOL.md §4.5, §4.7):

* **RETRY** with exponential backoff: network errors, handshake timeouts, HTTP 5xx / 429 on the
  upgrade, close codes 1001/1006/1011/1012/1013 (and any other close), ``session_expired``,
  rate limits, malformed server messages, a missed ready deadline.
* **FATAL_FOR_NOW**: ``invalid_api_key``, ``insufficient_quota``, ``account_deactivated``,
  ``billing_hard_limit_reached``, ``beta_api_shape_disabled`` (close 4000), HTTP 401/403 (bad key),
  404 (unknown model), other 4xx, a missing credential or a bad URL. Fast retries stop; a slow
  retry continues (``reconnect.slow_retry_s``), and :meth:`Reconnector.reset` (SIGHUP, a changed
  credential) makes the next attempt immediate.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from earshot.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    HandshakeError,
    RealtimeError,
    RealtimeServerError,
)
from earshot.realtime import events

__all__ = ["HistoryItem", "Reconnector", "Verdict", "backoff", "classify", "trim_history"]

RETRY_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013})
"""Close codes that mean "try again": going away (session expiry), abnormal, server error, restart, try later."""
BETA_DISABLED_CLOSE_CODE = 4000
"""Reported by third parties after ``beta_api_shape_disabled``."""


class Verdict(enum.Enum):
    """What the reconnect loop does after a failure."""

    RETRY = "retry"
    FATAL_FOR_NOW = "fatal_for_now"


def classify(error: BaseException) -> Verdict:
    """Classify a connection failure.

    Args:
        error: the exception that ended (or prevented) a connection: an ``earshot.errors``
            exception as mapped by the connection module, or a bare ``OSError``/``TimeoutError``.

    Returns:
        :attr:`Verdict.FATAL_FOR_NOW` when retrying cannot help until someone acts, else
        :attr:`Verdict.RETRY`.
    """
    if isinstance(error, (AuthenticationError, ConfigError)):
        return Verdict.FATAL_FOR_NOW
    if isinstance(error, RealtimeServerError):
        return Verdict.FATAL_FOR_NOW if error.code in events.FATAL_CODES else Verdict.RETRY
    if isinstance(error, HandshakeError):
        status = error.status
        if status is None or status == 429 or status >= 500 or status == 408:
            return Verdict.RETRY
        return Verdict.FATAL_FOR_NOW  # 401/403 bad key, 404 unknown model, other 4xx: our request is wrong
    status = getattr(error, "status", None)
    if isinstance(error, RealtimeError) and isinstance(status, int):  # e.g. the token endpoint's HTTP status
        return Verdict.RETRY if status in (408, 429) or status >= 500 else Verdict.FATAL_FOR_NOW
    if isinstance(error, ConnectionLost):
        return Verdict.FATAL_FOR_NOW if error.code == BETA_DISABLED_CLOSE_CODE else Verdict.RETRY
    # OSError (refused, unreachable, reset), TimeoutError, RemoteProtocolError, anything else in the tree
    return Verdict.RETRY


def backoff(initial_s: float, max_s: float, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with full jitter: the n-th delay is uniform in [0, min(max_s, initial_s·2ⁿ)].

    Args:
        initial_s: the cap of the first delay.
        max_s: the largest cap.
        rng: the random source (seeded in tests).

    Yields:
        Delays in seconds, forever.
    """
    cap = initial_s
    while True:
        yield rng.uniform(0.0, min(cap, max_s))
        cap = min(cap * 2.0, max_s)


@dataclass(frozen=True, slots=True)
class Delay:
    """The answer of :meth:`Reconnector.failed`."""

    seconds: float
    verdict: Verdict
    attempt: int
    """Consecutive failures so far (1 after the first)."""


class Reconnector:
    """Pure retry bookkeeping for the connection loop.

    Args:
        initial_s: first backoff cap (``reconnect.initial_s``).
        max_s: backoff cap (``reconnect.max_s``).
        slow_retry_s: the delay between attempts while fatal-for-now (``reconnect.slow_retry_s``).
        rng: random source for the jitter.
    """

    def __init__(self, *, initial_s: float, max_s: float, slow_retry_s: float, rng: random.Random) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._slow_retry_s = slow_retry_s
        self._rng = rng
        self._delays: Iterator[float] | None = None
        self.attempt = 0

    def failed(self, error: BaseException, *, stayed_up: bool) -> Delay:
        """Record a failed or ended connection and say how long to wait before the next one.

        Args:
            error: what ended it.
            stayed_up: the connection reached a ready session (backoff starts over, like websockets).
        """
        if stayed_up:
            self._delays = None
            self.attempt = 0
        self.attempt += 1
        verdict = classify(error)
        if verdict is Verdict.FATAL_FOR_NOW:
            self._delays = None
            return Delay(self._slow_retry_s, verdict, self.attempt)
        if self._delays is None:
            self._delays = backoff(self._initial_s, self._max_s, self._rng)
        return Delay(next(self._delays), verdict, self.attempt)

    def reset(self) -> None:
        """Forget past failures (a clean close, SIGHUP, a changed credential)."""
        self._delays = None
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One conversation turn kept as text for replay into a new session (PROTOCOL.md §4.7).

    Attributes:
        role: who said it.
        text: the transcript (an assistant item cut by barge-in keeps about what was heard).
        truncated: the assistant was interrupted in this item.
    """

    role: Literal["user", "assistant"]
    text: str
    truncated: bool = False


def trim_history(items: Sequence[HistoryItem], *, max_items: int, max_chars: int) -> list[HistoryItem]:
    """The most recent items that fit both bounds, oldest first.

    Items are dropped whole from the oldest end; an item longer than what is left of
    ``max_chars`` ends the walk (so the replayed history is always a contiguous suffix).
    Empty items are skipped.
    """
    kept: list[HistoryItem] = []
    chars = 0
    for item in reversed(items):
        if not item.text.strip():
            continue
        if len(kept) >= max_items or chars + len(item.text) > max_chars:
            break
        kept.append(item)
        chars += len(item.text)
    kept.reverse()
    return kept
