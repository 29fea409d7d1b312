"""A push-to-talk button and a hardware mute switch on GPIO lines, through libgpiod v2.

Two layers, in the manner of the rest of the daemon:

* :class:`ButtonLogic` is pure: debounced line levels and times in, action names out. No I/O, no clock.
* :class:`GpioInputs` is the asyncio shell: it requests the lines from the kernel's GPIO character
  device (``gpiod`` v2 bindings, an optional extra), waits on the request's file descriptor with
  ``loop.add_reader`` (no thread), converts the kernel's CLOCK_MONOTONIC edge timestamps to seconds
  and feeds them to the logic, calling ``on_action(name)`` for each action.

The button (``gate.gpio.button_line``):

* **Press while idle** → ``"engage"`` at once (the session opens at the press; pre-roll keeps the start).
* **Release after a hold** of at least ``hold_s`` (0.5 s) → ``"end_turn"``: push-to-talk; the turn is
  committed locally, as with ``turn_detection: none``.
* **Release after a tap** (shorter than ``hold_s``) that began while idle → nothing more: tap-to-talk,
  the engagement continues and the VAD / server decides the end of the turn.
* **Tap while engaged** (the press began while engaged) → ``"cancel"`` on release: the engagement ends.
  A hold while engaged is another push-to-talk turn (``"end_turn"`` on release), so a follow-up question
  can be asked by holding the button.

The mute switch (``gate.gpio.mute_line``) is a level: active → ``"mute"``, inactive → ``"unmute"``. Its
level at start-up is reported once (``"mute"`` if the switch is on; nothing if it is off). The app
decides what a button action means while muted.

"Active" means pressed / switched on: with ``active_low`` (the default, a switch to ground with the
pull-up enabled) the kernel inverts the line, so a rising edge is always a press.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from earshot.config import GpioConfig

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["DEBOUNCE_S", "HOLD_S", "Action", "ButtonLogic", "Debouncer", "GpioInputs"]

logger = logging.getLogger(__name__)

Action = Literal["engage", "cancel", "end_turn", "mute", "unmute"]
"""What an input asks the app to do."""

DEBOUNCE_S = 0.020
"""Contact bounce is ignored for this long after an accepted change (and asked of the kernel too)."""

HOLD_S = 0.5
"""A press at least this long is push-to-talk (its release ends the turn); shorter is a tap."""

CONSUMER = "earshot"
"""The consumer name the kernel shows for our lines (``gpioinfo``)."""


class Debouncer:
    """Lock-out debouncing of one line's level.

    The first change after a quiet period is accepted at once (no added latency), then edges are
    ignored for ``debounce_s``; if the raw level at the end of that window differs from the accepted
    one (a tap shorter than the window, or a bounce that ended on the other level), :meth:`poll` at
    :meth:`deadline_s` accepts it. The caller must call :meth:`poll` at the deadline when there is one.

    Args:
        initial: the line's level (True = active) when watching starts.
        debounce_s: the lock-out window in seconds.
    """

    def __init__(self, initial: bool, *, debounce_s: float = DEBOUNCE_S) -> None:
        self.debounce_s = debounce_s
        self.level = initial
        self._raw = initial
        self._changed_s: float | None = None

    def edge(self, level: bool, now_s: float) -> bool | None:
        """Feed a raw edge (the line's new level) at ``now_s``.

        Returns:
            The new stable level if it changed now, else None.
        """
        self._raw = level
        if self._changed_s is not None and now_s - self._changed_s < self.debounce_s:
            return None
        return self._accept(now_s)

    def deadline_s(self) -> float | None:
        """When :meth:`poll` must be called to settle a pending level, or None."""
        if self._changed_s is None or self._raw == self.level:
            return None
        return self._changed_s + self.debounce_s

    def poll(self, now_s: float) -> bool | None:
        """Settle the level after the lock-out window.

        Returns:
            The new stable level if it changed now, else None.
        """
        deadline = self.deadline_s()
        if deadline is None or now_s < deadline:
            return None
        return self._accept(now_s)

    def _accept(self, now_s: float) -> bool | None:
        if self._raw == self.level:
            return None
        self.level = self._raw
        self._changed_s = now_s
        return self.level


class ButtonLogic:
    """Turns debounced button and mute-switch levels into actions (pure: times are passed in).

    Feed every edge of the button to :meth:`button_edge` and of the mute switch to :meth:`mute_edge`,
    and call :meth:`poll` at :meth:`next_deadline_s` whenever that is not None. ``engaged`` is the app's
    current engagement state (anything but IDLE), read at the moment of the call.

    Args:
        button_pressed: the button's level at start; a button already held is ignored until released.
        mute_on: the mute switch's level at start (reported by :meth:`initial_actions`).
        debounce_s: contact-bounce window for both lines.
        hold_s: a press at least this long is push-to-talk.
    """

    def __init__(
        self,
        *,
        button_pressed: bool = False,
        mute_on: bool = False,
        debounce_s: float = DEBOUNCE_S,
        hold_s: float = HOLD_S,
    ) -> None:
        self.hold_s = hold_s
        self._button = Debouncer(button_pressed, debounce_s=debounce_s)
        self._mute = Debouncer(mute_on, debounce_s=debounce_s)
        self._press_s: float | None = None
        self._press_while_engaged = False

    @property
    def pressed(self) -> bool:
        """The button's debounced level."""
        return self._button.level

    @property
    def muted(self) -> bool:
        """The mute switch's debounced level."""
        return self._mute.level

    def initial_actions(self) -> list[Action]:
        """The actions that the start-up levels imply: ``["mute"]`` if the mute switch is on."""
        return ["mute"] if self._mute.level else []

    def button_edge(self, pressed: bool, now_s: float, *, engaged: bool) -> list[Action]:
        """Feed a raw button edge (``pressed`` = the new level) at ``now_s``; returns the actions."""
        return self._button_changed(self._button.edge(pressed, now_s), now_s, engaged)

    def mute_edge(self, on: bool, now_s: float) -> list[Action]:
        """Feed a raw mute-switch edge (``on`` = the new level) at ``now_s``; returns the actions."""
        return self._mute_changed(self._mute.edge(on, now_s))

    def next_deadline_s(self) -> float | None:
        """When :meth:`poll` must next be called, or None when nothing is pending."""
        deadlines = [d for d in (self._button.deadline_s(), self._mute.deadline_s()) if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now_s: float, *, engaged: bool) -> list[Action]:
        """Settle levels whose debounce window has ended; returns the actions."""
        actions = self._button_changed(self._button.poll(now_s), now_s, engaged)
        actions += self._mute_changed(self._mute.poll(now_s))
        return actions

    def _button_changed(self, level: bool | None, now_s: float, engaged: bool) -> list[Action]:
        if level is None:
            return []
        if level:
            self._press_s = now_s
            self._press_while_engaged = engaged
            return [] if engaged else ["engage"]
        press_s, self._press_s = self._press_s, None
        if press_s is None:  # held since start-up: not a press we saw
            return []
        if now_s - press_s >= self.hold_s:
            return ["end_turn"]
        return ["cancel"] if self._press_while_engaged else []

    @staticmethod
    def _mute_changed(level: bool | None) -> list[Action]:
        if level is None:
            return []
        return ["mute"] if level else ["unmute"]


class GpioInputs:
    """The button and mute switch on a GPIO chip, as an asyncio task.

    Args:
        config: ``config.gate.gpio``.
        on_action: called (on the event loop) with ``"engage"``, ``"cancel"``, ``"end_turn"``,
            ``"mute"`` or ``"unmute"``; an exception it raises ends :meth:`run` with that exception.
        is_engaged: returns the app's engagement state (True unless IDLE); read at each press.
        debounce_s: contact-bounce window (also requested from the kernel when it supports it).
        hold_s: a press at least this long is push-to-talk.
    """

    def __init__(
        self,
        config: GpioConfig,
        *,
        on_action: Callable[[str], None],
        is_engaged: Callable[[], bool] = lambda: False,
        debounce_s: float = DEBOUNCE_S,
        hold_s: float = HOLD_S,
    ) -> None:
        self._config = config
        self._on_action = on_action
        self._is_engaged = is_engaged
        self._debounce_s = debounce_s
        self._hold_s = hold_s
        self._logic: ButtonLogic | None = None
        self._request: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._done: asyncio.Future[OSError | None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether any line is configured."""
        return self._config.button_line is not None or self._config.mute_line is not None

    async def run(self) -> None:
        """Watch the lines until cancelled; the lines are released on the way out.

        Returns at once when no line is configured. When ``gpiod`` is not installed, or the chip or
        lines cannot be requested, or reading them fails later, logs one WARNING and returns: the
        daemon carries on without the button. Cancelling is safe.
        """
        if not self.enabled:
            return
        try:
            import gpiod  # an optional extra: imported only when lines are configured
        except ImportError:
            logger.warning("gate.gpio: lines are configured but gpiod is not installed (pip install 'earshot[gpio]')")
            return
        try:
            self._request = self._request_lines(gpiod)
        except (OSError, ValueError) as exc:
            logger.warning("gate.gpio: cannot request lines on %s: %s; the button is off", self._config.chip, exc)
            return
        loop = asyncio.get_running_loop()
        fd: int | None = None
        try:
            button, mute = self._config.button_line, self._config.mute_line
            try:
                button_pressed = button is not None and bool(self._request.get_value(button))
                mute_on = mute is not None and bool(self._request.get_value(mute))
                fd = int(self._request.fd)
            except OSError as exc:
                logger.warning("gate.gpio: reading %s failed: %s; the button is off", self._config.chip, exc)
                return
            self._logic = ButtonLogic(
                button_pressed=button_pressed, mute_on=mute_on, debounce_s=self._debounce_s, hold_s=self._hold_s
            )
            logger.info("gate.gpio: watching %s (button line %s, mute line %s)", self._config.chip, button, mute)
            self._done = loop.create_future()
            if not self._act(self._logic.initial_actions()):
                await self._done  # raises what on_action raised
            loop.add_reader(fd, self._readable)
            read_error = await self._done
            if read_error is not None:
                logger.warning("gate.gpio: reading %s failed: %s; the button is off", self._config.chip, read_error)
        finally:
            if fd is not None:
                loop.remove_reader(fd)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            request, self._request = self._request, None
            with contextlib.suppress(OSError):
                request.release()

    def _request_lines(self, gpiod: ModuleType) -> Any:
        """Request the configured lines as inputs with edge detection, with kernel debounce if it takes it."""
        line = gpiod.line
        offsets = [n for n in (self._config.button_line, self._config.mute_line) if n is not None]

        def settings(debounce: timedelta) -> Any:
            return gpiod.LineSettings(
                direction=line.Direction.INPUT,
                edge_detection=line.Edge.BOTH,
                bias=line.Bias.PULL_UP if self._config.active_low else line.Bias.AS_IS,
                active_low=self._config.active_low,
                debounce_period=debounce,
            )

        try:
            return gpiod.request_lines(
                self._config.chip,
                config={tuple(offsets): settings(timedelta(seconds=self._debounce_s))},
                consumer=CONSUMER,
            )
        except OSError as exc:
            if not os.path.exists(self._config.chip):
                raise
            # Some drivers refuse a debounce period or a bias; the software debounce still applies.
            logger.debug("gate.gpio: request with kernel debounce failed (%s); retrying without", exc)
            return gpiod.request_lines(
                self._config.chip, config={tuple(offsets): settings(timedelta(0))}, consumer=CONSUMER
            )

    def _readable(self) -> None:
        """The request's fd is readable: read the edge events and act on them."""
        assert self._logic is not None
        try:
            events = self._request.read_edge_events()
        except OSError as exc:
            if self._done is not None and not self._done.done():
                self._done.set_result(exc)
            return
        for event in events:
            rising = event.event_type == event.Type.RISING_EDGE
            now_s = event.timestamp_ns / 1e9
            if event.line_offset == self._config.button_line:
                actions = self._logic.button_edge(rising, now_s, engaged=self._is_engaged())
            elif event.line_offset == self._config.mute_line:
                actions = self._logic.mute_edge(rising, now_s)
            else:
                continue
            if not self._act(actions):
                return
        self._schedule_poll()

    def _poll(self) -> None:
        """A debounce window ended: settle the pending levels."""
        self._timer = None
        assert self._logic is not None
        now_s = asyncio.get_running_loop().time()
        if self._act(self._logic.poll(now_s, engaged=self._is_engaged())):
            self._schedule_poll()

    def _schedule_poll(self) -> None:
        # The kernel stamps edges with CLOCK_MONOTONIC, the clock of the default event loop's time().
        assert self._logic is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline_s = self._logic.next_deadline_s()
        if deadline_s is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline_s, self._poll)

    def _act(self, actions: list[Action]) -> bool:
        for action in actions:
            logger.debug("gate.gpio: %s", action)
            try:
                self._on_action(action)
            except Exception as exc:  # noqa: BLE001 - handed to run(), which raises it in the app's task
                if self._done is not None and not self._done.done():
                    self._done.set_exception(exc)
                return False
        return True
