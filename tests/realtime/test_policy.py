"""Reconnect policy, pure: classification, full-jitter backoff, retry bookkeeping, history trimming."""

from __future__ import annotations

import random

import pytest

from earshot.errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    HandshakeError,
    RealtimeServerError,
    RemoteProtocolError,
)
from earshot.realtime.policy import HistoryItem, Reconnector, Verdict, backoff, classify, trim_history

R, F = Verdict.RETRY, Verdict.FATAL_FOR_NOW


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (ConnectionRefusedError(), R),
        (ConnectionResetError(), R),
        (TimeoutError(), R),
        (OSError("Network is unreachable"), R),
        (HandshakeError("timed out"), R),
        (HandshakeError("x", status=500), R),
        (HandshakeError("x", status=503), R),
        (HandshakeError("x", status=429), R),
        (HandshakeError("x", status=401), F),
        (HandshakeError("x", status=403), F),
        (HandshakeError("x", status=404), F),
        (ConnectionLost("x", code=1001), R),
        (ConnectionLost("x", code=1006), R),
        (ConnectionLost("x", code=1011), R),
        (ConnectionLost("x", code=1012), R),
        (ConnectionLost("x", code=1013), R),
        (ConnectionLost("x", code=4000), F),
        (RealtimeServerError("m", code="session_expired"), R),
        (RealtimeServerError("m", code="rate_limit_exceeded"), R),
        (RealtimeServerError("m", code="invalid_api_key"), F),
        (RealtimeServerError("m", code="insufficient_quota"), F),
        (RealtimeServerError("m", code="account_deactivated"), F),
        (RealtimeServerError("m", code="billing_hard_limit_reached"), F),
        (RealtimeServerError("m", code="beta_api_shape_disabled"), F),
        (RemoteProtocolError("garbage"), R),
        (AuthenticationError("no key"), F),
        (ConfigError("realtime.url: bad"), F),
    ],
)
def test_classify(error: BaseException, verdict: Verdict) -> None:
    assert classify(error) is verdict


def test_backoff_full_jitter_doubles_to_the_cap() -> None:
    rng = random.Random(7)
    delays = backoff(0.25, 30.0, rng)
    caps = [0.25 * 2**n for n in range(12)]
    values = [next(delays) for _ in caps]
    for value, cap in zip(values, caps, strict=True):
        assert 0.0 <= value <= min(cap, 30.0)
    # the same seed gives the same jitter: uniform(0, cap) in order
    check = random.Random(7)
    assert values == [check.uniform(0.0, min(cap, 30.0)) for cap in caps]


def test_reconnector_resets_after_a_connection_that_stayed_up() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    r = Reconnector(initial_s=0.25, max_s=30.0, slow_retry_s=600.0, rng=Top())
    lost = ConnectionLost("x", code=1006)
    assert [r.failed(lost, stayed_up=False).seconds for _ in range(4)] == [0.25, 0.5, 1.0, 2.0]
    d = r.failed(lost, stayed_up=True)
    assert (d.seconds, d.attempt) == (0.25, 1)


def test_reconnector_slow_retry_when_fatal_and_reset() -> None:
    r = Reconnector(initial_s=0.25, max_s=30.0, slow_retry_s=600.0, rng=random.Random(1))
    d = r.failed(RealtimeServerError("bad", code="invalid_api_key"), stayed_up=False)
    assert (d.verdict, d.seconds) == (Verdict.FATAL_FOR_NOW, 600.0)
    assert r.failed(HandshakeError("x", status=401), stayed_up=False).attempt == 2
    r.reset()
    assert r.failed(TimeoutError(), stayed_up=False).attempt == 1


def test_trim_history_keeps_a_recent_suffix() -> None:
    items = [HistoryItem("user", "a" * 10), HistoryItem("assistant", ""), HistoryItem("assistant", "b" * 10)]
    items += [HistoryItem("user", "c" * 10)]
    assert trim_history(items, max_items=10, max_chars=25) == [items[2], items[3]]
    assert trim_history(items, max_items=1, max_chars=1000) == [items[3]]
    assert trim_history(items, max_items=10, max_chars=5) == []
    assert trim_history(items, max_items=0, max_chars=1000) == []
