"""The session's pure parts on their own: the uplink ledger and the transcript log."""

from __future__ import annotations

import numpy as np

from earshot.config import HistoryConfig
from earshot.realtime.policy import HistoryItem
from earshot.realtime.transcript import MAX_ENTRY_CHARS, TranscriptLog
from earshot.realtime.uplinkaudio import UplinkAudio


def _pcm(n: int, value: int) -> np.ndarray:
    return np.full(n, value, np.int16)


def test_the_ledger_batches_keeps_the_timeline_and_flushes_the_rest() -> None:
    ledger = UplinkAudio(batch_samples=100, max_buffer_samples=1000, max_turn_samples=10_000)
    assert ledger.stream(_pcm(60, 1)) == ()
    batches = ledger.stream(_pcm(250, 2))
    assert [b.size for b in batches] == [100, 100, 100]
    assert ledger.input_samples == 310
    rest = ledger.flush()
    assert rest is not None
    assert rest.size == 10
    assert rest[0] == 2
    assert ledger.flush() is None


def test_pending_audio_past_the_offline_bound_drops_the_oldest_and_counts_it() -> None:
    ledger = UplinkAudio(batch_samples=100, max_buffer_samples=250, max_turn_samples=10_000)
    for value in range(1, 5):
        ledger.queue(_pcm(100, value))
    assert ledger.dropped_samples == 200
    assert ledger.offline_samples(ready=False) == 200
    sent = np.concatenate(ledger.stream_pending())
    assert sent.tolist() == [3] * 100 + [4] * 100
    assert ledger.offline_samples(ready=True) == 0


def test_a_replay_waits_for_its_decision_and_forgetting_it_keeps_what_came_after() -> None:
    replay = _pcm(300, 7)
    ledger = UplinkAudio(
        batch_samples=100, max_buffer_samples=200, max_turn_samples=10_000, replay=replay, replay_offline_samples=100
    )
    assert ledger.replay_undecided
    ledger.queue(_pcm(100, 8))
    # the 200 samples of the replay a server heard are not offline audio; the 100 that were not, and the new 100, are
    assert ledger.offline_samples(ready=True) == 200
    assert ledger.decide_replay(False) == 0
    assert ledger.offline_samples(ready=True) == 0  # decided: nothing waits
    assert np.concatenate(ledger.stream_pending()).tolist() == [8] * 100


def test_unsettled_audio_starts_after_the_answered_turn() -> None:
    ledger = UplinkAudio(batch_samples=100, max_buffer_samples=1000, max_turn_samples=10_000)
    ledger.stream(_pcm(500, 1))  # the first turn
    ledger.mark_committed(server_vad=False)
    ledger.response_created()
    ledger.stream(_pcm(200, 2))  # the user goes on while the reply is made
    ledger.response_settled()
    ledger.stream(_pcm(100, 3))
    assert ledger.unsettled_audio().tolist() == [2] * 200 + [3] * 100
    ledger.speech_started(650)  # the server heard the next turn start here
    assert ledger.unsettled_audio().tolist() == [2] * 50 + [3] * 100


def test_the_transcript_log_settles_cuts_the_heard_part_and_bounds_an_item() -> None:
    log = TranscriptLog([HistoryItem("user", "earlier")], HistoryConfig())
    user = log.entry("u1", "user")
    log.set_text(user, "what is the weather", final=True)
    reply = log.entry("a1", "assistant")
    reply.response_id = "r1"
    log.set_text(reply, "It is sunny and warm ", final=False)
    log.set_text(reply, "all day long.", final=False)
    assert [i.text for i in log.history()] == ["earlier"]  # nothing settled yet
    reply.heard_ms, reply.total_ms = 500, 1000
    log.settle("r1")
    history = log.history()
    assert [i.role for i in history] == ["user", "user", "assistant"]
    assert history[2].truncated
    assert history[2].text == "It is sunny and…"
    log.set_text(log.entry("a2", "assistant"), "x" * (MAX_ENTRY_CHARS + 10), final=True)
    assert log.dropped_chars == 10
    assert log.chars == len("what is the weather") + len("It is sunny and warm all day long.") + MAX_ENTRY_CHARS
