"""The capture hand-over the supervisor and the bench share: periods, gaps, the reference once per period."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.capturefeed import BURST_MAX_CHUNKS, CaptureFeed


class Echo:
    """A canceller's reference side: what it holds, and whether it is bypassing (nothing played lately)."""

    def __init__(self, *, bypassing: bool = True) -> None:
        self.references: list[int] = []
        self.bypassing = bypassing
        self.reference_queued = 0

    def add_reference(self, ref: NDArray[np.int16]) -> None:
        self.references.append(len(ref))
        self.reference_queued += len(ref)


class Conv:
    def __init__(self, echo: Echo | None, *, sounding: bool = False) -> None:
        self.echo: Any = echo
        self.sounding = sounding
        self.calls: list[tuple[int, int, float]] = []  # (position, samples, now)
        self.first: list[int] = []
        self.short: list[int] = []  # samples of reference the canceller lacked, per call

    def on_capture(self, pcm: NDArray[np.int16], position: int, now: float) -> None:
        self.calls.append((position, len(pcm), now))
        self.first.append(int(pcm[0]))
        if self.echo is not None:
            self.short.append(max(0, len(pcm) - self.echo.reference_queued))
            self.echo.reference_queued = max(0, self.echo.reference_queued - len(pcm))


class Sink:
    """Hands out ``per_pop`` samples of reference a call, or, with ``played``, what a device played so far."""

    def __init__(self, per_pop: int = 480) -> None:
        self.pops = 0
        self.per_pop = per_pop
        self.played = 0  # samples played in all (used when per_pop is 0)
        self.handed = 0

    def pop_reference(self) -> NDArray[np.int16]:
        self.pops += 1
        n = self.per_pop if self.per_pop else self.played - self.handed
        self.handed += n
        return np.full(n, 1, dtype=np.int16)


def _chunk(i: int) -> NDArray[np.int16]:
    return np.full(160, i, dtype=np.int16)


def test_a_period_goes_over_in_one_call_with_the_reference_once() -> None:
    conv, sink = Conv(Echo()), Sink()
    feed = CaptureFeed(conv, sink)
    for i, backlog in enumerate((2, 1, 0, 2, 1, 0)):  # two 30 ms periods
        feed.chunk(_chunk(i), i * 160, float(i), backlog=backlog)
    assert conv.calls == [(0, 480, 2.0), (480, 480, 5.0)]
    assert conv.first == [0, 3]  # in order, nothing lost or repeated
    assert sink.pops == 2
    assert conv.echo.references == [480, 480]


def test_a_gap_in_positions_is_never_joined_into_one_stretch() -> None:
    conv, sink = Conv(None), Sink()
    feed = CaptureFeed(conv, sink)
    feed.chunk(_chunk(0), 0, 0.0, backlog=3)
    feed.chunk(_chunk(1), 160, 0.0, backlog=2)
    feed.chunk(_chunk(2), 1600, 0.0, backlog=1)  # capture lost in between
    feed.chunk(_chunk(3), 1760, 0.0, backlog=0)
    assert [(p, n) for p, n, _ in conv.calls] == [(0, 320), (1600, 320)]
    assert sink.pops == 1  # no canceller: the reference is still taken (and dropped) once per period


def test_a_long_backlog_goes_over_in_bounded_runs_and_flush_hands_the_rest() -> None:
    conv, sink = Conv(Echo()), Sink()
    feed = CaptureFeed(conv, sink)
    n = BURST_MAX_CHUNKS * 2 + 3
    for i in range(n):
        feed.chunk(_chunk(i % 100), i * 160, 0.0, backlog=n)  # a loop far behind: the backlog never empties
    assert [s for _, s, _ in conv.calls] == [BURST_MAX_CHUNKS * 160] * 2
    feed.flush(1.0)
    assert conv.calls[-1] == (BURST_MAX_CHUNKS * 2 * 160, 3 * 160, 1.0)
    feed.flush(2.0)  # nothing held: nothing handed
    assert len(conv.calls) == 3
    assert sink.pops == 1


def test_a_loop_behind_while_something_plays_takes_the_reference_its_chunks_need() -> None:
    """The backlog never empties (the loop fell behind during a reply): no period starts, yet every chunk's
    reference reaches the canceller before the chunk does, as far as the speaker has played it."""
    conv, sink = Conv(Echo(bypassing=False), sounding=True), Sink(per_pop=0)
    feed = CaptureFeed(conv, sink)
    for i in range(3 * BURST_MAX_CHUNKS):
        sink.played = (i + 1) * 160  # a device with no lead: the reference of chunk i exists once it is captured
        feed.chunk(_chunk(i % 100), i * 160, 0.0, backlog=5)
    feed.flush(0.0)
    assert sum(conv.short) == 0  # the canceller never ran short
    assert sink.pops == 1 + 3  # the period start, then once per run handed over


def test_an_idle_canceller_costs_no_extra_device_calls() -> None:
    conv, sink = Conv(Echo(bypassing=True)), Sink(per_pop=0)
    feed = CaptureFeed(conv, sink)
    for i in range(3 * BURST_MAX_CHUNKS):
        feed.chunk(_chunk(i % 100), i * 160, 0.0, backlog=5)
    assert sink.pops == 1


def test_chunks_of_several_frames_count_as_their_frames() -> None:
    """An idle period comes from the source as one chunk of its frames: the run bound counts samples."""
    conv, sink = Conv(Echo()), Sink()
    feed = CaptureFeed(conv, sink)
    period = np.full(BURST_MAX_CHUNKS * 160, 7, dtype=np.int16)
    for k in range(3):  # a loop behind: the backlog never empties, yet each 250 ms period goes alone
        feed.chunk(period, k * len(period), 0.0, backlog=4)
    assert [(p, s) for p, s, _ in conv.calls] == [(k * len(period), len(period)) for k in range(3)]
    half = np.full(10 * 160, 8, dtype=np.int16)
    feed.chunk(half, 3 * len(period), 1.0, backlog=1)
    feed.chunk(half, 3 * len(period) + len(half), 1.0, backlog=0)  # the period ends: both go together
    assert conv.calls[-1] == (3 * len(period), 2 * len(half), 1.0)


def test_a_sound_that_starts_while_the_loop_is_behind_reaches_the_canceller_before_its_echo() -> None:
    """The canceller is bypassing (nothing played for a while) when a reply starts during a catch-up: the
    reference is still taken for the chunks that need it, though no period starts (inside one Pi core
    the reply's echo otherwise went through uncancelled and was taken for the user)."""
    conv, sink = Conv(Echo(bypassing=True), sounding=True), Sink(per_pop=0)
    feed = CaptureFeed(conv, sink)
    for i in range(3 * BURST_MAX_CHUNKS):
        sink.played = (i + 1) * 160
        feed.chunk(_chunk(i % 100), i * 160, 0.0, backlog=5)
    feed.flush(0.0)
    assert sum(conv.short) == 0
    assert sink.pops == 1 + 3
