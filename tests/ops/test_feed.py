"""The event stream behind ``earshot follow``: bounded per follower, bounded in followers."""

from __future__ import annotations

import pytest

from earshot.errors import DaemonError
from earshot.feed import MAX_FOLLOWERS, QUEUE_EVENTS, EventFeed


async def test_each_follower_gets_every_event_in_order() -> None:
    feed = EventFeed(wall=lambda: 12.5)
    feed.publish("nobody", {})  # before anyone follows: gone
    a, b = feed.follow(), feed.follow()
    feed.publish("wake", {"engine": "x"})
    feed.publish("idle", {})
    assert await a.next() == {"t": 12.5, "event": "wake", "data": {"engine": "x"}}
    assert (await a.next())["event"] == "idle"
    assert [(await b.next())["event"] for _ in range(2)] == ["wake", "idle"]


async def test_a_stuck_follower_loses_its_oldest_events_and_is_told() -> None:
    feed = EventFeed()
    slow = feed.follow()
    for i in range(QUEUE_EVENTS + 10):
        feed.publish("transcript", {"n": i})
    first = await slow.next()
    assert first["data"] == {"n": 10}
    assert first["dropped"] == 10
    assert "dropped" not in await slow.next()


def test_followers_are_bounded_and_leave() -> None:
    feed = EventFeed()
    followers = [feed.follow() for _ in range(MAX_FOLLOWERS)]
    with pytest.raises(DaemonError, match="followers"):
        feed.follow()
    followers[0].close()
    feed.follow()
