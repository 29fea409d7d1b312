"""The daemon's timers and alarms: the book kept on disk, rung on this device, with no network.

:class:`TimerService` owns a :class:`~earshot.timers.TimerBook` and is what the ``timers`` built-in
tools drive (:class:`~earshot.realtime.timertools.TimerControl`), and what ``earshot timers``,
``earshot stop``, status, hooks and metrics read. Its :meth:`TimerService.run` is one task of the
supervisor's TaskGroup. It sleeps until the next timer is due or something changed (no polling);
then:

- a due timer rings when the device is free: one that falls due while an exchange is in progress
  (the user talking, a reply playing) waits for it to end, and is rung then;
- ringing is the ``timer`` cue every :data:`RING_EVERY_S`, played through the playback like any cue,
  so the echo canceller hears it as the device's own sound (speech over it is the user's);
- it stops on the wake word, the button, ``earshot stop`` or speech over the ring (the conversation
  core decides which and calls :meth:`TimerService.stop_ringing`), or by itself after
  ``timers.ring_max_s``.

The book is written to ``<state_dir>/timers.json`` (atomically, off the loop) after every change,
so timers survive a restart; a timer due while the daemon was down rings when it starts, unless it
is long overdue (:data:`~earshot.timers.MISSED_GRACE_S`), which is reported as missed.

Hooks: ``timer_set``, ``timer_ringing``, ``timer_done`` (``reason``: stopped, cancelled, unanswered,
missed), each with the timer as :meth:`~earshot.timers.Timer.describe` gives it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from earshot.config import TimersConfig
from earshot.timers import Timer, TimerBook
from earshot.usage import read_json_state, write_json_state

__all__ = ["RING_EVERY_S", "TIMERS_FILE", "TimerService"]

logger = logging.getLogger(__name__)

TIMERS_FILE = "timers.json"
RING_EVERY_S = 2.0
"""One ring cue (about 0.6 s) every this many seconds while a timer rings."""
_FILE_MAX_BYTES = 64 * 1024
_IDLE_WAIT_S = 3600.0


class TimerService:
    """Timers kept, rung and reported (see the module docstring).

    Args:
        config: the ``timers`` section.
        path: the book's file, or None (nothing kept).
        ring: plays one ring cue now.
        busy: whether an exchange is in progress (a due timer waits for it).
        on_hook: fires an event hook ``(name, data)``.
        on_quiet: no timer rings any more (stopped, cancelled, unanswered).
        stats: the daemon's counters (``timers_pending``, ``timers_ringing``, ``timers_rung``), or None.
        wall: the wall clock (epoch seconds).
    """

    def __init__(
        self,
        config: TimersConfig,
        path: Path | None,
        *,
        ring: Callable[[], None],
        busy: Callable[[], bool],
        on_hook: Callable[[str, dict[str, Any]], None],
        on_quiet: Callable[[], None] = lambda: None,
        stats: Any | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._path = path
        self._ring = ring
        self._busy = busy
        self._hook = on_hook
        self._on_quiet = on_quiet
        self._stats = stats
        self._wall = wall
        self._wake = asyncio.Event()
        self._waiting = asyncio.Event()  # the task sleeps with nothing left to do (tests wait on it)
        self._rings = asyncio.Event()  # a timer rings
        self._dirty = False
        self._next_ring = 0.0
        self.book = self._load()
        self._count()

    # ------------------------------------------------------------------ what the tools drive

    def set_timer(self, seconds: float, label: str) -> dict[str, Any]:
        """A countdown timer (``set_timer``)."""
        timer = self.book.set_timer(seconds, label, self._wall())
        return self._added(timer)

    def set_alarm(self, at: str, label: str) -> dict[str, Any]:
        """An alarm at the next local ``at`` (``set_alarm``)."""
        timer = self.book.set_alarm(at, label, self._wall())
        return self._added(timer)

    def list_timers(self) -> dict[str, Any]:
        """Every timer and alarm (``list_timers``, ``earshot timers``)."""
        return {"timers": self.snapshot()}

    def cancel_timer(self, which: str) -> dict[str, Any]:
        """Cancel by id, label or ``all`` (``cancel_timer``)."""
        now = self._wall()
        gone = self.book.cancel(which)
        for timer in gone:
            logger.info("timer %s cancelled", timer.id)
            self._hook("timer_done", {**timer.describe(now), "reason": "cancelled"})
        self._changed()
        return {"cancelled": [t.describe(now) for t in gone]}

    # ------------------------------------------------------------------ what the daemon reads and does

    @property
    def ringing(self) -> bool:
        """A timer is ringing."""
        return bool(self.book.ringing())

    def snapshot(self) -> list[dict[str, Any]]:
        """The timers as status and ``earshot timers`` show them."""
        now = self._wall()
        return [t.describe(now) for t in self.book.all()]

    def stop_ringing(self, reason: str) -> list[dict[str, Any]]:
        """Stop every ringing timer (the wake word, the button, ``earshot stop``, speech over it)."""
        now = self._wall()
        done = self.book.stop()
        for timer in done:
            logger.info("timer %s stopped (%s)", timer.id, reason)
            self._hook("timer_done", {**timer.describe(now), "reason": "stopped", "by": reason})
        if done:
            self._changed()
        return [t.describe(now) for t in done]

    def poke(self) -> None:
        """Something the service waits on changed (an exchange ended): look again now."""
        self._waiting.clear()
        self._wake.set()

    async def ringing_now(self) -> None:
        """Return once a timer rings (at once if one does)."""
        await self._rings.wait()

    async def settled(self) -> None:
        """Return once the task has done what the changes so far asked (rung, written) and sleeps."""
        await self._waiting.wait()

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Ring what falls due, keep the file; until cancelled."""
        for timer in self.book.missed:
            logger.warning("timer %s (%s) was due while earshot was stopped: missed", timer.id, timer.label or "-")
            self._hook("timer_done", {**timer.describe(self._wall()), "reason": "missed"})
        if self.book.missed:
            self.book.missed.clear()
            self._dirty = True
        while True:
            self._wake.clear()
            if self._dirty:
                self._dirty = False
                await asyncio.to_thread(self._save)
            timeout = self._step(self._wall(), time.monotonic())
            if self._dirty:
                continue
            if not self._wake.is_set():
                self._waiting.set()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._waiting.clear()

    def _step(self, now: float, mono: float) -> float:
        """Ring what is due, end what rang too long; the seconds to sleep until there is more to do."""
        for timer in self.book.expire(now, self._config.ring_max_s):
            logger.info("timer %s rang for %.0f s unanswered", timer.id, self._config.ring_max_s)
            self._hook("timer_done", {**timer.describe(now), "reason": "unanswered"})
            self._dirty = True
            self._count()
        free = not self._busy()
        if free:
            for timer in self.book.due(now):
                if self._stats is not None:
                    self._stats.timers_rung += 1
                logger.info("timer %s ringing (%s)", timer.id, timer.label or timer.kind)
                self._hook("timer_ringing", timer.describe(now))
                self._dirty = True
                self._next_ring = mono
                self._count()
        waits = [_IDLE_WAIT_S]
        if self.book.ringing():
            if free and mono >= self._next_ring:
                self._ring()
                self._next_ring = mono + RING_EVERY_S
            waits.append(max(0.05, self._next_ring - mono))
            rang = min(t.rang_at or now for t in self.book.ringing())
            waits.append(max(0.05, rang + self._config.ring_max_s - now))
        due = self.book.next_due()
        if due is not None:
            # Due while an exchange runs: look again each second until it is over (the daemon pokes too).
            waits.append(max(0.0, due - now) if free else max(1.0, due - now))
        if self._dirty:
            waits.append(0.0)
        return min(waits)

    # ------------------------------------------------------------------ the file

    def _added(self, timer: Timer) -> dict[str, Any]:
        described = timer.describe(self._wall())
        logger.info("%s %s set: due %s", timer.kind, timer.id, described["due"])
        self._hook("timer_set", described)
        self._changed()
        return {timer.kind: described, "note": "it rings on this device"}

    def _changed(self) -> None:
        self._dirty = True
        self._waiting.clear()
        self._wake.set()
        self._count()

    def _count(self) -> None:
        ringing = len(self.book.ringing())
        if ringing:
            self._rings.set()
        else:
            self._rings.clear()
        if self._stats is not None:
            self._stats.timers_ringing = ringing
            self._stats.timers_pending = len(self.book) - ringing
        if not ringing:
            self._on_quiet()

    def _load(self) -> TimerBook:
        data = read_json_state(self._path, "timers", max_bytes=_FILE_MAX_BYTES)
        return TimerBook() if data is None else TimerBook.from_json(data, self._wall())

    def _save(self) -> None:
        write_json_state(self._path, self.book.to_json(), "timers")
