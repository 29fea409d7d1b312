"""The usage ledger: connected seconds per local calendar day, kept in ``<state_dir>/usage.json``.

:class:`UsageLedger` is the arithmetic (pure): an amount of connected time, measured on the
monotonic clock, is attributed to local days by the wall clock at its end, split at midnight; a
wall-clock jump (NTP setting the clock of a Pi without an RTC) therefore neither invents nor erases
connected minutes. :func:`load_ledger` and :func:`save_ledger` are its persistence (written
atomically by :func:`atomic_write`, never raising on a full disk), so ``gate.daily_cap_minutes``
survives restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "USAGE_FILE",
    "UsageLedger",
    "atomic_write",
    "load_ledger",
    "read_json_state",
    "save_ledger",
    "write_json_state",
]

logger = logging.getLogger(__name__)

USAGE_FILE = "usage.json"
KEEP_DAYS = 35
"""Days kept in the file (the newest)."""


class UsageLedger:
    """Connected seconds per local day (ISO date keys)."""

    def __init__(self, days: dict[str, float] | None = None) -> None:
        self._days: dict[str, float] = dict(days or {})
        self.dirty = False
        """Changed since it was last saved."""

    def add(self, amount_s: float, end_wall: float) -> None:
        """Attribute ``amount_s`` seconds that ended at ``end_wall`` (Unix time) to local days."""
        if amount_s <= 0:
            return
        end = end_wall
        start = end - amount_s
        while end > start:
            day = dt.datetime.fromtimestamp(end)
            midnight = day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            if midnight >= end:  # exactly at midnight: the time before it belongs to the day before
                day = dt.datetime.fromtimestamp(end - 1.0)
                midnight = day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            segment_start = max(start, midnight)
            key = day.date().isoformat()
            self._days[key] = self._days.get(key, 0.0) + (end - segment_start)
            end = segment_start
        self._trim()
        self.dirty = True

    def _trim(self) -> None:
        for old in sorted(self._days)[:-KEEP_DAYS]:  # the byte bound: the newest KEEP_DAYS days
            del self._days[old]

    def seconds_on(self, now_wall: float) -> float:
        """Connected seconds on the local day of ``now_wall``."""
        return self._days.get(dt.datetime.fromtimestamp(now_wall).date().isoformat(), 0.0)

    def to_json(self) -> str:
        """The file's content (at most the newest :data:`KEEP_DAYS` days: :meth:`add` keeps no more)."""
        body = {"version": 1, "connected_seconds": {k: round(self._days[k], 3) for k in sorted(self._days)}}
        return json.dumps(body, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> UsageLedger:
        """Parse a file's content; entries that are not a date with a finite, non-negative number are skipped.

        Raises:
            ValueError: not JSON, or not the ledger's shape.
        """
        raw = json.loads(text)
        days = raw.get("connected_seconds") if isinstance(raw, dict) else None
        if not isinstance(days, dict):
            raise ValueError("unexpected content")
        ledger = cls()
        for key, value in days.items():
            try:
                dt.date.fromisoformat(key)
            except (TypeError, ValueError):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
                ledger._days[key] = float(value)
        ledger._trim()
        return ledger


def load_ledger(path: Path | None) -> UsageLedger:
    """The ledger in ``path``; an empty one when there is none, or it is unreadable (logged)."""
    if path is None:
        return UsageLedger()
    try:
        return UsageLedger.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return UsageLedger()
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable usage file %s: %s", path, exc)
        return UsageLedger()


def save_ledger(path: Path | None, ledger: UsageLedger) -> bool:
    """Write ``ledger`` to ``path`` atomically if it changed; whether a write happened.

    Failures are logged at WARNING and never raised: a full disk must not stop the daemon.
    """
    if path is None or not ledger.dirty:
        return False
    try:
        atomic_write(path, ledger.to_json(), mode=0o600)
    except OSError as exc:
        logger.warning("cannot save connected-time usage to %s: %s", path, exc)
        return False
    ledger.dirty = False
    return True


def read_json_state(path: Path | None, what: str, *, max_bytes: int) -> Any:
    """The JSON kept in ``path`` (timers, the volume); None when there is none, or it is unreadable.

    Reads at most ``max_bytes`` (a larger file is refused: a hostile one must not fill the memory);
    what is wrong is logged at WARNING naming ``what``, never raised.
    """
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(f"over {max_bytes} bytes")
        return json.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s file %s: %s", what, path, exc)
        return None


def write_json_state(path: Path | None, data: Any, what: str) -> bool:
    """Keep ``data`` as JSON in ``path`` (atomically, mode 0600); whether it was written (failures logged)."""
    if path is None:
        return False
    try:
        atomic_write(path, json.dumps(data), mode=0o600)
    except OSError as exc:
        logger.warning("cannot save the %s to %s: %s", what, path, exc)
        return False
    return True


def atomic_write(path: Path, text: str, *, mode: int) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, fsync, chmod, rename.

    Readers (node-exporter, a restarted daemon) see the old file or the new one, never a part.

    Raises:
        OSError: the directory cannot be created or written; the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two writers (a periodic task and a last write on exit) never collide.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(text.encode("utf-8"))
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
