"""Shared pieces of the resilience suite: the spoken turn, and checks on what the emulator received."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from earshot.emulator import Emulator
from earshot.emulator.voice import resample
from earshot.systemd import Notifier
from tests.support.daemon import DaemonRun
from tests.support.speech import concat, read_wav, silence, synth

QUESTION = "what is the capital of france"
WIRE_RATE_HZ = 24000
CAPTURE_RATE_HZ = 16000


@functools.cache
def question() -> NDArray[np.int16]:
    """The user's question at 16 kHz (flite)."""
    pcm, rate = read_wav(synth(QUESTION))
    assert rate == CAPTURE_RATE_HZ
    return pcm


def spoken_turn(lead_s: float = 1.0, tail_s: float = 6.0) -> NDArray[np.int16]:
    """Silence, the question, silence: one engagement in vad mode."""
    return concat(silence(lead_s), question(), silence(tail_s))


def turn_start_match(received: NDArray[np.int16], head_s: float = 0.4) -> float:
    """How well the question's first ``head_s`` is found in ``received`` (24 kHz): peak normalised correlation.

    1.0 is an exact copy; speech that is missing its beginning scores far lower.
    """
    head = resample(question(), CAPTURE_RATE_HZ, WIRE_RATE_HZ).astype(np.float64)
    onset = int(np.argmax(np.abs(head) > 500))  # skip flite's leading near-silence
    template = head[onset : onset + int(head_s * WIRE_RATE_HZ)]
    signal = received.astype(np.float64)
    if len(signal) < len(template):
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(signal) + len(template))))
    spectrum = np.fft.rfft(signal, n) * np.conj(np.fft.rfft(template, n))
    corr = np.fft.irfft(spectrum, n)[: len(signal) - len(template) + 1]
    energy = np.cumsum(np.concatenate(([0.0], signal * signal)))
    window = energy[len(template) :] - energy[: -len(template)]
    norm = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(template, template)))
    return float(np.max(corr / norm))


def assert_answered(run: DaemonRun, emu: Emulator) -> None:
    """The daemon ended cleanly, the reply was played out, no schema problem on the wire."""
    assert run.exit_code == 0
    assert emu.violations == []
    assert run.marks("reply started"), run.timeline
    assert run.marks("reply played out"), run.timeline
    peak = int(np.abs(run.output.astype(np.int32)).max()) if len(run.output) else 0
    assert peak > 1000, "no reply audio reached the speaker"


def answering_session(emu: Emulator) -> int:
    """The index of the session that produced a completed response."""
    done = [r.index for r in emu.sessions if any(resp.status == "completed" for resp in r.responses)]
    assert done, "no session completed a response"
    return done[0]


def assert_whole_turn(emu: Emulator, session: int) -> None:
    """Session ``session`` received the user's whole question, from its first word."""
    received = emu.sessions[session].received_audio()
    got_s, want_s = len(received) / WIRE_RATE_HZ, len(question()) / CAPTURE_RATE_HZ
    assert got_s >= want_s - 0.05, f"{got_s:.2f} s received of a {want_s:.2f} s question"
    match = turn_start_match(received)
    assert match > 0.9, f"the turn's first word matched at {match:.2f} ({len(received) / WIRE_RATE_HZ:.2f} s received)"


@dataclass
class MemoryUse:
    """Python heap figures from :func:`traced_memory` (bytes)."""

    grown: int = 0
    peak: int = 0


@contextmanager
def traced_memory() -> Iterator[MemoryUse]:
    """Trace Python allocations over the block: growth of the live heap (after a collection) and the peak."""
    use = MemoryUse()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield use
        gc.collect()
        current, use.peak = tracemalloc.get_traced_memory()
        use.grown = current - before
    finally:
        tracemalloc.stop()


class LogWatch(logging.Handler):
    """Collects log records of the ``earshot`` loggers; :meth:`wait_for` waits for a message containing a text.

    Handlers run synchronously on the event loop thread (the daemon logs from the loop), so waiting on an
    ``asyncio.Event`` set here is race-free.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()

    def count(self, text: str) -> int:
        """Messages so far containing ``text``."""
        return sum(text in m for m in self.messages)

    async def wait_for(self, text: str, times: int = 1, within_s: float = 15.0) -> None:
        """Wait until ``times`` messages containing ``text`` were logged."""
        async with asyncio.timeout(within_s):
            while self.count(text) < times:
                self._changed.clear()
                await self._changed.wait()


@contextmanager
def watching_logs() -> Iterator[LogWatch]:
    """Attach a :class:`LogWatch` to the ``earshot`` logger for the block."""
    watch = LogWatch()
    root = logging.getLogger("earshot")
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(old_level)


class RecordingNotifier(Notifier):
    """A notifier that keeps every sd_notify line instead of sending it."""

    def __init__(self) -> None:
        super().__init__({})
        self.lines: list[str] = []

    def send(self, *lines: str) -> bool:
        self.lines.extend(lines)
        return True

    def statuses(self) -> list[str]:
        """The ``STATUS=`` texts, in order."""
        return [line.removeprefix("STATUS=") for line in self.lines if line.startswith("STATUS=")]
