"""systemd integration: sd_notify (readiness, status, watchdog, stop, reload) and a health model.

The notify protocol is a datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); see sd_notify(3). It is
spoken here with the standard library rather than ``systemd.daemon.notify``, which raises
``FileNotFoundError`` when the socket is gone: a notification that cannot be delivered must never
take the daemon down, so :class:`Notifier` logs that once at DEBUG and carries on.

The watchdog is fed from real progress, not from a timer alone. :class:`Health` is a pure record
of when capture frames last arrived and how late the event loop woke up; :func:`run_watchdog`
sends ``WATCHDOG=1`` only while that record is healthy, so a wedged capture thread or a blocked
loop gets the service restarted by systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Health", "Notifier", "run_watchdog"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; every method is a no-op outside systemd.

    Sending never blocks and never raises: the socket is non-blocking, and a missing or refusing
    receiver is logged once at DEBUG. Each method returns whether the datagram was delivered.

    Args:
        environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read
            (default: ``os.environ``, read once at construction).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _notify_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._sock: socket.socket | None = None
        self._failed_once = False

    @property
    def enabled(self) -> bool:
        """Whether a notify socket was given (the service manager is listening)."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete; optionally with a status sentence."""
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=``: a human sentence shown by ``systemctl status`` (one line)."""
        return self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive; send it only when the daemon is really making progress."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: a clean shutdown has begun."""
        return self.send("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by ``Type=notify-reload``); send READY=1 after."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval_s(self) -> float | None:
        """The watchdog timeout systemd enforces (``WatchdogSec=``), or None when there is none.

        Returns None when ``WATCHDOG_PID`` names another process (the variable was inherited).
        Send ``WATCHDOG=1`` at least twice per interval.
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1e6 if usec > 0 else None

    def send(self, *lines: str) -> bool:
        """Send one datagram made of ``lines``; returns whether it was delivered."""
        if self._address is None:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                logger.debug("sd_notify to %r failed (further failures not logged): %s", self._address, exc)
            return False
        return True

    def close(self) -> None:
        """Close the datagram socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _notify_address(value: str) -> str | bytes | None:
    """The sendto() address for a ``$NOTIFY_SOCKET`` value, or None if unusable."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    if value:
        # vsock: (VMs) and relative paths are not for a Pi appliance; treat as absent.
        logger.debug("ignoring unsupported NOTIFY_SOCKET %r", value)
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


_SLOW_NOTE_EVERY_S = 60.0


class Health:
    """Whether the daemon is making progress: capture frames being processed.

    Pure: every input carries its ``now`` (monotonic seconds). The app calls
    :meth:`capture_progress` for every capture chunk it processes (cheap: one float store), calls
    :meth:`expecting_gap` around a known outage (a device being reopened after it vanished, a USB
    microphone not plugged in yet), and :func:`run_watchdog` feeds :meth:`loop_lag`.

    Slow is not wedged. A loop that runs late (a slow CPU, a long callback) but still processes
    capture frames is healthy: it catches up, and its lateness is only reported (:attr:`slow_s`). A
    wedged loop cannot run the watchdog task at all, so its keep-alives stop by themselves; a loop
    that runs while the capture path is stuck shows no progress and loses its keep-alives here.

    Args:
        now: the start time; the first ``max_gap_s`` after it count as progress.
        max_loop_lag_s: a loop that woke up later than this is reported as slow.
    """

    def __init__(self, now: float, *, max_loop_lag_s: float = 1.0) -> None:
        self._last_progress = now
        self._expecting_gap = False
        self._loop_lag_s = 0.0
        self._max_loop_lag_s = max_loop_lag_s
        self.max_lag_s = 0.0
        """The largest loop lag seen since the start."""

    def capture_progress(self, now: float) -> None:
        """A capture chunk was processed at ``now``."""
        self._last_progress = now

    def expecting_gap(self, expecting: bool, now: float | None = None) -> None:
        """Declare (or end) a known capture gap; while declared, missing frames are healthy.

        Ending the gap with ``now`` restarts the gap window, so a device that was just reopened
        gets ``max_gap_s`` to deliver its first frame.
        """
        self._expecting_gap = expecting
        if not expecting and now is not None:
            self._last_progress = max(self._last_progress, now)

    def loop_lag(self, lag_s: float) -> None:
        """The event loop woke up ``lag_s`` seconds later than asked (measured by the watchdog task)."""
        self._loop_lag_s = max(0.0, lag_s)
        self.max_lag_s = max(self.max_lag_s, self._loop_lag_s)

    @property
    def slow_s(self) -> float | None:
        """The last loop lag when it was over ``max_loop_lag_s`` (slow but running), else None."""
        return self._loop_lag_s if self._loop_lag_s > self._max_loop_lag_s else None

    def problem(self, now: float, max_gap_s: float) -> str | None:
        """Why the daemon is not healthy at ``now`` (no progress), or None when it is."""
        if not self._expecting_gap and now - self._last_progress > max_gap_s:
            return f"no capture frames for {now - self._last_progress:.1f} s"
        return None

    def healthy(self, now: float, max_gap_s: float) -> bool:
        """True while capture frames were processed within ``max_gap_s`` (or a gap is expected)."""
        return self.problem(now, max_gap_s) is None


async def run_watchdog(
    notifier: Notifier,
    health: Health,
    *,
    interval_s: float | None = None,
    max_gap_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Send ``WATCHDOG=1`` periodically while ``health`` is healthy; run until cancelled.

    The period defaults to half of ``WatchdogSec=``; without a watchdog the task still measures
    loop lag (so :class:`Health` stays meaningful) at a 1 s period and sends nothing. Cancelling
    is safe at any point.

    Args:
        notifier: where keep-alives go.
        health: the progress record; this task feeds its loop lag.
        interval_s: override of the keep-alive period.
        max_gap_s: longest capture silence still considered healthy.
        clock: monotonic clock (same one the app passes to ``health``).
    """
    watchdog_s = notifier.watchdog_interval_s()
    period = interval_s if interval_s is not None else (watchdog_s / 2 if watchdog_s else 1.0)
    send = watchdog_s is not None or interval_s is not None
    complaint: str | None = None
    slow_noted = -_SLOW_NOTE_EVERY_S
    while True:
        asked = clock() + period
        await asyncio.sleep(period)
        now = clock()
        health.loop_lag(now - asked)
        slow = health.slow_s
        if slow is not None and now - slow_noted >= _SLOW_NOTE_EVERY_S:
            slow_noted = now
            logger.warning("watchdog: the event loop ran %.1f s late; still progressing, so still healthy", slow)
        problem = health.problem(now, max_gap_s)
        if problem is None:
            if complaint is not None:
                logger.info("watchdog: healthy again")
                complaint = None
            if send:
                notifier.watchdog()
        elif complaint is None:
            # Logged once when health is lost, not on every tick; systemd restarts us if it lasts.
            logger.warning("watchdog: withholding keep-alive: %s", problem)
            complaint = problem
