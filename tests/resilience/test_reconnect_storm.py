"""A reconnect storm: hundreds of failed connection attempts in a row leave nothing behind.

A real :class:`~earshot.realtime.connection.Link` (real websockets client, real sockets) is pointed at
the loopback :class:`~tests.support.proxy.FaultProxy` in three failing modes: the upgrade stalls past the
open timeout (the proxy accepts and swallows), the connection is reset at once, nothing listens. The
user keeps talking, so every attempt also carries the turn buffered while offline into its session.

After a warm-up the storm must not grow the Python heap (tracemalloc, after a full collection: a leaked
attempt costs kilobytes, a kept session with its turn tens of them), and when the next attempt starts
nothing of the previous one may still be alive (websockets connections, sessions, tasks, fds). The
attempts must still follow the backoff rules: consecutive attempt numbers, each delay inside its
full-jitter cap, and never started before that delay; after ``close()`` they stop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import tracemalloc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection

from earshot.config import RealtimeConfig, ReconnectConfig
from earshot.realtime.connection import Link, LinkEvent, OfflineOverflow
from earshot.realtime.connection import LinkDown as LinkDownEvent
from earshot.realtime.policy import Verdict
from earshot.realtime.session import RealtimeSession
from tests.support.links import run_with
from tests.support.proxy import FaultProxy

WARM_UP = 50
"""Attempts before the heap baseline: the offline bound is reached, caches and free lists are filled."""
MEASURED = 150
"""Attempts measured after the warm-up."""
SAMPLE_EVERY = 25
"""Live objects are counted (after a full collection) at the start of every 25th attempt."""
OPEN_TIMEOUT_S = 0.02
INITIAL_S = 0.002
MAX_S = 0.008
OFFLINE_BUFFER_S = 1.0
CHUNK = (np.sin(np.arange(960) / 7.0) * 3000).astype(np.int16)
"""40 ms at 24 kHz, sent after every failure: 25 attempts fill the 1 s offline buffer."""
GROWTH_PER_ATTEMPT_BOUND = 256
"""Bytes of live heap growth per failed attempt. Measured: well under 50 (noise). One kept dead attempt
(its websockets connection, transport and socket objects) is several kB; a kept session with the turn more."""

Fault = Literal["stalled", "reset", "refused"]


@dataclass
class Sample:
    """What was alive (after ``gc.collect()``) when an attempt started."""

    attempt: int
    connections: int
    sessions: int
    tasks: int
    fds: int
    task_names: tuple[str, ...] = ()


@dataclass
class Storm:
    """Checks run inside the Link's callbacks while the storm goes on; only small counters are kept."""

    loop: asyncio.AbstractEventLoop
    link: Link | None = None
    attempts: int = 0
    downs: int = 0
    overflows: int = 0
    max_delay_s: float = 0.0
    retry_at: float | None = None
    problems: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    heap: list[int] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, ev: LinkEvent) -> None:
        if isinstance(ev, OfflineOverflow):
            self.overflows += 1
        if not isinstance(ev, LinkDownEvent):
            return
        self.downs += 1
        cap = min(MAX_S, INITIAL_S * 2.0 ** (ev.attempt - 1))
        if ev.verdict is not Verdict.RETRY:
            self._problem(f"attempt {ev.attempt}: verdict {ev.verdict}")
        if ev.attempt != self.downs:
            self._problem(f"attempt number {ev.attempt} after {self.downs - 1} failures (backoff was reset)")
        if not 0.0 <= ev.retry_in_s <= cap * (1 + 1e-9):
            self._problem(f"attempt {ev.attempt}: delay {ev.retry_in_s} outside [0, {cap}]")
        self.max_delay_s = max(self.max_delay_s, ev.retry_in_s)
        self.retry_at = ev.retry_at  # decided when it failed (this event is taken a little later)
        assert self.link is not None
        self.link.send_audio(CHUNK, self.loop.time())  # the user is still talking

    async def headers(self) -> Mapping[str, str]:
        """Called by the Link at the start of every attempt, before it connects."""
        now = self.loop.time()
        if self.retry_at is not None and now < self.retry_at - 1e-6:
            self._problem(f"attempt {self.attempts + 1} started {self.retry_at - now:.4f} s before its delay")
        self.attempts += 1
        n = self.attempts - 1  # failures so far
        if n in (WARM_UP, WARM_UP + MEASURED):
            gc.collect()
            self.heap.append(tracemalloc.get_traced_memory()[0])
        if n >= WARM_UP and n % SAMPLE_EVERY == 0:
            self.samples.append(live(n))
        if n == WARM_UP + MEASURED:
            self.done.set()  # the test closes the link during this last attempt
        return {"Authorization": "Bearer sk-test-key"}

    def _problem(self, text: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(text)


def live(attempt: int) -> Sample:
    """Count what is alive after a full collection (exact types: websockets hands out weak proxies too).

    The proxy runs in the same loop: its handler of the previous (aborted) connection ends when it reads
    the EOF, which a busy machine may schedule after the next attempt has started. It is the far end of
    the wire, not something the Link kept, so it is not counted (its socket is the "closing socket" the
    fd bound allows).
    """
    gc.collect()
    objects = gc.get_objects()
    connections = sum(type(o) is ClientConnection for o in objects)
    sessions = sum(type(o) is RealtimeSession for o in objects)
    del objects
    ours = [t for t in asyncio.all_tasks() if not _is_proxy_task(t)]
    names = tuple(sorted(getattr(t.get_coro(), "__qualname__", t.get_name()) for t in ours))
    return Sample(attempt, connections, sessions, len(ours), len(os.listdir("/proc/self/fd")), names)


def _is_proxy_task(task: asyncio.Task[object]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "").startswith(FaultProxy.__name__ + ".")


@contextmanager
def quiet_earshot_logs() -> Iterator[None]:
    """Keep the storm's hundreds of warnings out of pytest's log capture (which would keep them on the heap)."""
    logger = logging.getLogger("earshot")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


async def _make_fail(proxy: FaultProxy, fault: Fault) -> None:
    if fault == "stalled":
        proxy.blackhole()  # accepted, the upgrade request swallowed: the open timeout fires
    elif fault == "reset":
        await proxy.refuse("close")  # accepted and aborted at once
    else:
        await proxy.refuse("stop")  # ECONNREFUSED


@pytest.mark.parametrize("fault", ["stalled", "reset", "refused"])
async def test_reconnect_storm_memory_is_bounded(fault: Fault) -> None:
    """≥ 200 failed attempts in a row: flat heap, nothing of a failed attempt survives it, backoff obeyed, then stop."""
    loop = asyncio.get_running_loop()
    storm = Storm(loop)
    async with FaultProxy("127.0.0.1", 9) as proxy:  # the target is never reached in these modes
        await _make_fail(proxy, fault)
        config = RealtimeConfig(
            url=f"ws://127.0.0.1:{proxy.port}/v1/realtime",
            open_timeout_s=OPEN_TIMEOUT_S,  # below the config file's minimum: the storm must be quick
            reconnect=ReconnectConfig(initial_s=INITIAL_S, max_s=MAX_S, offline_buffer_s=OFFLINE_BUFFER_S),
        )
        link = Link(config, headers=storm.headers)
        storm.link = link
        with quiet_earshot_logs():
            baseline = live(0)
            tracemalloc.start()
            runner = asyncio.create_task(run_with(link, storm.on_event))
            try:
                link.open()
                async with asyncio.timeout(90):
                    await storm.done.wait()
                link.close()
                attempts = storm.attempts
                if fault != "refused":
                    await proxy.wait_until(lambda p: p.active == 0)
                # Nothing must happen now. A window of many retry periods is the only way to see an absence.
                await asyncio.sleep(20 * (OPEN_TIMEOUT_S + MAX_S))
                after_close = live(-1)
                assert storm.attempts == attempts, "attempts went on after close()"
            finally:
                tracemalloc.stop()
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    assert storm.problems == []
    assert storm.downs >= WARM_UP + MEASURED
    assert storm.max_delay_s > INITIAL_S, "the backoff cap never grew past the first delay"
    assert storm.overflows == 1, "the offline bound is reported once per engagement"
    if fault == "stalled":
        assert proxy.connections >= WARM_UP + MEASURED
        assert proxy.bytes_dropped > 0  # the upgrade requests were sent and swallowed
    elif fault == "reset":
        assert proxy.refused >= WARM_UP + MEASURED

    # The heap after WARM_UP + MEASURED attempts is where it was after WARM_UP.
    grown = storm.heap[1] - storm.heap[0]
    assert grown / MEASURED < GROWTH_PER_ATTEMPT_BOUND, f"heap grew {grown} B over {MEASURED} failed attempts"

    # When an attempt starts, only its own session exists: no connection, session, task or fd of the previous one.
    for sample in storm.samples:
        assert sample.connections == 0, sample
        assert sample.sessions == 1, sample
        assert sample.tasks <= baseline.tasks + 3, (sample, baseline)  # + run_with, the link loop, the drain
        assert sample.fds <= baseline.fds + 1, (sample, baseline)  # + at most a closing socket
    assert after_close.connections == 0, after_close
    assert after_close.sessions == 0, after_close
    assert after_close.fds <= baseline.fds, (after_close, baseline)
