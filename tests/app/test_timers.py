"""Timers and alarms: the pure book, and the service that keeps and rings it (issue 19).

The book takes the wall clock as an argument; the service runs on a fake wall clock with a real
event loop only where its task is under test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from earshot.config import TimersConfig
from earshot.errors import ToolError
from earshot.realtime.timertools import TIMER_TOOLS, run_timer_tool
from earshot.realtime.tools import validate
from earshot.timers import MAX_TIMERS, MISSED_GRACE_S, TimerBook, TimerError, parse_clock
from earshot.timerservice import TimerService

NOW = 1_800_000_000.0  # a fixed wall clock


@pytest.fixture(autouse=True)
def _berlin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local time zone with DST, so alarms are computed in local time, not UTC."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()


def test_a_timer_rings_once_its_duration_has_passed() -> None:
    book = TimerBook()
    timer = book.set_timer(600, "pasta", NOW)
    assert (timer.id, timer.kind, timer.label, timer.due) == ("t1", "timer", "pasta", NOW + 600)
    assert book.next_due() == NOW + 600
    assert book.due(NOW + 599) == []
    rung = book.due(NOW + 600)
    assert [t.id for t in rung] == ["t1"]
    assert book.ringing() == rung
    assert book.next_due() is None
    assert book.due(NOW + 700) == []  # rings once
    assert [t.id for t in book.stop()] == ["t1"]
    assert len(book) == 0


@pytest.mark.parametrize("seconds", [0, -5, float("nan"), 24 * 3600 + 1])
def test_a_timer_out_of_range_is_refused(seconds: float) -> None:
    with pytest.raises(TimerError):
        TimerBook().set_timer(seconds, "", NOW)


def test_an_alarm_rings_at_the_next_local_time() -> None:
    local_now = dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()
    book = TimerBook()
    later = book.set_alarm("23:30", "", local_now)
    assert later.due - local_now == 5400  # tonight
    tomorrow = book.set_alarm("7:15", "wake up", local_now)
    assert dt.datetime.fromtimestamp(tomorrow.due).strftime("%Y-%m-%d %H:%M") == "2026-12-07 07:15"
    assert book.set_alarm("22:00", "", local_now).due - local_now == 24 * 3600  # now is past: tomorrow


def test_an_alarm_across_the_spring_dst_change_keeps_its_local_time() -> None:
    # 2027-03-28 in Berlin: 02:00 becomes 03:00, so the day has 23 hours.
    evening = dt.datetime(2027, 3, 27, 21, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))).timestamp()
    alarm = TimerBook().set_alarm("07:00", "", evening)
    assert dt.datetime.fromtimestamp(alarm.due).strftime("%Y-%m-%d %H:%M") == "2027-03-28 07:00"
    assert alarm.due - evening == 9 * 3600  # one hour fewer than the clock's face says


@pytest.mark.parametrize("text", ["25:00", "7.30", "seven", "", "12:60", "1:2:3:4"])
def test_a_clock_time_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(TimerError):
        parse_clock(text)


def test_cancel_by_id_label_or_all_and_a_miss_names_what_there_is() -> None:
    book = TimerBook()
    book.set_timer(60, "Tea", NOW)
    book.set_timer(120, "eggs", NOW)
    book.set_timer(180, "", NOW)
    assert [t.id for t in book.cancel("tea")] == ["t1"]  # labels match without case
    assert [t.id for t in book.cancel("t3")] == ["t3"]
    with pytest.raises(TimerError, match=r"t2 \(eggs\)"):
        book.cancel("pizza")
    assert [t.id for t in book.cancel("all")] == ["t2"]
    assert book.set_timer(60, "", NOW).id == "t4"  # ids are never reused


def test_the_book_is_bounded() -> None:
    book = TimerBook()
    for _ in range(MAX_TIMERS):
        book.set_timer(60, "x" * 500, NOW)
    assert len(book.all()[0].label) == 60
    with pytest.raises(TimerError, match="cancel one"):
        book.set_timer(60, "", NOW)


def test_a_ring_nobody_stops_ends_after_ring_max() -> None:
    book = TimerBook()
    book.set_timer(10, "", NOW)
    book.due(NOW + 10)
    assert book.expire(NOW + 10 + 299, 300) == []
    assert [t.id for t in book.expire(NOW + 10 + 300, 300)] == ["t1"]
    assert book.ringing() == []


def test_the_book_survives_its_file_and_rings_what_fell_due_while_down() -> None:
    book = TimerBook()
    book.set_timer(60, "soon", NOW)
    book.set_timer(3600, "later", NOW)
    book.set_alarm("03:00", "", NOW)
    book.due(NOW + 60)  # "soon" was ringing when the daemon stopped
    data = json.loads(json.dumps(book.to_json()))
    restarted = TimerBook.from_json(data, NOW + 120)
    assert [(t.id, t.label, t.state) for t in restarted.all()] == [
        (t.id, t.label, "pending") for t in sorted(book.all(), key=lambda t: t.due)
    ]
    assert [t.id for t in restarted.due(NOW + 120)] == ["t1"]  # rings again at once
    assert restarted.set_timer(5, "", NOW).id == "t4"
    # Long overdue: missed, not rung hours late.
    late = TimerBook.from_json(data, NOW + 3600 + MISSED_GRACE_S + 1)
    assert {t.label for t in late.missed} == {"soon", "later"}
    assert all(t.label not in ("soon", "later") for t in late.all())


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"timers": "x"},
        {"timers": [{"id": "t1"}, 5, None, {"id": "../../etc", "kind": "timer", "label": "", "due": 1, "created": 1}]},
        {"timers": [{"id": "t1", "kind": "bomb", "label": "", "due": NOW, "created": NOW}]},
        {"timers": [{"id": "t1", "kind": "timer", "label": "", "due": True, "created": NOW}]},
        {"timers": [{"id": "t1", "kind": "timer", "label": "", "due": 1e300, "created": NOW}]},
        {"timers": [{"id": "t1", "kind": "timer", "label": "", "due": NOW, "created": NOW, "duration_s": -1}]},
    ],
)
def test_a_damaged_file_loses_only_what_is_wrong_in_it(data: Any) -> None:
    assert len(TimerBook.from_json(data, NOW)) == 0


def test_a_hostile_file_is_bounded() -> None:
    entry = {"kind": "timer", "label": "x" * 10_000, "due": NOW + 60, "created": NOW}
    data = {"next": 10**12, "timers": [{**entry, "id": f"t{i}"} for i in range(1, 10_000)]}
    book = TimerBook.from_json(data, NOW)
    assert len(book) == MAX_TIMERS
    assert max(len(t.label) for t in book.all()) == 60
    book.cancel("t1")
    assert book.set_timer(60, "", NOW).id == f"t{MAX_TIMERS + 1}"  # ids stay unique after a file's


# ------------------------------------------------------------------------------ the tools


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _service(tmp_path: Path, clock: _Clock, **kw: Any) -> tuple[TimerService, list[tuple[str, dict[str, Any]]]]:
    hooks: list[tuple[str, dict[str, Any]]] = []
    kw.setdefault("ring", lambda: None)
    kw.setdefault("busy", lambda: False)
    service = TimerService(
        TimersConfig(), tmp_path / "timers.json", on_hook=lambda n, d: hooks.append((n, d)), wall=clock, **kw
    )
    return service, hooks


def test_the_tools_answer_what_the_user_wants_to_hear(tmp_path: Path) -> None:
    service, hooks = _service(tmp_path, _Clock())
    specs = {spec.name: spec for spec in TIMER_TOOLS}
    assert set(specs) == {"set_timer", "set_alarm", "list_timers", "cancel_timer"}
    assert validate({"seconds": 0}, specs["set_timer"].parameters)  # the schema refuses before the book
    answer = run_timer_tool(service, "set_timer", {"seconds": 300, "label": "tea"})
    assert answer["timer"]["remaining_s"] == 300
    assert answer["timer"]["label"] == "tea"
    assert hooks[-1][0] == "timer_set"
    assert [t["id"] for t in run_timer_tool(service, "list_timers", {})["timers"]] == ["t1"]
    with pytest.raises(ToolError, match="no timer"):
        run_timer_tool(service, "cancel_timer", {"which": "coffee"})
    assert run_timer_tool(service, "cancel_timer", {"which": "tea"})["cancelled"][0]["id"] == "t1"
    assert hooks[-1] == ("timer_done", {**hooks[-1][1], "reason": "cancelled"})


# ------------------------------------------------------------------------------ the service


async def _settle(service: TimerService) -> None:
    async with asyncio.timeout(5):
        await service.settled()


async def test_a_due_timer_waits_for_the_exchange_then_rings_and_is_kept_on_disk(tmp_path: Path) -> None:
    clock = _Clock()
    rings: list[float] = []
    busy = [True]
    service, hooks = _service(tmp_path, clock, ring=lambda: rings.append(clock.now), busy=lambda: busy[0])
    service.set_timer(5, "eggs")
    task = asyncio.create_task(service.run())
    try:
        await _settle(service)
        saved = json.loads((tmp_path / "timers.json").read_text())
        assert [t["label"] for t in saved["timers"]] == ["eggs"]
        assert os.stat(tmp_path / "timers.json").st_mode & 0o777 == 0o600
        clock.now = NOW + 6
        service.poke()
        await _settle(service)
        assert rings == []  # a reply is playing: the timer waits
        assert not service.ringing
        busy[0] = False
        service.poke()
        await _settle(service)
        assert rings == [NOW + 6]
        assert service.ringing
        assert [n for n, _ in hooks] == ["timer_set", "timer_ringing"]
        stopped = service.stop_ringing("wake word")
        assert [t["id"] for t in stopped] == ["t1"]
        assert hooks[-1][0] == "timer_done"
        assert hooks[-1][1]["by"] == "wake word"
        await _settle(service)
        assert json.loads((tmp_path / "timers.json").read_text())["timers"] == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_ring_repeats_then_gives_up(tmp_path: Path) -> None:
    clock = _Clock()
    rings: list[float] = []
    quiet: list[bool] = []
    service, hooks = _service(
        tmp_path, clock, ring=lambda: rings.append(clock.now), on_quiet=lambda: quiet.append(True)
    )
    service.set_timer(1, "")
    clock.now = NOW + 1
    mono = 1000.0
    service._step(clock.now, mono)
    service._step(clock.now + 1, mono + 1.0)  # within the ring period: no second cue yet
    service._step(clock.now + 2, mono + 2.0)
    assert len(rings) == 2
    quiet.clear()
    service._step(NOW + 1 + TimersConfig().ring_max_s, mono + 400)
    assert not service.ringing
    assert quiet  # the conversation is told nothing rings any more
    assert hooks[-1][1]["reason"] == "unanswered"


def test_an_unreadable_or_huge_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "timers.json").write_text("{not json")
    assert len(_service(tmp_path, _Clock())[0].book) == 0
    (tmp_path / "timers.json").write_text(" " * (70 * 1024))
    assert len(_service(tmp_path, _Clock())[0].book) == 0
