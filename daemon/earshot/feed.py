"""The live event stream behind ``earshot follow``: every hook event, as it happens, to each follower.

The daemon publishes what it tells its hooks (phases, wakes, transcripts, timers, ducking, errors)
with the wall-clock time; each follower (a control-socket connection that asked to ``follow``) has
its own bounded queue. A slow or stuck follower loses its oldest events (counted, and said in the
next one it gets), never the daemon's time or memory; there are at most :data:`MAX_FOLLOWERS`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from earshot.errors import DaemonError

__all__ = ["MAX_FOLLOWERS", "QUEUE_EVENTS", "EventFeed", "Follower"]

MAX_FOLLOWERS = 4
QUEUE_EVENTS = 256
"""Events a follower may be behind before its oldest are dropped."""


class Follower:
    """One follower's queue (see :meth:`EventFeed.follow`)."""

    def __init__(self, feed: EventFeed) -> None:
        self._feed = feed
        self._queue: deque[dict[str, Any]] = deque(maxlen=QUEUE_EVENTS)
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (the oldest is dropped when the queue is full)."""
        if len(self._queue) == QUEUE_EVENTS:
            self.dropped += 1
        self._queue.append(event)
        self._ready.set()

    async def next(self) -> dict[str, Any]:
        """The next event (waits for one); ``dropped`` says how many were lost before it."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        event = self._queue.popleft()
        if self.dropped:
            event = {**event, "dropped": self.dropped}
            self.dropped = 0
        return event

    def close(self) -> None:
        """Stop following."""
        self._feed._followers.discard(self)


class EventFeed:
    """Publishes events to the followers (see the module docstring)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._followers: set[Follower] = set()
        self._wall = wall

    def publish(self, event: str, data: dict[str, Any]) -> None:
        """One event to every follower; never blocks."""
        if not self._followers:
            return
        item = {"t": round(self._wall(), 3), "event": event, "data": data}
        for follower in self._followers:
            follower.put(item)

    def follow(self) -> Follower:
        """A new follower; :class:`DaemonError` when there are already :data:`MAX_FOLLOWERS`."""
        if len(self._followers) >= MAX_FOLLOWERS:
            raise DaemonError(f"already {MAX_FOLLOWERS} followers")
        follower = Follower(self)
        self._followers.add(follower)
        return follower
