"""Event hooks: run a configured command on wake, listening, thinking, speaking, idle, error, offline, muted.

Each hook is an argv (``hooks.<event>: [/usr/local/bin/leds, --bright]``) run without a shell. It
gets the event as one JSON object on stdin::

    {"event": "speaking", "seq": 12, "time": 1767000000.1, "phase": "speaking", ...}

plus ``EARSHOT_EVENT=<event>`` in its environment (the API key and systemd's notify/credential
variables are removed from it). ``seq`` grows with every event fired, so a hook that keeps state
can ignore one older than the last it saw.

:meth:`Hooks.fire` never blocks: it schedules the run and returns. At most one process runs per
event kind; events of that kind fired meanwhile are coalesced, the newest wins (an LED only needs
to show the latest state). A hook is killed with everything it started
(:mod:`earshot.children`) after ``hooks.timeout_s``. A failure (spawn error, non-zero exit,
timeout) is counted and logged at WARNING, at most once a minute per event kind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from earshot import children
from earshot.config import HooksConfig
from earshot.stats import Stats

__all__ = ["EVENTS", "Hooks"]

logger = logging.getLogger(__name__)

EVENTS = (
    "wake",
    "listening",
    "thinking",
    "speaking",
    "idle",
    "error",
    "offline",
    "muted",
    "timer_set",
    "timer_ringing",
    "timer_done",
    "duck",
    "unduck",
    "transcript",
)
"""Event names a hook can be configured for."""

_STDERR_TAIL = 400


class Hooks:
    """Runs the configured hook commands, never blocking the caller.

    Args:
        config: the ``hooks`` section.
        stats: counts runs and failures (``hook_runs``/``hook_failures``) when given.
        warn_interval_s: at most one failure warning per event kind in this period.
        env: base environment of the hooks (``os.environ`` when None), scrubbed of secrets.

    Attributes:
        runs: hook processes started (or attempted).
        failures: runs that failed to spawn, exited non-zero or timed out.
    """

    def __init__(
        self,
        config: HooksConfig,
        *,
        stats: Stats | None = None,
        warn_interval_s: float = 60.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._commands: dict[str, tuple[str, ...]] = {e: getattr(config, e) for e in EVENTS if getattr(config, e)}
        self._timeout_s = config.timeout_s
        self._stats = stats
        self._warn_interval_s = warn_interval_s
        self._env = children.child_env(os.environ if env is None else env)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, bytes] = {}
        self._last_warning: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._seq = 0
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.runs = 0
        self.failures = 0

    def configured(self, event: str) -> bool:
        """Whether a command is configured for ``event``."""
        return event in self._commands

    def fire(self, event: str, data: Mapping[str, Any] | None = None) -> None:
        """Schedule the hook for ``event`` with ``data`` (JSON-able; ``str()`` is used otherwise).

        Returns at once. Must be called from the event loop's thread. Does nothing when no
        command is configured for the event or after :meth:`aclose`.

        Raises:
            ValueError: ``event`` is not one of :data:`EVENTS` (a bug in the caller).
        """
        if event not in EVENTS:
            raise ValueError(f"unknown hook event {event!r}")
        if self._closed or event not in self._commands:
            return
        self._seq += 1
        body = {**(data or {}), "event": event, "seq": self._seq, "time": round(time.time(), 3)}
        payload = json.dumps(body, default=str).encode() + b"\n"
        if event in self._running:
            self._pending[event] = payload  # latest wins
            return
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._drive(event, payload), name=f"earshot-hook-{event}")
        self._running[event] = task

    async def wait_idle(self) -> None:
        """Return when no hook is running or queued (for shutdown and tests). Cancellation-safe."""
        await self._idle.wait()

    async def aclose(self, grace_s: float = 1.0) -> None:
        """Stop accepting events, drop queued ones, let running hooks finish for ``grace_s``, then kill them."""
        self._closed = True
        self._pending.clear()
        tasks = list(self._running.values())
        if not tasks:
            return
        _done, still = await asyncio.wait(tasks, timeout=grace_s)
        for task in still:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self, event: str, payload: bytes) -> None:
        try:
            next_payload: bytes | None = payload
            while next_payload is not None:
                await self._run_one(event, self._commands[event], next_payload)
                next_payload = None if self._closed else self._pending.pop(event, None)
        finally:
            self._running.pop(event, None)
            if not self._running:
                self._idle.set()

    async def _run_one(self, event: str, argv: tuple[str, ...], payload: bytes) -> None:
        self.runs += 1
        try:
            outcome = await children.run(
                argv,
                stdin=payload,
                env={**self._env, "EARSHOT_EVENT": event},
                timeout_s=self._timeout_s,
                keep_stdout=None,
                keep_stderr=_STDERR_TAIL,
            )
        except OSError as exc:
            self._failed(event, f"cannot run {argv[0]!r}: {exc.strerror or exc}")
            return
        if outcome.status is None:
            self._failed(event, f"{argv[0]} killed after {self._timeout_s:g} s")
            return
        if outcome.status != 0:
            detail = outcome.stderr.decode("utf-8", "replace").strip().splitlines()
            last = f": {detail[-1][:200]}" if detail else ""
            self._failed(event, f"{argv[0]} exited with status {outcome.status}{last}")
            return
        if self._stats is not None:
            self._stats.hook_ran(ok=True)

    def _failed(self, event: str, reason: str) -> None:
        self.failures += 1
        if self._stats is not None:
            self._stats.hook_ran(ok=False)
        now = time.monotonic()
        last = self._last_warning.get(event)
        if last is not None and now - last < self._warn_interval_s:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return
        self._last_warning[event] = now
        suppressed = self._suppressed.pop(event, 0)
        more = f" ({suppressed} more failures not shown)" if suppressed else ""
        logger.warning("%s hook failed: %s%s", event, reason, more)
