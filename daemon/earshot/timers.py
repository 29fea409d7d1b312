"""Local timers and alarms (issue 19): the book of them, pure.

A timer is a promise about the wall clock ("in ten minutes", "at 7:30"), and it must survive a
restart, so due times are wall-clock seconds (epoch) passed in by the caller; nothing here reads a
clock. :class:`TimerBook` holds them:

- ``set_timer(duration_s, label, now)`` and ``set_alarm("07:30", label, now)`` (the next such local
  time, today or tomorrow) add one; ``cancel(which)`` takes an id, a label or ``all``;
- ``due(now)`` moves the timers whose time has come to *ringing* and returns them; ``stop(now)``
  ends every ringing one (the user heard it), ``expire(now, ring_max_s)`` those nobody stopped;
- ``to_json()`` / :meth:`TimerBook.from_json` are its persistence. A file is checked entry by
  entry: a hostile or damaged one loses what is wrong in it, never the daemon. A timer that fell
  due while the daemon was down rings when it starts, unless it is more than :data:`MISSED_GRACE_S`
  late (an alarm from last night is not rung at noon); such a one is reported as missed.

Bounded: at most :data:`MAX_TIMERS` timers, labels of :data:`MAX_LABEL_CHARS`, durations up to
:data:`MAX_DURATION_S`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "MAX_DURATION_S",
    "MAX_LABEL_CHARS",
    "MAX_TIMERS",
    "MISSED_GRACE_S",
    "Timer",
    "TimerBook",
    "TimerError",
    "parse_clock",
]

MAX_TIMERS = 20
"""Timers and alarms kept at once (pending and ringing)."""
MAX_LABEL_CHARS = 60
MAX_DURATION_S = 24 * 3600
"""The longest timer (a day); longer waits are alarms."""
MISSED_GRACE_S = 600.0
"""A timer found due at start rings if it is at most this late; later, it is reported missed."""
_FILE_MAX_ENTRIES = 4 * MAX_TIMERS
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3])(?::([0-5]\d))?(?::([0-5]\d))?\s*$")

Kind = Literal["timer", "alarm"]
State = Literal["pending", "ringing"]


class TimerError(ValueError):
    """A request the book refuses; the message is said back to the user."""


@dataclass(slots=True)
class Timer:
    """One timer or alarm.

    Attributes:
        id: ``t<n>``, unique in this book for its life.
        kind: ``timer`` (a duration) or ``alarm`` (a time of day).
        label: what the user called it ("" if nothing).
        due: when it rings (wall-clock epoch seconds).
        created: when it was set (epoch seconds).
        duration_s: the duration asked for (timers), else None.
        state: ``pending`` or ``ringing``.
        rang_at: when it began ringing (epoch seconds), else None.
    """

    id: str
    kind: Kind
    label: str
    due: float
    created: float
    duration_s: float | None = None
    state: State = "pending"
    rang_at: float | None = field(default=None)

    def describe(self, now: float) -> dict[str, Any]:
        """What ``list_timers``, ``earshot timers``, status and hooks show of it."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "state": self.state,
            "due": dt.datetime.fromtimestamp(self.due).astimezone().isoformat(timespec="seconds"),
            "remaining_s": max(0, round(self.due - now)),
        }
        if self.duration_s is not None:
            out["duration_s"] = round(self.duration_s)
        return out

    def to_json(self) -> dict[str, Any]:
        """The persisted form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "due": self.due,
            "created": self.created,
            "duration_s": self.duration_s,
            "state": self.state,
            "rang_at": self.rang_at,
        }


def parse_clock(text: str) -> tuple[int, int, int]:
    """``"7:30"``, ``"07:30:00"`` or ``"19"`` → (hour, minute, second) on a 24-hour clock.

    Raises:
        TimerError: anything else.
    """
    m = _CLOCK.match(text)
    if m is None:
        raise TimerError(f"time {text[:20]!r} is not a 24-hour HH:MM time")
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


class TimerBook:
    """The timers and alarms (see the module docstring)."""

    def __init__(self) -> None:
        self._timers: list[Timer] = []
        self._next = 1
        self.missed: list[Timer] = []
        """Timers dropped by :meth:`from_json` as too late to ring (the caller reports, then clears them)."""

    # ------------------------------------------------------------------ reading

    def all(self) -> list[Timer]:
        """Every timer, ringing first, then by due time."""
        return sorted(self._timers, key=lambda t: (t.state != "ringing", t.due))

    def pending(self) -> list[Timer]:
        """Timers that have not rung yet, by due time."""
        return sorted((t for t in self._timers if t.state == "pending"), key=lambda t: t.due)

    def ringing(self) -> list[Timer]:
        """Timers ringing now."""
        return [t for t in self._timers if t.state == "ringing"]

    def next_due(self) -> float | None:
        """When the next pending timer rings (epoch seconds), or None."""
        pending = self.pending()
        return pending[0].due if pending else None

    def __len__(self) -> int:
        return len(self._timers)

    # ------------------------------------------------------------------ changes

    def set_timer(self, duration_s: float, label: str, now: float) -> Timer:
        """A timer of ``duration_s`` seconds from ``now``."""
        if not duration_s == duration_s or duration_s < 1 or duration_s > MAX_DURATION_S:  # NaN too
            raise TimerError(f"a timer lasts from 1 second to {MAX_DURATION_S // 3600} hours")
        return self._add("timer", label, now + float(duration_s), now, duration_s=float(duration_s))

    def set_alarm(self, at: str, label: str, now: float) -> Timer:
        """An alarm at the next local ``at`` (HH:MM) after ``now``."""
        hour, minute, second = parse_clock(at)
        local = dt.datetime.fromtimestamp(now).astimezone()
        target = local.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if target.timestamp() <= now:
            naive = (target.replace(tzinfo=None) + dt.timedelta(days=1)).replace(tzinfo=None)
            target = naive.astimezone()  # the local time tomorrow, across a DST change too
        return self._add("alarm", label, target.timestamp(), now)

    def cancel(self, which: str) -> list[Timer]:
        """Remove the timers ``which`` names (an id, a label, ``all``); raises when none matches."""
        key = which.strip().casefold()
        if key in ("all", "*"):
            gone = list(self._timers)
        else:
            gone = [t for t in self._timers if t.id.casefold() == key or (t.label and t.label.casefold() == key)]
        if not gone:
            names = ", ".join(t.id + (f" ({t.label})" if t.label else "") for t in self.all()) or "none"
            raise TimerError(f"no timer {which[:40]!r} (timers: {names})")
        self._timers = [t for t in self._timers if t not in gone]
        return gone

    def due(self, now: float) -> list[Timer]:
        """Pending timers whose time has come start ringing; returns them."""
        rung = [t for t in self._timers if t.state == "pending" and t.due <= now]
        for t in rung:
            t.state = "ringing"
            t.rang_at = now
        return rung

    def stop(self) -> list[Timer]:
        """End every ringing timer (heard and stopped); returns them."""
        done = self.ringing()
        self._timers = [t for t in self._timers if t.state != "ringing"]
        return done

    def expire(self, now: float, ring_max_s: float) -> list[Timer]:
        """End the ringing timers nobody stopped within ``ring_max_s``; returns them."""
        done = [t for t in self.ringing() if t.rang_at is not None and now - t.rang_at >= ring_max_s]
        self._timers = [t for t in self._timers if t not in done]
        return done

    def _add(self, kind: Kind, label: str, due: float, now: float, *, duration_s: float | None = None) -> Timer:
        if len(self._timers) >= MAX_TIMERS:
            raise TimerError(f"already {MAX_TIMERS} timers: cancel one first")
        clean = " ".join(str(label).split())[:MAX_LABEL_CHARS]
        timer = Timer(f"t{self._next}", kind, clean, due, now, duration_s=duration_s)
        self._next += 1
        self._timers.append(timer)
        return timer

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        """The persisted form of the whole book."""
        return {"version": 1, "next": self._next, "timers": [t.to_json() for t in self._timers]}

    @classmethod
    def from_json(cls, data: Any, now: float) -> TimerBook:
        """A book from its persisted form; what is malformed is left out, what is long overdue is missed.

        A timer that was ringing when the daemon stopped rings again (if it is not too late).
        """
        book = cls()
        if not isinstance(data, dict):
            return book
        entries = data.get("timers")
        highest = 0
        for raw in entries[:_FILE_MAX_ENTRIES] if isinstance(entries, list) else []:
            timer = _timer_from(raw)
            if timer is None or any(t.id == timer.id for t in book._timers) or len(book._timers) >= MAX_TIMERS:
                continue
            highest = max(highest, int(timer.id[1:]))
            if now - timer.due > MISSED_GRACE_S:
                book.missed.append(timer)
                continue
            timer.state, timer.rang_at = "pending", None  # rings (again) from now
            book._timers.append(timer)
        stored_next = data.get("next")
        book._next = max(highest + 1, stored_next if isinstance(stored_next, int) and 0 < stored_next < 10**9 else 1)
        return book


def _timer_from(raw: Any) -> Timer | None:
    if not isinstance(raw, dict):
        return None
    tid, kind, label, due, created = (raw.get(k) for k in ("id", "kind", "label", "due", "created"))
    duration = raw.get("duration_s")
    if not (isinstance(tid, str) and re.fullmatch(r"t[1-9]\d{0,8}", tid)):
        return None
    if kind not in ("timer", "alarm") or not isinstance(label, str):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e11 for v in (due, created)):
        return None
    if duration is not None and not (isinstance(duration, (int, float)) and 0 < duration <= MAX_DURATION_S):
        return None
    assert isinstance(due, (int, float))
    assert isinstance(created, (int, float))
    return Timer(
        tid,
        kind,
        " ".join(label.split())[:MAX_LABEL_CHARS],
        float(due),
        float(created),
        duration_s=None if duration is None else float(duration),
    )
