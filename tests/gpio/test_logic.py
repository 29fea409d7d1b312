"""ButtonLogic and Debouncer: debounced levels in, engage/cancel/end_turn/mute/unmute out (no I/O, no loop)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from earshot.gpio import DEBOUNCE_S, HOLD_S, Action, ButtonLogic, Debouncer

# ------------------------------------------------------------------------------------------------ Debouncer


def test_first_change_after_quiet_is_accepted_at_once() -> None:
    """A change after a quiet line is reported at the edge itself, with no added latency."""
    d = Debouncer(False, debounce_s=0.02)
    assert d.edge(True, 10.0) is True
    assert d.level is True
    assert d.deadline_s() is None


def test_bounces_inside_the_window_are_ignored() -> None:
    """Bounces that end on the accepted level change nothing and leave nothing pending."""
    d = Debouncer(False, debounce_s=0.02)
    assert d.edge(True, 10.000) is True
    assert d.edge(False, 10.002) is None
    assert d.edge(True, 10.004) is None
    assert d.deadline_s() is None
    assert d.poll(10.5) is None
    assert d.level is True


def test_a_bounce_ending_on_the_other_level_is_settled_by_poll() -> None:
    """A tap shorter than the window is not lost: poll at the deadline reports the release."""
    d = Debouncer(False, debounce_s=0.02)
    assert d.edge(True, 10.000) is True
    assert d.edge(False, 10.005) is None
    assert d.deadline_s() == pytest.approx(10.02)
    assert d.poll(10.01) is None  # too early
    assert d.poll(10.02) is False
    assert d.level is False
    assert d.deadline_s() is None


def test_an_edge_to_the_current_level_is_no_change() -> None:
    """A repeated level (a missed opposite edge) is not a change."""
    d = Debouncer(True, debounce_s=0.02)
    assert d.edge(True, 1.0) is None
    assert d.level is True


def test_after_the_window_edges_count_again() -> None:
    """Once the window has passed, the next edge is accepted at once."""
    d = Debouncer(False, debounce_s=0.02)
    assert d.edge(True, 1.0) is True
    assert d.edge(False, 1.03) is False
    assert d.edge(True, 1.06) is True


@given(
    st.lists(st.tuples(st.booleans(), st.floats(min_value=0.0, max_value=0.05)), min_size=1, max_size=40),
)
def test_settled_level_is_the_last_raw_level(edges: list[tuple[bool, float]]) -> None:
    """Whatever the bounce pattern, once the line is quiet and polled, the level is the raw line's last level."""
    d = Debouncer(False, debounce_s=DEBOUNCE_S)
    now = 100.0
    for level, gap in edges:
        now += gap
        d.edge(level, now)
    deadline = d.deadline_s()
    if deadline is not None:
        assert deadline <= now + DEBOUNCE_S
        d.poll(deadline)
    assert d.level is edges[-1][0]
    assert d.deadline_s() is None


# ---------------------------------------------------------------------------------------------- ButtonLogic


def test_press_while_idle_engages_at_the_press() -> None:
    """The session opens at the press, not at the release."""
    logic = ButtonLogic()
    assert logic.button_edge(True, 5.0, engaged=False) == ["engage"]
    assert logic.pressed


def test_tap_while_idle_engages_and_nothing_more() -> None:
    """Tap-to-talk: the engagement continues after a short release; the VAD ends the turn."""
    logic = ButtonLogic()
    assert logic.button_edge(True, 5.0, engaged=False) == ["engage"]
    assert logic.button_edge(False, 5.0 + HOLD_S / 2, engaged=True) == []


def test_hold_is_push_to_talk() -> None:
    """Press engages, release after a hold ends the turn."""
    logic = ButtonLogic()
    assert logic.button_edge(True, 5.0, engaged=False) == ["engage"]
    assert logic.button_edge(False, 5.0 + HOLD_S + 1.5, engaged=True) == ["end_turn"]


def test_hold_exactly_hold_s_is_push_to_talk() -> None:
    """The hold threshold is inclusive."""
    logic = ButtonLogic(hold_s=0.5)
    logic.button_edge(True, 5.0, engaged=False)
    assert logic.button_edge(False, 5.5, engaged=True) == ["end_turn"]


def test_tap_while_engaged_cancels_on_release() -> None:
    """A short press that began while engaged cancels the engagement."""
    logic = ButtonLogic()
    assert logic.button_edge(True, 5.0, engaged=True) == []
    assert logic.button_edge(False, 5.1, engaged=True) == ["cancel"]


def test_hold_while_engaged_is_another_push_to_talk_turn() -> None:
    """Holding during a follow-up is a turn of its own, ended on release, not a cancel."""
    logic = ButtonLogic()
    assert logic.button_edge(True, 5.0, engaged=True) == []
    assert logic.button_edge(False, 7.0, engaged=True) == ["end_turn"]


def test_engaged_state_is_read_at_the_press() -> None:
    """The engaged flag at release does not turn an idle press into a cancel."""
    logic = ButtonLogic()
    logic.button_edge(True, 5.0, engaged=False)
    assert logic.button_edge(False, 5.1, engaged=False) == []


def test_button_bounce_gives_one_engage() -> None:
    """A bouncing contact on press yields exactly one engage, and the bounce is no release."""
    logic = ButtonLogic()
    actions: list[Action] = []
    t = 5.0
    for i, level in enumerate([True, False, True, False, True]):
        actions += logic.button_edge(level, t + i * 0.002, engaged=bool(actions))
    assert actions == ["engage"]
    assert logic.next_deadline_s() is None
    assert logic.pressed


def test_release_bounce_gives_one_end_turn() -> None:
    """A bouncing contact on release after a hold yields exactly one end_turn."""
    logic = ButtonLogic()
    logic.button_edge(True, 5.0, engaged=False)
    actions: list[Action] = []
    for i, level in enumerate([False, True, False, True, False]):
        actions += logic.button_edge(level, 6.0 + i * 0.003, engaged=True)
    assert actions == ["end_turn"]
    assert logic.next_deadline_s() is None


def test_very_short_tap_is_not_lost() -> None:
    """A tap shorter than the debounce window engages, and the release is settled by poll."""
    logic = ButtonLogic(debounce_s=0.02)
    assert logic.button_edge(True, 5.000, engaged=False) == ["engage"]
    assert logic.button_edge(False, 5.010, engaged=True) == []
    deadline = logic.next_deadline_s()
    assert deadline is not None
    assert deadline == pytest.approx(5.02)
    assert logic.poll(deadline - 0.001, engaged=True) == []
    assert logic.poll(deadline, engaged=True) == []  # a tap from idle: no further action
    assert not logic.pressed
    assert logic.next_deadline_s() is None


def test_very_short_tap_while_engaged_cancels_via_poll() -> None:
    """A sub-window tap while engaged cancels once the window closes."""
    logic = ButtonLogic(debounce_s=0.02)
    assert logic.button_edge(True, 5.000, engaged=True) == []
    assert logic.button_edge(False, 5.008, engaged=True) == []
    assert logic.poll(5.02, engaged=True) == ["cancel"]


def test_button_held_at_start_is_ignored_until_released() -> None:
    """A button already down at start-up is no press: its release does nothing, the next press engages."""
    logic = ButtonLogic(button_pressed=True)
    assert logic.button_edge(False, 5.0, engaged=False) == []
    assert logic.button_edge(True, 6.0, engaged=False) == ["engage"]


def test_mute_switch_levels() -> None:
    """The mute switch's level maps to mute/unmute."""
    logic = ButtonLogic()
    assert logic.initial_actions() == []
    assert logic.mute_edge(True, 1.0) == ["mute"]
    assert logic.muted
    assert logic.mute_edge(False, 2.0) == ["unmute"]
    assert not logic.muted


def test_mute_on_at_start_is_reported_once() -> None:
    """A switch already on at start-up mutes; off at start-up says nothing."""
    assert ButtonLogic(mute_on=True).initial_actions() == ["mute"]
    assert ButtonLogic(mute_on=False).initial_actions() == []


def test_mute_bounce_and_short_flip_settle_on_the_last_level() -> None:
    """A flick of the switch shorter than the window is settled by poll to the final level."""
    logic = ButtonLogic(debounce_s=0.02)
    assert logic.mute_edge(True, 1.000) == ["mute"]
    assert logic.mute_edge(False, 1.005) == []
    assert logic.mute_edge(True, 1.010) == []
    assert logic.next_deadline_s() is None  # ended where it was accepted
    assert logic.mute_edge(False, 1.100) == ["unmute"]


def test_button_and_mute_debounce_independently() -> None:
    """A mute edge does not swallow a button edge inside its window, and the earliest deadline is reported."""
    logic = ButtonLogic(debounce_s=0.02)
    assert logic.mute_edge(True, 1.000) == ["mute"]
    assert logic.button_edge(True, 1.001, engaged=False) == ["engage"]
    logic.mute_edge(False, 1.005)
    logic.button_edge(False, 1.006, engaged=True)
    assert logic.next_deadline_s() == pytest.approx(1.02)
    assert logic.poll(1.02, engaged=True) == ["unmute"]
    assert logic.next_deadline_s() == pytest.approx(1.021)
    assert logic.poll(1.021, engaged=True) == []
    assert logic.next_deadline_s() is None
