"""Stats: usage persisted across restarts and split at local midnight; engagement summaries."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from earshot.stats import Histogram, Stats
from earshot.summary import engagement_summary
from earshot.tokens import TokenUsage


def wall(day: int, hour: int, minute: int = 0, second: float = 0.0) -> float:
    return dt.datetime(2026, 11, day, hour, minute).timestamp() + second


def test_usage_survives_a_restart_and_rolls_over_at_local_midnight(tmp_path: Path) -> None:
    s = Stats(state_dir=tmp_path, now=0.0, now_wall=wall(20, 23, 50))
    s.set_connection("connected", 0.0, wall(20, 23, 50))
    s.set_connection("disconnected", 300.0, wall(20, 23, 55))  # 5 min on the 20th
    assert s.connected_minutes_today(300.0, wall(20, 23, 55)) == pytest.approx(5.0)
    assert s.save_usage(300.0, wall(20, 23, 55))
    assert stat.S_IMODE((tmp_path / "usage.json").stat().st_mode) == 0o600

    # "restart": a new Stats reads the ledger
    s = Stats(state_dir=tmp_path, now=1000.0, now_wall=wall(20, 23, 56))
    assert s.connected_minutes_today(1000.0, wall(20, 23, 56)) == pytest.approx(5.0)
    # a session across midnight: 23:58 → 00:04 counts 2 min on the 20th and 4 on the 21st
    s.set_connection("connected", 1000.0, wall(20, 23, 58))
    assert s.connected_minutes_today(1360.0, wall(21, 0, 4)) == pytest.approx(4.0)
    s.set_connection("offline", 1360.0, wall(21, 0, 4))
    assert s.save_usage(1360.0, wall(21, 0, 4))
    assert not s.save_usage(1400.0, wall(21, 0, 5))  # nothing changed: no write
    days = json.loads((tmp_path / "usage.json").read_text())["connected_seconds"]
    assert days == {"2026-11-20": pytest.approx(420.0), "2026-11-21": pytest.approx(240.0)}

    s = Stats(state_dir=tmp_path, now=0.0, now_wall=wall(21, 12))
    assert s.connected_minutes_today(0.0, wall(21, 12)) == pytest.approx(4.0)
    assert s.connected_minutes_today(0.0, wall(22, 0, 1)) == 0.0  # a new day starts from zero


def test_wall_clock_jump_neither_invents_nor_erases_time(tmp_path: Path) -> None:
    s = Stats(state_dir=tmp_path, now=0.0, now_wall=wall(1, 8))
    s.set_connection("connected", 10.0, wall(1, 8))
    # NTP moves the wall clock 3 days ahead while 60 s pass on the monotonic clock
    assert s.connected_minutes_today(70.0, wall(4, 9)) == pytest.approx(1.0)
    s.set_connection("disconnected", 70.0, wall(4, 9))
    assert s.connected_minutes_today(70.0, wall(1, 8)) == 0.0


def test_corrupt_usage_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "usage.json").write_text("{not json")
    s = Stats(state_dir=tmp_path, now=0.0, now_wall=wall(5, 10))
    assert s.connected_minutes_today(0.0, wall(5, 10)) == 0.0
    (tmp_path / "usage.json").write_text(
        json.dumps({"connected_seconds": {"2026-11-05": -5, "bad": 3, "2026-11-06": 60}})
    )
    s = Stats(state_dir=tmp_path, now=0.0, now_wall=wall(6, 10))
    assert s.connected_minutes_today(0.0, wall(6, 10)) == pytest.approx(1.0)
    assert s.connected_minutes_today(0.0, wall(5, 10)) == 0.0


def test_snapshot_is_json_and_never_holds_a_key() -> None:
    s = Stats(state_dir=None, now=0.0, now_wall=wall(3, 9))
    s.error("invalid_api_key", "Incorrect API key provided: sk-proj-abcdefghijklmnop1234", wall(3, 9, 1))
    s.update_device("input", {"device": "hw:1", "state": "ok", "overruns": 5})
    s.update_device("input", {"device": "hw:1", "state": "ok", "overruns": 7})
    s.update_device("input", {"device": "hw:1", "state": "reopened", "overruns": 1})  # reset by a reopen
    snap = s.snapshot(5.0, wall(3, 9, 1))
    text = json.dumps(snap)
    assert "sk-proj-abcdefghijklmnop1234" not in text
    assert snap["errors"] == {"invalid_api_key": 1}
    assert snap["last_error"]["text"].startswith("invalid_api_key: Incorrect API key provided: [REDACTED]")
    assert snap["counters"]["overruns"] == 8
    assert snap["devices"]["input"]["state"] == "reopened"


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    h = Histogram((100, 200))
    for v in (100.0, 100.5, 250.0, float("nan"), -3.0):
        h.observe(v)
    assert h.cumulative() == [(100.0, 2), (200.0, 3), (float("inf"), 4)]
    assert h.count == 4
    with pytest.raises(ValueError, match="increasing"):
        Histogram((200, 100))


def test_engagement_summary_line_and_fields() -> None:
    s = Stats(state_dir=None, now=0.0, now_wall=wall(7, 18))
    record = s.engagement_started(10.0, wall(7, 18), trigger="wakeword")
    s.session_ready(412.0)
    s.turn()
    s.reply_started(650.0)
    s.bargein(230.0)
    s.turn()
    s.reply_started(850.0)
    s.reconnect()
    s.tokens.add(TokenUsage(text_in=900, audio_in=400, cached_in=500, text_out=20, audio_out=300))
    s.tokens.add(TokenUsage(audio_in=100, audio_out=200))
    ended = s.engagement_ended(42.5, reason="follow_up_over")
    assert ended is record
    message, fields = engagement_summary(record, 50.0)
    # 400 uncached text at $4, 500 cached at $0.40, 500 audio in at $32, 20 text out at $16, 500 audio out at $64
    cost = (400 * 4 + 500 * 0.4 + 500 * 32 + 20 * 16 + 500 * 64) / 1e6
    assert message == (
        f"engagement {record.engagement_id} (wakeword) ended: follow_up_over, 32.5 s, 2 turns, 1 barge-in,"
        f" 1 reconnect, 1920 tokens (~${cost:.3f}); ready 412 ms, reply start 750 ms avg (max 850), barge-in 230 ms avg"
    )
    assert fields["EARSHOT_TOKENS_IN"] == "1400"
    assert fields["EARSHOT_TOKENS_OUT"] == "520"
    assert fields["EARSHOT_COST_USD"] == f"{cost:.4f}"
    assert s.snapshot(50.0, wall(7, 18))["usage"]["tokens"]["audio_out"] == 500
    assert fields["EARSHOT_EVENT"] == "engagement"
    assert fields["EARSHOT_TURNS"] == "2"
    assert fields["EARSHOT_BARGEINS"] == "1"
    assert fields["EARSHOT_RECONNECTS"] == "1"
    assert fields["EARSHOT_DURATION_S"] == "32.5"
    assert fields["EARSHOT_REPLY_START_MS"] == "750"
    assert all(k.isupper() and isinstance(v, str) for k, v in fields.items())
    assert s.engagements == 1
    assert s.engagement is None
    # an engagement that never got a session: no latency fields
    r2 = s.engagement_started(60.0, wall(7, 18, 1), trigger="control")
    s.engagement_ended(61.0, reason="cancel")
    message, fields = engagement_summary(r2, 61.0)
    assert message.endswith("cancel, 1.0 s, 0 turns, 0 barge-ins, 0 reconnects")
    assert "EARSHOT_WAKE_TO_READY_MS" not in fields


def test_error_kinds_stay_a_bounded_label_set(tmp_path: Path) -> None:
    """3,000 invented server error codes fold into ``other`` past the bound; odd characters are replaced."""
    from earshot.stats import MAX_ERROR_KINDS

    s = Stats(state_dir=tmp_path, now=0.0, now_wall=0.0)
    for i in range(3000):
        s.error(f"code_{i}", "boom " * 200, 0.0)
    s.error('evil"}\n{label', "x", 0.0)
    assert len(s.errors) == MAX_ERROR_KINDS + 1
    assert s.errors["other"] == 3000 - MAX_ERROR_KINDS + 1
    assert all(len(k) <= 64 and k.isascii() and '"' not in k and "\n" not in k for k in s.errors)
    assert s.last_error is not None
    assert len(s.last_error) <= 300
    assert len(json.dumps(s.snapshot(0.0, 0.0))) < 20_000


def test_the_usage_ledger_keeps_five_weeks_and_refuses_what_is_not_a_ledger() -> None:
    """The file is bounded (the newest 35 days), and its parser names what it cannot read."""
    from earshot.usage import KEEP_DAYS, UsageLedger

    ledger = UsageLedger()
    for day in range(1, 29):
        ledger.add(60.0, wall(day, 12))
    for day in range(1, 20):
        ledger.add(30.0, dt.datetime(2026, 12, day, 12).timestamp())
    kept = json.loads(ledger.to_json())["connected_seconds"]
    assert len(kept) == KEEP_DAYS
    assert min(kept) == "2026-11-13"  # the oldest went
    assert UsageLedger.from_json(ledger.to_json()).seconds_on(wall(28, 9)) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="unexpected content"):
        UsageLedger.from_json("[1, 2]")
    old_file = {"connected_seconds": {f"2026-10-{d:02d}": 1.0 for d in range(1, 32)} | dict(kept)}
    loaded = json.loads(UsageLedger.from_json(json.dumps(old_file)).to_json())["connected_seconds"]
    assert loaded == pytest.approx(kept)  # a longer file is cut to the newest days on load too


def test_a_barge_in_the_user_said_nothing_after_is_counted_false() -> None:
    stats = Stats(state_dir=None, now=0.0, now_wall=1_700_000_000.0)
    # Interrupted, then a turn: a true barge-in.
    stats.engagement_started(1.0, 1_700_000_001.0, trigger="wakeword")
    stats.bargein(80.0)
    stats.turn()
    stats.engagement_ended(5.0, reason="follow-up window over")
    assert stats.false_bargeins == 0
    # Interrupted by a noise: nobody spoke, the engagement ended.
    stats.engagement_started(6.0, 1_700_000_006.0, trigger="wakeword")
    stats.turn()
    stats.bargein(90.0)
    stats.engagement_ended(12.0, reason="nobody spoke")
    assert stats.false_bargeins == 1
    # Cancelled (a button, a stop word) after the barge-in: the user meant it.
    stats.engagement_started(13.0, 1_700_000_013.0, trigger="wakeword")
    stats.bargein(70.0)
    stats.engagement_ended(14.0, reason="stop word")
    assert stats.false_bargeins == 1
    assert stats.snapshot(15.0, 1_700_000_015.0)["counters"]["false_bargeins"] == 1
