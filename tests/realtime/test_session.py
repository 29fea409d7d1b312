"""RealtimeSession, pure: messages in with explicit `now`, exact messages and events out."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from earshot.audio import g711
from earshot.config import RealtimeConfig, default_config
from earshot.errors import RealtimeServerError, RemoteProtocolError
from earshot.realtime import events as ev
from earshot.realtime.policy import HistoryItem, Verdict, classify
from earshot.realtime.session import (
    AudioDone,
    PlayAudio,
    ResponseDone,
    ResponseStarted,
    ServerError,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    ToolCall,
    Transcript,
    TurnCommitted,
    build_session_config,
)
from earshot.realtime.tools import ToolSpec
from tests.realtime import serverevents as s
from tests.realtime.serverevents import Driver, decode_appends, ramp
from tests.support.schema import check_client_event

BASE = default_config().realtime


def cfg(**changes: Any) -> RealtimeConfig:
    td = changes.pop("turn_detection", None)
    config = dataclasses.replace(BASE, **changes)
    if td is not None:
        config = dataclasses.replace(config, turn_detection=dataclasses.replace(BASE.turn_detection, **td))
    return config


def ready_driver(config: RealtimeConfig | None = None, **kwargs: Any) -> Driver:
    d = Driver(config or BASE, **kwargs)
    d.ready()
    d.sent()
    d.events()
    return d


# ------------------------------------------------------------------------------ session.update


def test_session_update_default_config_exact() -> None:
    """The default config produces this exact GA session.update, sent only after session.created."""
    d = Driver(BASE)
    d.session.connection_opened(d.now)
    assert d.sent() == []
    d.feed(s.session_created())
    (update,) = d.sent()
    assert update == {
        "type": "session.update",
        "event_id": update["event_id"],
        "session": {
            "type": "realtime",
            "model": "gpt-realtime-2.1",
            "instructions": BASE.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": {"type": "far_field"},
                    "transcription": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "idle_timeout_ms": None,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "none",
            "max_output_tokens": "inf",
        },
    }
    assert update["event_id"]


@pytest.mark.parametrize(
    ("changes", "path", "expected"),
    [
        ({"format": "g711_ulaw"}, ("audio", "input", "format"), {"type": "audio/pcmu"}),
        ({"format": "g711_alaw"}, ("audio", "output", "format"), {"type": "audio/pcma"}),
        ({"noise_reduction": "near_field"}, ("audio", "input", "noise_reduction"), {"type": "near_field"}),
        ({"noise_reduction": "off"}, ("audio", "input", "noise_reduction"), None),
        ({"turn_detection": {"type": "none"}}, ("audio", "input", "turn_detection"), None),
        (
            {"turn_detection": {"type": "semantic_vad", "eagerness": "low", "interrupt_response": False}},
            ("audio", "input", "turn_detection"),
            {"type": "semantic_vad", "eagerness": "low", "create_response": True, "interrupt_response": False},
        ),
        (
            {"turn_detection": {"threshold": 0.7, "silence_duration_ms": 800, "idle_timeout_ms": 6000}},
            ("audio", "input", "turn_detection"),
            {
                "type": "server_vad",
                "threshold": 0.7,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 800,
                "idle_timeout_ms": 6000,
                "create_response": True,
                "interrupt_response": True,
            },
        ),
        ({"max_output_tokens": 512}, ("max_output_tokens",), 512),
        ({"speed": 1.25, "voice": "cedar"}, ("audio", "output", "voice"), "cedar"),
        (
            {"transcription": dataclasses.replace(BASE.transcription, model="gpt-4o-mini-transcribe", language="en")},
            ("audio", "input", "transcription"),
            {"model": "gpt-4o-mini-transcribe", "language": "en"},
        ),
    ],
)
def test_session_update_variants_are_valid_ga(changes: dict[str, Any], path: tuple[str, ...], expected: Any) -> None:
    """Each config variant maps to its GA field and the whole event passes the SDK schema."""
    session = build_session_config(cfg(**changes))
    check_client_event({"type": "session.update", "session": session})
    node: Any = session
    for key in path:
        node = node[key]
    assert node == expected


def test_session_update_declares_tools() -> None:
    """Tools from ToolSpecs are declared as function tools with tool_choice auto."""
    params = {"type": "object", "properties": {"level": {"type": "integer"}}, "required": ["level"]}
    session = build_session_config(BASE, [ToolSpec("set_volume", "Set the volume", params)])
    check_client_event({"type": "session.update", "session": session})
    assert session["tools"] == [
        {"type": "function", "name": "set_volume", "description": "Set the volume", "parameters": params}
    ]
    assert session["tool_choice"] == "auto"


# ------------------------------------------------------------------------------- readiness, audio


def test_ready_only_after_session_updated_and_early_audio_is_kept() -> None:
    """Audio appended before session.updated is sent after it, complete and in order, in 40 ms messages."""
    d = Driver(BASE)
    d.session.connection_opened(d.now)
    audio = ramp(2500)
    d.session.append_audio(audio[:1000], d.now)
    d.feed(s.session_created())
    d.session.append_audio(audio[1000:], d.now)
    assert [m["type"] for m in d.sent()] == ["session.update"]
    assert d.events() == []
    assert not d.session.ready
    d.feed(s.session_updated())
    assert d.events() == [SessionReady("sess_1")]
    sent = d.sent()
    assert [len(base64.b64decode(m["audio"])) for m in sent] == [1920, 1920]  # 960 samples = 40 ms at 24 kHz
    d.session.flush_audio(d.now)
    tail = d.sent()
    np.testing.assert_array_equal(decode_appends(sent + tail), audio)
    assert all("event_id" not in m for m in sent + tail)


@pytest.mark.parametrize("append_ms", [20, 100])
def test_append_batches_follow_append_ms(append_ms: int) -> None:
    """Live audio in 10 ms pieces leaves in append_ms messages."""
    d = ready_driver(cfg(append_ms=append_ms))
    audio = ramp(240 * 30)
    for i in range(30):
        d.session.append_audio(audio[i * 240 : (i + 1) * 240], d.now)
    sent = d.sent()
    assert {len(base64.b64decode(m["audio"])) // 2 for m in sent} == {24 * append_ms}
    assert len(sent) == 300 // append_ms
    np.testing.assert_array_equal(decode_appends(sent), audio[: len(sent) * 24 * append_ms])


def test_g711_audio_both_ways() -> None:
    """With G.711 the session sends μ-law and decodes the server's μ-law deltas to int16 at 8 kHz."""
    d = ready_driver(cfg(format="g711_ulaw"))
    assert d.session.input_rate_hz == d.session.output_rate_hz == 8000
    audio = ramp(320)
    d.session.append_audio(audio, d.now)
    (msg,) = d.sent()
    assert base64.b64decode(msg["audio"]) == g711.ulaw_encode(audio)
    codes = g711.ulaw_encode(ramp(80, 500))
    d.feed(
        json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": "e",
                "response_id": "r",
                "item_id": "i",
                "output_index": 0,
                "content_index": 0,
                "delta": base64.b64encode(codes).decode(),
            }
        )
    )
    (play,) = d.events()
    assert isinstance(play, PlayAudio)
    np.testing.assert_array_equal(play.pcm, g711.ulaw_decode(codes))


def test_ready_timeout() -> None:
    """Without session.created/updated in time, tick() sets a retryable failure."""
    d = Driver(BASE)
    d.session.connection_opened(10.0)
    assert d.session.next_deadline() == 10.0 + BASE.ready_timeout_s
    d.session.tick(10.0 + BASE.ready_timeout_s - 0.01)
    assert not d.session.failure
    d.feed(s.session_created())
    d.session.tick(10.0 + BASE.ready_timeout_s)
    assert isinstance(d.session.failure, RemoteProtocolError)
    assert "session.updated" in str(d.session.failure)
    assert classify(d.session.failure) is Verdict.RETRY


def test_ready_clears_deadline() -> None:
    d = ready_driver()
    assert d.session.next_deadline() is None
    d.session.tick(1e9)
    assert d.session.failure is None


# --------------------------------------------------------------------------------- responses


def test_commit_turn_sends_commit_then_create_and_queues_while_busy() -> None:
    """Local end of turn: commit + response.create; a second turn while busy waits for response.done."""
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(4800), d.now)  # 200 ms
    d.session.commit_turn(d.now)
    sent = d.sent()
    assert [m["type"] for m in sent] == ["input_audio_buffer.append"] * 5 + [
        "input_audio_buffer.commit",
        "response.create",
    ]
    assert d.session.busy
    d.feed(s.response("created", "resp_1"))
    assert d.events() == [ResponseStarted("resp_1")]
    d.session.append_audio(ramp(4800), d.now)
    d.session.commit_turn(d.now)
    assert [m["type"] for m in d.sent()][-1] == "input_audio_buffer.commit"
    d.feed(s.response("done", "resp_1", "completed"))
    assert d.events() == [ResponseDone("resp_1", "completed", None)]
    assert [m["type"] for m in d.sent()] == ["response.create"]


def test_commit_turn_too_short_is_not_sent() -> None:
    """Under 100 ms of audio is reported as a short turn and nothing is sent."""
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(2300), d.now)
    d.sent()
    d.session.commit_turn(d.now)
    assert [m["type"] for m in d.sent()] == ["input_audio_buffer.append"]  # the flushed partial batch only
    (err,) = d.events()
    assert isinstance(err, ServerError)
    assert err.code == "input_audio_buffer_commit_empty"
    assert not err.fatal


def test_active_response_error_requeues_create() -> None:
    """conversation_already_has_active_response: the create is sent again after response.done."""
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(4800), d.now)
    d.session.commit_turn(d.now)
    create = d.sent()[-1]
    d.feed(s.error("conversation_already_has_active_response", "Conversation already has...", create["event_id"]))
    assert d.events() == []
    assert d.sent() == []
    d.feed(s.response("created", "resp_vad"), s.response("done", "resp_vad", "completed"))
    assert [m["type"] for m in d.sent()] == ["response.create"]


def test_server_vad_events_and_commit() -> None:
    d = ready_driver()
    d.feed(s.speech_started(300, "item_u1"), s.speech_stopped(1200, "item_u1"), s.committed("item_u1"))
    events = d.events()
    assert events[0] == SpeechStarted(300, "item_u1")
    assert events[-1] == TurnCommitted("item_u1")


# -------------------------------------------------------------------------------------- tools


def test_tool_call_result_then_create_after_response_done() -> None:
    """function_call_arguments.done → ToolCall; the output item goes at once, response.create after done."""
    d = ready_driver()
    d.feed(s.response("created", "resp_1"), s.function_call_done("resp_1", "call_1", "get_time", "{}"))
    assert d.events() == [ResponseStarted("resp_1"), ToolCall("call_1", "get_time", "{}")]
    d.session.tool_result("call_1", '{"time":"12:00"}', d.now)
    (item,) = d.sent()
    assert item == {
        "type": "conversation.item.create",
        "event_id": item["event_id"],
        "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"time":"12:00"}'},
    }
    d.feed(s.response("done", "resp_1", "completed"))
    (create,) = d.sent()
    assert create["type"] == "response.create"


def test_tool_result_after_done_creates_at_once_and_unknown_call_is_dropped() -> None:
    d = ready_driver()
    d.feed(
        s.response("created", "resp_1"),
        s.function_call_done("resp_1", "call_1", "f", "{}"),
        s.response("done", "resp_1", "completed"),
    )
    assert d.sent() == []
    d.session.tool_result("call_unknown", "x", d.now)
    assert d.sent() == []
    d.session.tool_result("call_1", "ok", d.now)
    assert [m["type"] for m in d.sent()] == ["conversation.item.create", "response.create"]


# -------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("response_cancel_not_active", "Cancellation failed: no active response found"),
        (None, "Audio content of 3700ms is already shorter than 3760ms"),
        (None, "Only model output audio messages can be truncated"),
        ("input_audio_buffer_commit_empty", "buffer too small. Expected at least 100ms of audio"),
    ],
)
def test_harmless_errors_are_ignored(code: str | None, message: str) -> None:
    d = ready_driver()
    d.feed(s.error(code, message, "earshot_cancel_9"))
    assert d.events() == []
    assert d.session.failure is None


@pytest.mark.parametrize(
    "code",
    [
        "invalid_api_key",
        "insufficient_quota",
        "account_deactivated",
        "billing_hard_limit_reached",
        "beta_api_shape_disabled",
    ],
)
def test_fatal_errors_are_classified(code: str) -> None:
    d = ready_driver()
    d.feed(s.error(code, "no"))
    assert d.events() == [ServerError(code, "no", None, True, None)]
    assert isinstance(d.session.failure, RealtimeServerError)
    assert classify(d.session.failure) is Verdict.FATAL_FOR_NOW


def test_session_expired() -> None:
    d = ready_driver()
    d.feed(s.error("session_expired", "Your session hit the maximum duration of 60 minutes."))
    assert d.events() == [SessionExpired()]
    assert isinstance(d.session.failure, RealtimeServerError)
    assert d.session.failure.code == "session_expired"
    assert classify(d.session.failure) is Verdict.RETRY


def test_other_errors_carry_the_causing_client_event() -> None:
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(4800), d.now)
    d.session.commit_turn(d.now)
    commit = next(m for m in d.sent() if m["type"] == "input_audio_buffer.commit")
    d.feed(s.error("weird", "something odd", commit["event_id"]))
    assert d.events() == [ServerError("weird", "something odd", commit["event_id"], False, "input_audio_buffer.commit")]
    assert d.session.failure is None


def test_rejected_session_update_fails_the_connection() -> None:
    d = Driver(BASE)
    d.session.connection_opened(d.now)
    d.feed(s.session_created())
    (update,) = d.sent()
    d.feed(s.error("invalid_value", "bad voice", update["event_id"]))
    assert isinstance(d.session.failure, RealtimeServerError)
    assert not d.session.ready


def test_malformed_and_unknown_messages_do_not_disturb() -> None:
    d = ready_driver()
    d.feed("{not json", "[1,2]", '{"type": 5}', '{"type":"response.output_audio.delta"}', b"\xff\xfe")
    d.feed('{"type":"some.future.event","x":1}')
    assert d.session.protocol_errors == 5
    assert d.events() == []
    assert d.session.failure is None


# -------------------------------------------------------------------------------------- barge-in


def speak(d: Driver, samples: int, response_id: str = "resp_1", item_id: str = "item_a", done: bool = False) -> None:
    d.feed(s.response("created", response_id), s.output_item_added(response_id, item_id))
    d.feed(s.audio_delta(response_id, item_id, ramp(samples)))
    if done:
        d.feed(s.audio_done(response_id, item_id))
    d.events()
    d.sent()


def test_local_bargein_truncates_at_heard_and_cancels() -> None:
    """Local barge-in: truncate at the ms heard, cancel the response, drop its late deltas."""
    d = ready_driver()
    speak(d, 24000)  # 1000 ms received
    d.session.interrupt(heard_samples={"item_a": 12000}, local=True, now=d.now)
    truncate, cancel = d.sent()
    assert truncate == {
        "type": "conversation.item.truncate",
        "event_id": truncate["event_id"],
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 500,
    }
    assert cancel == {"type": "response.cancel", "event_id": cancel["event_id"], "response_id": "resp_1"}
    d.feed(s.audio_delta("resp_1", "item_a", ramp(480)), s.audio_done("resp_1", "item_a"))
    d.feed(s.transcript_delta("resp_1", "item_a", "late"))
    assert d.events() == []
    assert d.session.dropped_deltas == 1
    d.feed(s.response("done", "resp_1", "cancelled", type="cancelled", reason="client_cancelled"))
    assert d.events() == [ResponseDone("resp_1", "cancelled", "client_cancelled")]
    assert not d.session.busy


def test_server_bargein_truncates_without_cancel() -> None:
    """Server VAD with interrupt_response: the server cancels, we only truncate."""
    d = ready_driver()
    speak(d, 24000)
    d.feed(s.speech_started(2000, "item_u2"))
    d.events()
    d.session.interrupt(heard_samples={"item_a": 7200}, local=False, now=d.now)
    assert [(m["type"], m.get("audio_end_ms")) for m in d.sent()] == [("conversation.item.truncate", 300)]
    d.feed(s.audio_delta("resp_1", "item_a", ramp(480)))
    assert d.events() == []


def test_bargein_cancels_when_server_does_not_interrupt() -> None:
    d = ready_driver(cfg(turn_detection={"interrupt_response": False}))
    speak(d, 24000)
    d.session.interrupt(heard_samples={"item_a": 2400}, local=False, now=d.now)
    assert [m["type"] for m in d.sent()] == ["conversation.item.truncate", "response.cancel"]


@pytest.mark.parametrize(
    ("heard", "received", "done", "expected_ms"),
    [
        (0, 24000, False, None),  # nothing heard: no truncate
        (24000, 24000, True, None),  # played out
        (30000, 24000, True, None),  # played out (heard counts past it)
        (30000, 24000, False, 1000),  # clamped to what was received
        (10, 24000, False, 1),  # under 1 ms heard: at least 1
        (23999, 24000, True, 999),  # not quite finished
    ],
)
def test_truncate_clamping(heard: int, received: int, done: bool, expected_ms: int | None) -> None:
    d = ready_driver()
    speak(d, received, done=done)
    d.session.interrupt(heard_samples={"item_a": heard}, local=False, now=d.now)
    truncates = [m["audio_end_ms"] for m in d.sent() if m["type"] == "conversation.item.truncate"]
    assert truncates == ([] if expected_ms is None else [expected_ms])


def test_bargein_with_local_turn_detection_clears_input() -> None:
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(4800), d.now)
    d.session.commit_turn(d.now)
    d.sent()
    speak(d, 4800)
    d.session.append_audio(ramp(500), d.now)  # partial batch of echo-time audio: discarded
    d.session.interrupt(heard_samples={"item_a": 2400}, local=True, now=d.now)
    assert [m["type"] for m in d.sent()] == [
        "conversation.item.truncate",
        "response.cancel",
        "input_audio_buffer.clear",
    ]
    d.session.flush_audio(d.now)
    assert d.sent() == []


def test_cancel_before_response_created_is_sent_when_it_arrives() -> None:
    d = ready_driver(cfg(turn_detection={"type": "none"}))
    d.session.append_audio(ramp(4800), d.now)
    d.session.commit_turn(d.now)
    d.sent()
    d.session.interrupt(heard_samples={}, local=True, now=d.now)
    assert [m["type"] for m in d.sent()] == ["input_audio_buffer.clear"]
    d.feed(s.response("created", "resp_9"))
    (cancel,) = d.sent()
    assert cancel["type"] == "response.cancel"
    assert cancel["response_id"] == "resp_9"
    d.feed(s.audio_delta("resp_9", "item_z", ramp(480)))
    assert [type(e) for e in d.events()] == [ResponseStarted]


def test_audio_done_event() -> None:
    d = ready_driver()
    d.feed(s.response("created", "r"), s.audio_delta("r", "i", ramp(10)), s.audio_done("r", "i"))
    assert [type(e) for e in d.events()] == [ResponseStarted, PlayAudio, AudioDone]


# -------------------------------------------------------------------------------------- history


def converse(d: Driver, user_item: str, user_text: str, response_id: str, item: str, reply: str) -> None:
    d.feed(s.speech_started(0, user_item), s.speech_stopped(900, user_item), s.committed(user_item))
    d.feed(s.response("created", response_id), s.output_item_added(response_id, item))
    d.feed(s.transcript_delta(response_id, item, reply[:3]), s.audio_delta(response_id, item, ramp(24000)))
    d.feed(s.user_transcript(user_item, user_text))
    d.feed(s.transcript_done(response_id, item, reply), s.audio_done(response_id, item))
    d.feed(s.response("done", response_id, "completed"))


def test_history_is_recorded_and_replayed_chained() -> None:
    """A settled exchange is kept as text and replayed into the next session, chained by previous_item_id."""
    d = ready_driver()
    converse(d, "item_u1", "What time is it?", "resp_1", "item_a1", "It is noon.")
    events = d.events()
    assert Transcript("user", "item_u1", "What time is it?", True) in events
    assert Transcript("assistant", "item_a1", "It is noon.", True) in events
    history = d.session.history
    assert history == [HistoryItem("user", "What time is it?"), HistoryItem("assistant", "It is noon.")]

    d2 = Driver(BASE, history=history)
    d2.ready()
    sent = d2.sent()
    assert [m["type"] for m in sent] == ["session.update", "conversation.item.create", "conversation.item.create"]
    first, second = sent[1], sent[2]
    assert first["previous_item_id"] == "root"
    assert first["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "What time is it?"}],
        "id": first["item"]["id"],
    }
    assert second["previous_item_id"] == first["item"]["id"]
    assert second["item"]["role"] == "assistant"
    assert second["item"]["content"] == [{"type": "output_text", "text": "It is noon."}]
    assert d2.session.history == history


def test_history_is_bounded() -> None:
    config = cfg(history=dataclasses.replace(BASE.history, max_items=3, max_chars=40))
    items = [HistoryItem("user" if i % 2 == 0 else "assistant", f"turn number {i}") for i in range(10)]
    d = Driver(config, history=items)
    d.ready()
    replayed = [m["item"]["content"][0]["text"] for m in d.sent() if m["type"] == "conversation.item.create"]
    assert replayed == ["turn number 7", "turn number 8", "turn number 9"]


def test_truncated_reply_keeps_what_was_heard() -> None:
    d = ready_driver()
    d.feed(s.speech_started(0, "u1"), s.committed("u1"), s.user_transcript("u1", "Tell me a story"))
    d.feed(s.response("created", "r1"), s.output_item_added("r1", "a1"))
    d.feed(s.audio_delta("r1", "a1", ramp(48000)))  # 2000 ms
    d.feed(s.transcript_done("r1", "a1", "Once upon a time there was a tiny speaker"))
    d.session.interrupt(heard_samples={"a1": 24000}, local=True, now=d.now)
    d.feed(s.response("done", "r1", "cancelled"))
    assert d.session.history == [
        HistoryItem("user", "Tell me a story"),
        HistoryItem("assistant", "Once upon a time…", truncated=True),
    ]


def test_transcripts_are_bounded_per_item_and_per_session() -> None:
    """A server streaming endless transcript deltas: each item keeps 16,384 characters, the session 256 Ki."""
    d = ready_driver()
    d.feed(s.response("created", "r1"), s.output_item_added("r1", "a1"))
    for _ in range(100):
        d.feed(s.transcript_delta("r1", "a1", "x" * 1000))
    assert d.session.transcript_chars == 16_384
    assert d.session.dropped_transcript_chars == 100_000 - 16_384
    for i in range(40):
        d.feed(s.user_transcript(f"u{i}", "y" * 20_000))
    assert d.session.transcript_chars <= 262_144
    d.feed(s.user_transcript("u_last", "short and whole"))
    d.feed(s.response("done", "r1", "completed"))
    history = d.session.history
    assert history[-1] == HistoryItem("user", "short and whole")
    assert all(len(item.text) <= 16_384 for item in history)


def test_unsettled_turn_audio_is_replayed_and_reply_cut_by_drop_is_not_history() -> None:
    """A drop after the user's turn but before the reply: its audio goes to the next session, before new audio."""
    d = ready_driver()
    converse(d, "u1", "Hello", "r1", "a1", "Hi there.")
    first_turn_end = 900 * 24  # speech_stopped at 900 ms
    silence = np.zeros(first_turn_end + 4800, dtype=np.int16)
    d.session.append_audio(silence, d.now)
    turn = ramp(24000, 7)
    d.session.append_audio(turn, d.now)
    d.feed(s.speech_started(1000, "u2"), s.speech_stopped(1900, "u2"), s.committed("u2"))
    d.feed(s.response("created", "r2"), s.output_item_added("r2", "a2"), s.transcript_delta("r2", "a2", "Half a"))
    d.session.connection_lost(d.now)
    assert d.session.messages_to_send() == []
    unsettled = d.session.unsettled_audio()
    # the server placed speech (with its prefix padding) at 1000 ms of this session's audio
    np.testing.assert_array_equal(unsettled, np.concatenate([silence, turn])[24000:])
    assert d.session.history == [HistoryItem("user", "Hello"), HistoryItem("assistant", "Hi there.")]

    d2 = Driver(BASE, history=d.session.history, replay_audio=unsettled)
    d2.session.connection_opened(d2.now)
    live = ramp(960, 3)
    d2.session.append_audio(live, d2.now)
    d2.feed(s.session_created(), s.session_updated())
    d2.session.flush_audio(d2.now)
    before = d2.sent()
    assert not any(m["type"] == "input_audio_buffer.append" for m in before), "sent before it was decided"
    assert d2.session.decide_replay(True) == unsettled.size
    d2.session.flush_audio(d2.now)
    sent = before + d2.sent()
    assert [m["type"] for m in sent[:3]] == ["session.update", "conversation.item.create", "conversation.item.create"]
    np.testing.assert_array_equal(decode_appends(sent), np.concatenate([unsettled, live]))


def test_a_turn_the_core_does_not_replay_is_forgotten_and_what_follows_flows() -> None:
    """The reply was already playing at the drop: the turn is not sent again; audio said since still goes."""
    turn = ramp(24000, 7)
    d = Driver(BASE, replay_audio=turn)
    d.session.connection_opened(d.now)
    live = ramp(960, 3)
    d.session.append_audio(live, d.now)
    d.feed(s.session_created(), s.session_updated())
    d.session.append_audio(live, d.now)
    d.session.flush_audio(d.now)
    assert decode_appends(d.sent()).size == 0  # held while undecided, even though ready
    assert d.session.decide_replay(False) == 0
    d.session.flush_audio(d.now)
    np.testing.assert_array_equal(decode_appends(d.sent()), np.concatenate([live, live]))
    assert d.session.decide_replay(True) == 0  # decided once


def test_pending_audio_is_bounded() -> None:
    config = cfg(reconnect=dataclasses.replace(BASE.reconnect, offline_buffer_s=1.0))
    d = Driver(config)
    for i in range(30):
        d.session.append_audio(ramp(2400, i), d.now)  # 3 s in 100 ms pieces
    assert d.session.dropped_audio_samples == 20 * 2400
    d.ready()
    d.session.flush_audio(d.now)
    assert decode_appends(d.sent()).size == 10 * 2400


def test_a_long_turn_survives_a_quick_reconnect_whole() -> None:
    """A 25 s turn (longer than the 15 s offline buffer) drops mid-way: the next session gets all of it,
    plus what was said while reconnecting, and nothing counts as lost to the offline bound."""
    d = ready_driver()
    turn = ramp(25 * 24000, 11)
    d.feed(s.speech_started(0, "u1"))
    for piece in np.array_split(turn, 250):
        d.session.append_audio(piece, d.now)
    d.session.connection_lost(d.now)
    unsettled = d.session.unsettled_audio()
    np.testing.assert_array_equal(unsettled, turn)

    d2 = Driver(BASE, replay_audio=unsettled)
    d2.session.connection_opened(d2.now)
    d2.session.decide_replay(True)
    live = ramp(2 * 24000, 5)  # 2 s said while reconnecting
    for piece in np.array_split(live, 20):
        d2.session.append_audio(piece, d2.now)
    assert d2.session.dropped_audio_samples == 0
    d2.feed(s.session_created(), s.session_updated())
    d2.session.flush_audio(d2.now)
    np.testing.assert_array_equal(decode_appends(d2.sent()), np.concatenate([turn, live]))


def test_a_replay_is_kept_to_its_last_minute() -> None:
    d = ready_driver()
    turn = ramp(70 * 24000, 2)
    d.feed(s.speech_started(0, "u1"))
    for piece in np.array_split(turn, 700):
        d.session.append_audio(piece, d.now)
    d.session.connection_lost(d.now)
    np.testing.assert_array_equal(d.session.unsettled_audio(), turn[-60 * 24000 :])


def test_pending_function_calls_are_bounded() -> None:
    """A server asking for thousands of calls at once: 16 are run, the rest dropped and counted."""
    d = ready_driver()
    d.feed(s.response("created", "r1"))
    for i in range(1000):
        d.feed(s.function_call_done("r1", f"call_{i}", "garage_door", "{}"))
    d.feed(s.function_call_done("r1", "call_0", "garage_door", "{}"))  # a repeat is not a new call
    calls = [e for e in d.events() if isinstance(e, ToolCall)]
    assert [c.call_id for c in calls] == [f"call_{i}" for i in range(16)]
    assert d.session.dropped_calls == 1000 - 16


def test_connection_lost_stops_everything() -> None:
    d = ready_driver()
    d.session.connection_lost(d.now)
    d.session.append_audio(ramp(4800), d.now)
    d.feed(s.response("created", "r"))
    d.session.tool_result("c", "x", d.now)
    d.session.interrupt(heard_samples={"a": 1}, local=True, now=d.now)
    assert d.sent() == []
    assert d.events() == []
    assert d.session.next_deadline() is None


def test_rate_limited_response_is_retried_after_a_delay() -> None:
    d = ready_driver()
    d.feed(s.response("created", "r1"))
    d.feed(s.response("done", "r1", "failed", type="failed", error={"type": "rate_limit", "code": ev.CODE_RATE_LIMIT}))
    assert d.events()[-1] == ResponseDone("r1", "failed", ev.CODE_RATE_LIMIT)
    deadline = d.session.next_deadline()
    assert deadline == d.now + 1.0
    d.session.tick(deadline - 0.1)
    assert d.sent() == []
    d.session.tick(deadline)
    assert [m["type"] for m in d.sent()] == ["response.create"]


# ------------------------------------------------------------------------- the stop phrase, profiles


def test_discarding_the_turn_clears_the_input_and_cancels_an_answer_to_it() -> None:
    """The stop phrase said over a reply: the turn it opened is forgotten, its partial batch never sent."""
    d = ready_driver()
    d.session.append_audio(ramp(2400 + 480), d.now)  # 100 ms + 20 ms: two 40 ms batches... and a partial
    sent = [m["type"] for m in d.sent()]
    appended = sent.count("input_audio_buffer.append")
    assert appended >= 1
    d.session.discard_turn()
    assert [m["type"] for m in d.sent()] == ["input_audio_buffer.clear"]
    d.session.flush_audio(d.now)
    assert d.sent() == []  # the partial batch went with the turn
    # The server had already committed part of it and started an answer: that answer is cancelled.
    speak(d, 2400, response_id="resp_2", item_id="item_b")
    d.session.discard_turn()
    clear, cancel = d.sent()
    assert clear["type"] == "input_audio_buffer.clear"
    assert cancel == {"type": "response.cancel", "event_id": cancel["event_id"], "response_id": "resp_2"}
    d.feed(s.audio_delta("resp_2", "item_b", ramp(480)))
    assert d.events() == []


def test_a_profile_replaces_instructions_and_voice_and_offers_only_its_tools() -> None:
    from earshot.config import ProfileConfig
    from earshot.realtime.sessionconfig import build_session_config, with_profile

    tools = [ToolSpec("get_datetime", "the time"), ToolSpec("set_volume", "volume")]
    mcp = [{"type": "mcp", "server_label": "home", "server_url": "https://mcp.example/", "require_approval": "never"}]
    same = with_profile(BASE, tools, mcp, None)
    assert same == (BASE, tuple(tools), tuple(mcp))
    kids = ProfileConfig(name="kids", instructions="Speak simply.", voice="alloy", tools=("get_datetime", "home"))
    config, offered, servers = with_profile(BASE, tools, mcp, kids)
    session = build_session_config(config, offered, mcp=servers)
    check_client_event({"type": "session.update", "session": session})
    assert session["instructions"] == "Speak simply."
    assert session["audio"]["output"]["voice"] == "alloy"
    assert [t.get("name", t.get("server_label")) for t in session["tools"]] == ["get_datetime", "home"]
    quiet = ProfileConfig(name="quiet", tools=())
    config, offered, servers = with_profile(BASE, tools, mcp, quiet)
    assert config.instructions == BASE.instructions
    assert (offered, servers) == ((), ())
