"""The daemon's counters, gauges and latency histograms in one place, and the daily usage ledger.

:class:`Stats` is pure: every method that depends on time takes ``now`` (monotonic seconds) and,
where a calendar day matters, ``now_wall`` (Unix seconds). The app updates it as things happen;
``earshot status`` (:mod:`earshot.control`), the Prometheus exposition (:mod:`earshot.metrics`) and
the journal summary (:func:`earshot.summary.engagement_summary`) read it.

Connected time is counted per *local* calendar day in a :class:`~earshot.usage.UsageLedger`,
persisted to ``<state_dir>/usage.json`` by :mod:`earshot.usage` so that ``gate.daily_cap_minutes``
survives restarts. The amount of time is measured on the monotonic clock and only attributed to
days by the wall clock, so a wall-clock jump neither invents nor erases connected minutes.

Nothing here ever holds the API key; error texts are passed through :func:`earshot.logs.redact`
before they are kept.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import enum
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earshot.config import PricesConfig
from earshot.logs import redact
from earshot.tokens import TokenLedger, TokenUsage
from earshot.usage import USAGE_FILE, load_ledger, save_ledger

__all__ = [
    "CONNECTION_STATES",
    "LATENCY_BUCKETS_MS",
    "PHASES",
    "EngagementRecord",
    "Histogram",
    "Stats",
]

logger = logging.getLogger(__name__)

PHASES = ("idle", "connecting", "listening", "thinking", "speaking", "follow_up")
"""Engagement phases as reported (lower-case names of the engagement machine's phases)."""

CONNECTION_STATES = ("disconnected", "connecting", "connected", "offline", "resting")
"""``disconnected``: no session (normal in IDLE); ``offline``: the service cannot be reached;
``resting``: fatal-for-now error (bad key, quota) or the daily cap reached."""

LATENCY_BUCKETS_MS: tuple[float, ...] = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)
"""Upper bounds (ms, inclusive, Prometheus ``le``) of the latency histograms; ``+Inf`` is implicit."""

_ERROR_TEXT_MAX = 300
MAX_ERROR_KINDS = 32
"""Distinct error names counted (status, metrics labels); later new ones count as ``other``."""


class Histogram:
    """A cumulative histogram with fixed upper bounds, as Prometheus exposes them.

    Args:
        bounds: strictly increasing finite upper bounds; ``+Inf`` is added implicitly.
    """

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        if any(b >= c for b, c in itertools.pairwise(bounds)) or not all(math.isfinite(b) for b in bounds):
            raise ValueError("histogram bounds must be finite and strictly increasing")
        self.bounds: tuple[float, ...] = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation; NaN is ignored, negatives are clamped to 0 (clock skew)."""
        if math.isnan(value):
            return
        value = max(0.0, value)
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper_bound, observations <= bound)`` for every bound, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def snapshot(self) -> dict[str, Any]:
        """JSON-able form: count, sum, mean and cumulative buckets keyed by bound (``"+Inf"`` last)."""
        return {
            "count": self.count,
            "sum": round(self.sum, 3),
            "mean": round(self.sum / self.count, 1) if self.count else None,
            "buckets": {("+Inf" if math.isinf(b) else f"{b:g}"): n for b, n in self.cumulative()},
        }


@dataclass(slots=True)
class EngagementRecord:
    """What happened during one engagement (from the trigger to the return to IDLE).

    Attributes:
        engagement_id: short id, also written into recordings' sidecars.
        trigger: what engaged (``wakeword``, ``vad``, ``button``, ``control``...).
        started_at: monotonic start.
        started_wall: Unix time of the start.
        ended_at: monotonic end (None while running).
        end_reason: why it ended (``follow_up_over``, ``cancel``, ``max_length``, ``error``...).
        turns: user turns committed.
        bargeins: replies interrupted by the user.
        reconnects: connections lost and re-opened during it.
        errors: errors counted during it.
        wake_to_ready_ms: engagement to session ready (None if it never became ready).
        reply_start_ms: end of each user turn to the first reply audio played.
        bargein_ms: speech onset to the reply stopping, per barge-in.
    """

    engagement_id: str
    trigger: str
    started_at: float
    started_wall: float
    ended_at: float | None = None
    end_reason: str | None = None
    turns: int = 0
    bargeins: int = 0
    reconnects: int = 0
    errors: int = 0
    wake_to_ready_ms: float | None = None
    reply_start_ms: list[float] = field(default_factory=list)
    tokens: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    bargein_ms: list[float] = field(default_factory=list)

    def duration_s(self, now: float) -> float:
        """Seconds since the start (to the end once ended)."""
        end = self.ended_at if self.ended_at is not None else now
        return max(0.0, end - self.started_at)


FALSE_BARGEIN_ENDS = frozenset({"nobody spoke", "follow-up window over"})
"""Engagement ends that, with no turn since a barge-in, make it a false one (not a cancel or a stop word)."""


class Stats:
    """Counters, gauges and histograms of the running daemon.

    Args:
        state_dir: where ``usage.json`` lives; None keeps usage in memory only.
        now: monotonic time of creation (uptime starts here).
        now_wall: Unix time of creation.

    Attributes are public for reading; change them through the methods, which keep the
    per-engagement record and the usage ledger consistent.
    """

    def __init__(self, *, state_dir: Path | None, now: float, now_wall: float) -> None:
        self.state_dir = state_dir
        self.started_at = now
        self.started_wall = now_wall
        # counters
        self.wakes = 0
        self.engagements = 0
        self.turns = 0
        self.bargeins = 0
        self.false_bargeins = 0
        """Barge-ins the user said nothing after: the engagement ended with no turn since (a noise or echo
        taken for the user)."""
        self._bargein_unanswered = False
        self.truncates = 0
        self.reconnects = 0
        self.xruns = 0
        self.overruns = 0
        self.hook_runs = 0
        self.hook_failures = 0
        self.recordings = 0
        self.timers_rung = 0
        self.tokens = TokenLedger()
        """Tokens billed and the cost estimate (``response.done``'s usage), and the rate limits."""
        self.prices: Any = PricesConfig()
        self.timers_pending = 0
        self.timers_ringing = 0
        self.errors: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_error_wall: float | None = None
        # gauges
        self.phase = "idle"
        self.connection = "disconnected"
        self.connected_since: float | None = None
        self.duplex = "auto"
        self.muted = False
        self.devices: dict[str, dict[str, Any]] = {}
        self.device_missing_since: dict[str, float] = {}
        """Per role: when (monotonic) the device was last seen going away; absent while it works."""
        self._device_counts: dict[tuple[str, str], int] = {}
        # histograms (ms)
        self.wake_to_ready_ms = Histogram()
        self.reply_start_ms = Histogram()
        self.bargein_ms = Histogram()
        # engagement in progress
        self.engagement: EngagementRecord | None = None
        self.last_engagement: EngagementRecord | None = None
        self._engagement_seq = 0
        # usage ledger: connected seconds per local day (ISO date)
        self._accrued_to: float | None = None  # monotonic mark while connected
        self.usage = load_ledger(self.usage_path())

    # ------------------------------------------------------------------------------ engagements

    def engagement_started(self, now: float, now_wall: float, *, trigger: str) -> EngagementRecord:
        """Count an engagement and open its record (a still-open one is closed as ``superseded``)."""
        if self.engagement is not None:
            self.engagement_ended(now, reason="superseded")
        self._engagement_seq += 1
        stamp = dt.datetime.fromtimestamp(now_wall).strftime("%Y%m%d-%H%M%S")
        self.engagement = EngagementRecord(
            engagement_id=f"{stamp}-{self._engagement_seq}", trigger=trigger, started_at=now, started_wall=now_wall
        )
        self.engagements += 1
        self.tokens.engagement_started()
        return self.engagement

    def engagement_ended(self, now: float, *, reason: str) -> EngagementRecord | None:
        """Close the engagement record; returns it (None when none was open)."""
        record = self.engagement
        if record is None:
            return None
        record.ended_at = now
        record.end_reason = reason
        if self._bargein_unanswered and reason in FALSE_BARGEIN_ENDS:
            self.false_bargeins += 1
        self._bargein_unanswered = False
        record.tokens = self.tokens.engagement
        record.cost_usd = round(self.tokens.engagement.cost_usd(self.prices), 4)
        self.engagement = None
        self.last_engagement = record
        return record

    def wake(self) -> None:
        """Count a wake-word detection (whether or not it engaged)."""
        self.wakes += 1

    def turn(self) -> None:
        """Count a committed user turn."""
        self.turns += 1
        self._bargein_unanswered = False
        if self.engagement is not None:
            self.engagement.turns += 1

    def session_ready(self, wake_to_ready_ms: float) -> None:
        """Record the time from engagement to session ready (the first ready of the engagement)."""
        self.wake_to_ready_ms.observe(wake_to_ready_ms)
        if self.engagement is not None and self.engagement.wake_to_ready_ms is None:
            self.engagement.wake_to_ready_ms = wake_to_ready_ms

    def reply_started(self, reply_start_ms: float) -> None:
        """Record the time from end of the user's turn to the first reply audio played."""
        self.reply_start_ms.observe(reply_start_ms)
        if self.engagement is not None:
            self.engagement.reply_start_ms.append(reply_start_ms)

    def bargein(self, reaction_ms: float | None) -> None:
        """Count a barge-in; ``reaction_ms`` is speech onset to the reply stopping, when known."""
        self.bargeins += 1
        self._bargein_unanswered = True
        if reaction_ms is not None:
            self.bargein_ms.observe(reaction_ms)
        if self.engagement is not None:
            self.engagement.bargeins += 1
            if reaction_ms is not None:
                self.engagement.bargein_ms.append(reaction_ms)

    def truncate(self) -> None:
        """Count a ``conversation.item.truncate`` sent."""
        self.truncates += 1

    def reconnect(self) -> None:
        """Count a connection lost and re-opened (or being re-opened)."""
        self.reconnects += 1
        if self.engagement is not None:
            self.engagement.reconnects += 1

    def error(self, kind: str | BaseException, text: str | None, now_wall: float) -> None:
        """Count an error by class and remember it as the last error.

        Args:
            kind: an exception (its class name is used) or a class name / server error code.
            text: a one-line description (an exception's ``str`` when None); redacted, cut to 300 chars.
            now_wall: Unix time of the error.
        """
        name = type(kind).__name__ if isinstance(kind, BaseException) else str(kind)
        if text is None:
            text = str(kind) if isinstance(kind, BaseException) else name
        name = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in name[:64]) or "other"
        if name not in self.errors and len(self.errors) >= MAX_ERROR_KINDS:
            # A server inventing codes must not grow every status answer and metrics scrape.
            name = "other"
        self.errors[name] = self.errors.get(name, 0) + 1
        line = " ".join(redact(text).split())
        self.last_error = f"{name}: {line}"[:_ERROR_TEXT_MAX]
        self.last_error_wall = now_wall
        if self.engagement is not None:
            self.engagement.errors += 1

    def hook_ran(self, *, ok: bool) -> None:
        """Count an event hook run, and its failure."""
        self.hook_runs += 1
        if not ok:
            self.hook_failures += 1

    # ----------------------------------------------------------------------------------- gauges

    def set_phase(self, phase: str) -> None:
        """Set the engagement phase (any case; ``FOLLOW_UP`` → ``follow_up``)."""
        self.phase = phase.lower()

    def set_connection(self, state: str, now: float, now_wall: float) -> None:
        """Set the connection state; entering/leaving ``connected`` starts/stops the usage clock.

        Raises:
            ValueError: ``state`` is not one of :data:`CONNECTION_STATES`.
        """
        if state not in CONNECTION_STATES:
            raise ValueError(f"unknown connection state {state!r}")
        was = self.connection == "connected"
        self._accrue(now, now_wall)
        self.connection = state
        if state == "connected" and not was:
            self.connected_since = now
            self._accrued_to = now
        elif state != "connected":
            self.connected_since = None
            self._accrued_to = None

    def set_muted(self, muted: bool) -> None:
        """Privacy mute of the microphone path."""
        self.muted = muted

    def set_duplex(self, mode: str) -> None:
        """The barge-in duplex mode in force (``full``, ``gated``, ``half``)."""
        self.duplex = mode

    def update_device(self, role: str, status: Mapping[str, Any] | object, now: float | None = None) -> None:
        """Record an audio device's status (``role``: ``input``/``output``) at ``now`` (monotonic).

        A ``missing`` or ``reopening`` state starts the device's missing time (kept until it is back).

        ``status`` is a mapping or a dataclass (e.g. the audio backend's ``DeviceStatus``). Its
        ``xruns``/``overruns`` are cumulative since the device was opened; the totals here keep
        growing across reopens (a count that went down means the device was reopened).
        """
        if dataclasses.is_dataclass(status) and not isinstance(status, type):
            data = dataclasses.asdict(status)
        elif isinstance(status, Mapping):
            data = dict(status)
        else:
            data = {"state": str(status)}
        data = {k: v.value if isinstance(v, enum.Enum) else v for k, v in data.items()}
        self.devices[role] = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None}
        state = self.devices[role].get("state")
        if state not in ("missing", "reopening"):
            self.device_missing_since.pop(role, None)
        elif now is not None:
            self.device_missing_since.setdefault(role, now)
        for name in ("xruns", "overruns"):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            last = self._device_counts.get((role, name), 0)
            delta = value - last if value >= last else value
            self._device_counts[(role, name)] = value
            setattr(self, name, getattr(self, name) + delta)

    def device_missing_s(self, role: str, now: float) -> float | None:
        """Seconds the ``role`` device has been missing, or None while it works."""
        since = self.device_missing_since.get(role)
        return None if since is None else max(0.0, now - since)

    def _device_snapshot(self, role: str, now: float) -> dict[str, Any]:
        data = dict(self.devices[role])
        missing = self.device_missing_s(role, now)
        if missing is not None:
            data["missing_for_s"] = round(missing, 1)
        return data

    def session_age_s(self, now: float) -> float | None:
        """Seconds the current connection has been open, or None."""
        return None if self.connected_since is None else max(0.0, now - self.connected_since)

    # ------------------------------------------------------------------------------------ usage

    def connected_seconds_today(self, now: float, now_wall: float) -> float:
        """Connected seconds on the local calendar day of ``now_wall`` (the open session included)."""
        self._accrue(now, now_wall)
        return self.usage.seconds_on(now_wall)

    def connected_minutes_today(self, now: float, now_wall: float) -> float:
        """Connected minutes today (local day), for ``gate.daily_cap_minutes``."""
        return self.connected_seconds_today(now, now_wall) / 60.0

    def _accrue(self, now: float, now_wall: float) -> None:
        """Attribute connected time since the last mark to local days (:class:`~earshot.usage.UsageLedger`)."""
        if self.connection != "connected" or self._accrued_to is None:
            return
        amount = now - self._accrued_to
        self._accrued_to = now
        self.usage.add(amount, now_wall)

    def usage_path(self) -> Path | None:
        """``<state_dir>/usage.json``, or None without a state directory."""
        return None if self.state_dir is None else self.state_dir / USAGE_FILE

    def save_usage(self, now: float, now_wall: float) -> bool:
        """Write the usage ledger atomically (tmp + fsync + rename) if it changed.

        Small and synchronous: call it when a connection closes and on a slow period (the metrics
        interval), from a thread if the storage is slow. Returns whether a write happened.
        Failures are logged at WARNING and never raised: a full disk must not stop the daemon.
        """
        self._accrue(now, now_wall)
        return save_ledger(self.usage_path(), self.usage)

    # --------------------------------------------------------------------------------- snapshot

    def snapshot(self, now: float, now_wall: float) -> dict[str, Any]:
        """Everything, JSON-able, for ``earshot status --json`` (never a secret)."""
        age = self.session_age_s(now)
        engagement = self.engagement
        return {
            "phase": self.phase,
            "connection": self.connection,
            "session_age_s": None if age is None else round(age, 1),
            "duplex": self.duplex,
            "muted": self.muted,
            "devices": {role: self._device_snapshot(role, now) for role in self.devices},
            "uptime_s": round(max(0.0, now - self.started_at), 1),
            "counters": {
                "wakes": self.wakes,
                "engagements": self.engagements,
                "turns": self.turns,
                "bargeins": self.bargeins,
                "false_bargeins": self.false_bargeins,
                "truncates": self.truncates,
                "reconnects": self.reconnects,
                "xruns": self.xruns,
                "overruns": self.overruns,
                "hook_runs": self.hook_runs,
                "hook_failures": self.hook_failures,
                "recordings": self.recordings,
                "timers_rung": self.timers_rung,
            },
            "usage": self.tokens.snapshot(self.prices),
            "errors": dict(sorted(self.errors.items())),
            "last_error": None
            if self.last_error is None
            else {
                "text": self.last_error,
                "time": _iso(self.last_error_wall) if self.last_error_wall is not None else None,
            },
            "connected_minutes_today": round(self.connected_minutes_today(now, now_wall), 2),
            "engagement": None
            if engagement is None
            else {
                "id": engagement.engagement_id,
                "trigger": engagement.trigger,
                "age_s": round(engagement.duration_s(now), 1),
                "turns": engagement.turns,
            },
            "latency_ms": {
                "wake_to_ready": self.wake_to_ready_ms.snapshot(),
                "reply_start": self.reply_start_ms.snapshot(),
                "bargein": self.bargein_ms.snapshot(),
            },
        }


def _iso(wall: float) -> str:
    return dt.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="seconds")
