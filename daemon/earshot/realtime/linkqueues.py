"""The link's two byte-bounded queues: frames for the writer task, events for the app's task.

:class:`SendQueue` holds frames waiting for the socket: control frames always fit, audio is bounded
(the link decides what a full queue means: a loop catching up, or a stalled network).
:class:`EventQueue` holds what the connection received, in order, for the one task that drains it
(as websockets' ``recv`` does): over its bound the reader stops reading the socket until the app
catches up, so nothing is dropped and TCP holds the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from earshot.realtime import events as ev
from earshot.realtime.linkevents import LinkEvent

__all__ = ["EventQueue", "SendQueue"]

_APPEND_PREFIX = '{"type":"' + ev.INPUT_AUDIO_BUFFER_APPEND + '"'
_EVENT_OVERHEAD_BYTES = 256
"""Bytes counted per queued event besides its audio."""


class SendQueue:
    """Frames waiting for the writer. Control frames always fit; audio is bounded.

    Args:
        max_audio_chars: bound on the queued ``input_audio_buffer.append`` frames, in characters.
    """

    def __init__(self, max_audio_chars: int) -> None:
        self._frames: deque[str] = deque()
        self._audio_chars = 0
        self.max_audio_chars = max_audio_chars
        self.ready = asyncio.Event()

    def put(self, frame: str, *, limit: int | None = None) -> bool:
        """Queue a frame; False (and nothing queued) when audio would exceed the bound (or ``limit``)."""
        if frame.startswith(_APPEND_PREFIX):
            if self._audio_chars + len(frame) > (self.max_audio_chars if limit is None else limit):
                return False
            self._audio_chars += len(frame)
        self._frames.append(frame)
        self.ready.set()
        return True

    def pop(self) -> str | None:
        """The oldest frame, or None."""
        if not self._frames:
            self.ready.clear()
            return None
        frame = self._frames.popleft()
        if frame.startswith(_APPEND_PREFIX):
            self._audio_chars -= len(frame)
        return frame

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def audio_chars(self) -> int:
        """Characters of audio frames queued."""
        return self._audio_chars


class EventQueue:
    """The link's events for the app's one task, in order, with a byte bound the reader waits on."""

    def __init__(self, max_bytes: int) -> None:
        self._events: deque[tuple[LinkEvent, int]] = deque()
        self._bytes = 0
        self.max_bytes = max_bytes
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def put(self, event: LinkEvent) -> None:
        """Queue one event (never waits: whoever reads the socket waits for room before reading)."""
        pcm = getattr(event, "pcm", None)
        size = _EVENT_OVERHEAD_BYTES + (int(pcm.nbytes) if isinstance(pcm, np.ndarray) else 0)
        self._events.append((event, size))
        self._bytes += size
        self._ready.set()
        if self._bytes > self.max_bytes:
            self._room.clear()

    async def get(self) -> LinkEvent:
        """The oldest event, waiting for one."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        event, size = self._events.popleft()
        self._bytes -= size
        if self._bytes <= self.max_bytes:
            self._room.set()
        return event

    async def room(self) -> None:
        """Wait until the queue is within its bound."""
        await self._room.wait()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def queued_bytes(self) -> int:
        """Bytes (estimated) of the events waiting."""
        return self._bytes
