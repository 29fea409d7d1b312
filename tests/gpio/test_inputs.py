"""GpioInputs: the asyncio shell around libgpiod.

The real ``gpiod`` bindings are used throughout (their ``LineSettings``, ``EdgeEvent`` and, for the failure
cases, ``request_lines`` against real device paths). No GPIO chip exists here and the kernel has no
``gpio-sim`` module, so the event-path tests replace only ``gpiod.request_lines`` with a scripted line
request whose file descriptor is a real pipe: the shell's ``loop.add_reader`` wait, timestamp conversion,
debounce timer and release are exercised for real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import gpiod
import pytest
from gpiod.line import Bias, Direction, Edge, Value

from earshot.config import GpioConfig
from earshot.gpio import CONSUMER, GpioInputs

BUTTON = 17
MUTE = 27
INITIAL: dict[int, Value] = {}
"""Line levels the next scripted request reports at start-up."""


class ScriptedRequest:
    """A line request whose edge events are pushed by the test and signalled through a real pipe."""

    def __init__(self, chip: str, config: dict[Any, gpiod.LineSettings], consumer: str | None) -> None:
        self.chip = chip
        self.config = config
        self.consumer = consumer
        self.values: dict[int, Value] = {}
        self.released = False
        self.read_error: OSError | None = None
        self._events: list[gpiod.EdgeEvent] = []
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)

    @property
    def fd(self) -> int:
        return self._rfd

    def get_value(self, line: int) -> Value:
        return self.values.get(line, Value.INACTIVE)

    def push(self, line: int, rising: bool, timestamp_ns: int) -> None:
        kind = gpiod.EdgeEvent.Type.RISING_EDGE if rising else gpiod.EdgeEvent.Type.FALLING_EDGE
        self._events.append(gpiod.EdgeEvent(kind.value, timestamp_ns, line, len(self._events) + 1, 0))
        os.write(self._wfd, b"x")

    def fail(self, exc: OSError) -> None:
        self.read_error = exc
        os.write(self._wfd, b"x")

    def read_edge_events(self, max_events: int | None = None) -> list[gpiod.EdgeEvent]:
        if self.read_error is not None:
            raise self.read_error
        os.read(self._rfd, 4096)
        events, self._events = self._events, []
        return events

    def release(self) -> None:
        self.released = True
        os.close(self._rfd)
        os.close(self._wfd)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ScriptedRequest]]:
    """Replace gpiod.request_lines with one that records ScriptedRequests."""
    made: list[ScriptedRequest] = []

    def request_lines(
        path: str, config: dict[Any, gpiod.LineSettings], consumer: str | None = None, **_: Any
    ) -> ScriptedRequest:
        req = ScriptedRequest(path, config, consumer)
        req.values = dict(INITIAL)
        made.append(req)
        return req

    INITIAL.clear()
    monkeypatch.setattr(gpiod, "request_lines", request_lines)
    yield made
    INITIAL.clear()


class Harness:
    """Runs GpioInputs as a task and collects its actions in a queue."""

    def __init__(self, config: GpioConfig, *, engaged: bool = False) -> None:
        self.actions: asyncio.Queue[str] = asyncio.Queue()
        self.engaged = engaged
        self.inputs = GpioInputs(config, on_action=self.actions.put_nowait, is_engaged=lambda: self.engaged)
        self.task = asyncio.create_task(self.inputs.run())

    async def next_action(self) -> str:
        async with asyncio.timeout(5):
            return await self.actions.get()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def started(made: list[ScriptedRequest]) -> ScriptedRequest:
    """Let the task run to its first suspension: run() requests the lines and adds its reader before it."""
    await asyncio.sleep(0)
    assert len(made) == 1
    return made[0]


def now_ns() -> int:
    return time.monotonic_ns()


async def test_no_lines_configured_returns_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With neither line set, run() returns without importing gpiod or logging anything."""
    monkeypatch.setitem(sys.modules, "gpiod", None)  # importing it would fail
    inputs = GpioInputs(GpioConfig(), on_action=lambda a: pytest.fail(a))
    assert not inputs.enabled
    async with asyncio.timeout(1):
        await inputs.run()
    assert [r for r in caplog.records if r.name == "earshot.gpio"] == []


async def test_gpiod_missing_logs_one_warning_and_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the gpiod package the daemon carries on: one WARNING, run() returns."""
    monkeypatch.setitem(sys.modules, "gpiod", None)
    caplog.set_level(logging.WARNING, "earshot.gpio")
    async with asyncio.timeout(1):
        await GpioInputs(GpioConfig(button_line=BUTTON), on_action=lambda a: pytest.fail(a)).run()
    warnings = [r for r in caplog.records if r.name == "earshot.gpio"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "gpiod is not installed" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("chip", "why"),
    [("/dev/gpiochip-nonexistent", "No such file"), ("/dev/null", "No such device")],
)
async def test_unusable_chip_logs_one_warning_and_returns(
    chip: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing chip, or a path that is not a GPIO chip, is one WARNING through the real gpiod, not a crash."""
    caplog.set_level(logging.WARNING, "earshot.gpio")
    config = GpioConfig(chip=chip, button_line=BUTTON, mute_line=MUTE)
    async with asyncio.timeout(1):
        await GpioInputs(config, on_action=lambda a: pytest.fail(a)).run()
    warnings = [r for r in caplog.records if r.name == "earshot.gpio"]
    assert len(warnings) == 1
    assert chip in warnings[0].getMessage()
    assert why in warnings[0].getMessage()


async def test_lines_are_requested_as_debounced_pulled_up_inputs(scripted: list[ScriptedRequest]) -> None:
    """Both lines: input, both edges, pull-up and kernel inversion when active-low, 20 ms kernel debounce."""
    h = Harness(GpioConfig(chip="/dev/gpiochip4", button_line=BUTTON, mute_line=MUTE, active_low=True))
    req = await started(scripted)
    assert req.chip == "/dev/gpiochip4"
    assert req.consumer == CONSUMER
    ((lines, settings),) = req.config.items()
    assert set(lines) == {BUTTON, MUTE}
    assert settings.direction == Direction.INPUT
    assert settings.edge_detection == Edge.BOTH
    assert settings.bias == Bias.PULL_UP
    assert settings.active_low is True
    assert settings.debounce_period == timedelta(milliseconds=20)
    await h.stop()
    assert req.released


async def test_active_high_lines_get_no_pull_up(scripted: list[ScriptedRequest]) -> None:
    """With active_low false the bias is left as the board sets it and the kernel does not invert."""
    h = Harness(GpioConfig(button_line=BUTTON, active_low=False))
    req = await started(scripted)
    ((lines, settings),) = req.config.items()
    assert tuple(lines) == (BUTTON,)
    assert settings.bias == Bias.AS_IS
    assert settings.active_low is False
    await h.stop()


async def test_hold_to_talk_through_edge_events(scripted: list[ScriptedRequest]) -> None:
    """Kernel edges on the button become engage at the press and end_turn at the release after a hold."""
    h = Harness(GpioConfig(button_line=BUTTON))
    req = await started(scripted)
    t = now_ns()
    req.push(BUTTON, True, t)
    req.push(BUTTON, False, t + 2_000_000)  # a bounce...
    req.push(BUTTON, True, t + 4_000_000)  # ...settling pressed
    assert await h.next_action() == "engage"
    h.engaged = True
    req.push(BUTTON, False, t + 900_000_000)
    assert await h.next_action() == "end_turn"
    assert h.actions.empty()
    await h.stop()
    assert req.released


async def test_tap_while_engaged_cancels(scripted: list[ScriptedRequest]) -> None:
    """A short press while engaged cancels on release."""
    h = Harness(GpioConfig(button_line=BUTTON), engaged=True)
    req = await started(scripted)
    t = now_ns()
    req.push(BUTTON, True, t)
    req.push(BUTTON, False, t + 150_000_000)
    assert await h.next_action() == "cancel"
    await h.stop()


async def test_sub_window_tap_is_settled_by_the_debounce_timer(scripted: list[ScriptedRequest]) -> None:
    """A release inside the debounce window is acted on when the window ends, with no further edge."""
    h = Harness(GpioConfig(button_line=BUTTON), engaged=True)
    req = await started(scripted)
    t = now_ns()
    req.push(BUTTON, True, t)
    req.push(BUTTON, False, t + 5_000_000)
    assert await h.next_action() == "cancel"
    await h.stop()


async def test_mute_switch_initial_level_and_changes(scripted: list[ScriptedRequest]) -> None:
    """A switch on at start-up mutes at once; its edges then unmute and mute again."""
    INITIAL[MUTE] = Value.ACTIVE
    h = Harness(GpioConfig(mute_line=MUTE))
    assert await h.next_action() == "mute"
    req = await started(scripted)
    t = now_ns()
    req.push(MUTE, False, t)
    assert await h.next_action() == "unmute"
    req.push(MUTE, True, t + 500_000_000)
    assert await h.next_action() == "mute"
    await h.stop()
    assert req.released


async def test_button_held_at_start_is_not_a_press(scripted: list[ScriptedRequest]) -> None:
    """A button down at start-up does nothing on release; the next press engages."""
    INITIAL[BUTTON] = Value.ACTIVE
    h = Harness(GpioConfig(button_line=BUTTON))
    req = await started(scripted)
    t = now_ns()
    req.push(BUTTON, False, t)
    req.push(BUTTON, True, t + 300_000_000)
    assert await h.next_action() == "engage"
    assert h.actions.empty()
    await h.stop()


async def test_read_failure_logs_one_warning_returns_and_releases(
    scripted: list[ScriptedRequest], caplog: pytest.LogCaptureFixture
) -> None:
    """A read error (e.g. the chip went away) ends run() with one WARNING and the lines released."""
    caplog.set_level(logging.WARNING, "earshot.gpio")
    h = Harness(GpioConfig(button_line=BUTTON))
    req = await started(scripted)
    req.fail(OSError(19, "No such device"))
    async with asyncio.timeout(5):
        await h.task
    assert req.released
    warnings = [r for r in caplog.records if r.name == "earshot.gpio"]
    assert len(warnings) == 1
    assert "No such device" in warnings[0].getMessage()


async def test_on_action_error_propagates_from_run(scripted: list[ScriptedRequest]) -> None:
    """A bug in the app's callback surfaces from run() (in the app's task), with the lines released."""

    def on_action(action: str) -> None:
        raise RuntimeError(f"app bug on {action}")

    inputs = GpioInputs(GpioConfig(button_line=BUTTON), on_action=on_action)
    task = asyncio.create_task(inputs.run())
    req = await started(scripted)
    req.push(BUTTON, True, now_ns())
    async with asyncio.timeout(5):
        with pytest.raises(RuntimeError, match="app bug on engage"):
            await task
    assert req.released
