"""The emulator speaks the GA protocol: handshake, VAD turns, responses, truncate, cancel, tools, expiry."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from earshot.emulator import WAKE_WORD_REPLY, DefaultScript, Emulator, EmulatorOptions, FunctionCall
from earshot.emulator.schema import validate_client_event
from tests.emulator.conftest import MODEL, Client, open_client, ready, session_update, speech, spoken_turn
from tests.support.speech import silence


async def test_handshake_session_created_then_updated(emulator: Emulator) -> None:
    """session.created carries the full default session; session.update is merged into session.updated."""
    async with open_client(emulator) as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created"
        assert created["session"]["id"].startswith("sess_")
        assert created["session"]["object"] == "realtime.session"
        assert created["session"]["expires_at"] > 0
        assert created["session"]["model"] == MODEL
        assert (await client.recv())["type"] == "conversation.created"
        event_id = await client.send(session_update())
        updated = await client.until("session.updated")
        assert "event_id" in updated
        assert updated["event_id"] != event_id
        session = updated["session"]
        assert session["instructions"] == "Be brief."
        assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
        assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
        assert session["audio"]["output"]["voice"] == "marin"
        assert session["tools"] == []  # untouched fields keep their defaults
    assert emulator.sessions[0].headers.get("Authorization") is None
    assert not emulator.violations


async def test_spoken_turn_gets_a_spoken_reply(emulator: Emulator) -> None:
    """Speech in → speech_started/stopped/committed, a user item, and a full audio response in GA order."""
    turn = spoken_turn()
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws)
        await client.append(turn)
        started = await client.until("input_audio_buffer.speech_started")
        done = await client.until("response.done")
    types = client.types()
    stopped = next(e for e in client.events if e["type"] == "input_audio_buffer.speech_stopped")
    committed = next(e for e in client.events if e["type"] == "input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    # the reported start is the onset minus the 300 ms prefix padding; the end is the last loud sample
    loud = np.flatnonzero(np.abs(turn.astype(np.int32)) > 2000)
    onset_ms, end_ms = loud[0] * 1000 // 24000, loud[-1] * 1000 // 24000
    assert onset_ms - 300 - 40 <= started["audio_start_ms"] <= onset_ms - 300 + 40
    assert end_ms - 60 <= stopped["audio_end_ms"] <= end_ms + 120
    speech_ms = end_ms - onset_ms
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "rate_limits.updated",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    positions = [types.index(t, types.index(order[i - 1]) if i else 0) for i, t in enumerate(order)]
    assert positions == sorted(positions)
    user_item = client.events[types.index("conversation.item.added")]["item"]
    assert user_item["role"] == "user"
    assert user_item["content"][0]["type"] == "input_audio"
    assert "audio" not in user_item["content"][0]
    assert done["response"]["status"] == "completed"
    assert done["response"]["usage"]["output_tokens"] > 0
    audio = b"".join(base64.b64decode(e["delta"]) for e in client.events if e["type"] == "response.output_audio.delta")
    reply = np.frombuffer(audio, dtype="<i2")
    assert reply.size > 24000 // 2
    assert np.abs(reply).max() > 1000
    transcript = next(e for e in client.events if e["type"] == "response.output_audio_transcript.done")["transcript"]
    assert transcript == "This is reply number 1 from the emulator."
    deltas = "".join(e["delta"] for e in client.events if e["type"] == "response.output_audio_transcript.delta")
    assert deltas == transcript
    record = emulator.sessions[0]
    np.testing.assert_array_equal(record.received_audio(), turn)
    user_audio = record.user_audio[committed["item_id"]]
    assert user_audio.size >= speech_ms * 24  # the whole utterance, first words included
    assert record.responses[0].audio_samples_sent == reply.size
    assert not emulator.violations


async def test_g711_input_and_output() -> None:
    """pcmu input is decoded (recorded at 24 kHz) and pcmu output is 8 kHz, one byte per sample."""
    from earshot.emulator import g711
    from earshot.emulator.voice import resample

    async with Emulator(EmulatorOptions(strict=True, reply_rate=20.0)) as emu, open_client(emu) as ws:
        client = Client(ws)
        await client.recv()
        update = session_update()
        update["session"]["audio"]["input"]["format"] = {"type": "audio/pcmu"}
        update["session"]["audio"]["output"]["format"] = {"type": "audio/pcmu"}
        await client.send(update)
        await client.until("session.updated")
        turn8k = resample(spoken_turn(), 24000, 8000)
        encoded = g711.encode(turn8k, "ulaw")
        for i in range(0, len(encoded), 320):
            await client.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(encoded[i : i + 320]).decode()}
            )
        await client.until("response.done")
        audio = b"".join(
            base64.b64decode(e["delta"]) for e in client.events if e["type"] == "response.output_audio.delta"
        )
        assert emu.sessions[0].responses[0].rate_hz == 8000
        assert emu.sessions[0].responses[0].audio_samples_sent == len(audio)
        received = emu.received_audio()
        assert abs(received.size - turn8k.size * 3) <= 3
        assert not emu.violations


def test_g711_round_trip_is_close() -> None:
    """The private codec's μ-law and A-law round trips stay within G.711 quantisation error."""
    from earshot.emulator import g711

    pcm = (np.sin(np.arange(8000) / 10) * 20000).astype(np.int16)
    for law in ("ulaw", "alaw"):
        back = g711.decode(g711.encode(pcm, law), law).astype(np.int32)
        err = np.abs(back - pcm.astype(np.int32))
        assert err.max() <= np.abs(pcm.astype(np.int32)).max() // 16 + 16, law


async def test_unsupported_format_is_an_error(emulator: Emulator) -> None:
    """audio/pcm at 16 kHz is rejected (by the SDK schema and the server), and recorded as a violation."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws)
        update = session_update()
        update["session"]["audio"]["input"]["format"] = {"type": "audio/pcm", "rate": 16000}
        event_id = await client.send(update)
        error = await client.until("error")
    assert error["error"]["event_id"] == event_id
    assert any("24000" in v.problem for v in emulator.violations)


async def test_manual_commit_and_clear(emulator: Emulator) -> None:
    """Without turn detection: commit <100 ms is an error, a longer commit makes an item but no response."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws, turn_detection=None)
        await client.append(silence(0.05, 24000))
        event_id = await client.send({"type": "input_audio_buffer.commit"})
        error = await client.until("error")
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == event_id
        await client.append(speech("short"))
        await client.send({"type": "input_audio_buffer.commit"})
        committed = await client.until("input_audio_buffer.committed")
        await client.until("conversation.item.done")
        await client.append(silence(0.5, 24000))
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.send({"type": "response.create"})
        await client.until("response.done")
    assert "input_audio_buffer.speech_started" not in client.types()
    assert client.types().count("response.created") == 1
    assert committed["item_id"] in emulator.sessions[0].user_audio


async def test_text_modality(emulator: Emulator) -> None:
    """output_modalities ["text"] streams output_text events and no audio."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws, turn_detection=None)
        await client.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
        await client.until("response.done")
    types = client.types()
    assert "response.output_text.delta" in types
    assert "response.output_audio.delta" not in types
    text = next(e for e in client.events if e["type"] == "response.output_text.done")["text"]
    assert text == "This is reply number 1 from the emulator."


async def test_history_items_are_tracked(emulator: Emulator) -> None:
    """conversation.item.create of system/user/assistant text is echoed as added+done and recorded in order."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws, turn_detection=None)
        items = [
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be terse."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]},
        ]
        previous = "root"
        for item in items:
            await client.send({"type": "conversation.item.create", "item": item, "previous_item_id": previous})
            done = await client.until("conversation.item.done")
            previous = done["item"]["id"]
        await client.send({"type": "conversation.item.create", "item": items[1], "previous_item_id": "item_nope"})
        error = await client.until("error")
        assert error["error"]["code"] == "item_not_found"
        pcm = speech("a replayed turn")
        audio = base64.b64encode(pcm.astype("<i2").tobytes()).decode()
        audio_item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
        await client.send({"type": "conversation.item.create", "item": audio_item})
        added = await client.until("conversation.item.added")
        assert "audio" not in added["item"]["content"][0]
    record = emulator.sessions[0]
    roles = [item.get("role") for item in record.items.values()]
    assert roles == ["system", "user", "assistant", "user"]
    np.testing.assert_array_equal(record.user_audio[added["item"]["id"]], pcm)
    assert not emulator.violations


async def test_truncate_success_and_errors(emulator: Emulator) -> None:
    """truncate within the sent audio succeeds; too far, a user item, or an unknown item are the real errors."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws, turn_detection=None)
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
        item_id = done["response"]["output"][0]["id"]
        sent_ms = emulator.sessions[0].responses[0].audio_samples_sent * 1000 // 24000
        await client.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 500}
        )
        truncated = await client.until("conversation.item.truncated")
        assert truncated == {**truncated, "item_id": item_id, "content_index": 0, "audio_end_ms": 500}
        too_far = sent_ms + 60
        event_id = await client.send(
            {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": too_far}
        )
        error = await client.until("error")
        assert error["error"]["message"] == f"Audio content of {sent_ms}ms is already shorter than {too_far}ms"
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["event_id"] == event_id
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
            }
        )
        user_id = (await client.until("conversation.item.done"))["item"]["id"]
        await client.send(
            {"type": "conversation.item.truncate", "item_id": user_id, "content_index": 0, "audio_end_ms": 0}
        )
        error = await client.until("error")
        assert error["error"]["message"] == "Only model output audio messages can be truncated"
        await client.send(
            {"type": "conversation.item.truncate", "item_id": "item_unknown", "content_index": 0, "audio_end_ms": 0}
        )
        error = await client.until("error")
        assert "not found" in error["error"]["message"]
    truncations = emulator.sessions[0].truncations
    assert [(t.audio_end_ms, t.error is None) for t in truncations] == [
        (500, True),
        (too_far, False),
        (0, False),
        (0, False),
    ]
    assert truncations[0].audio_sent_ms == sent_ms


async def test_cancel_active_and_inactive() -> None:
    """response.cancel stops the deltas with status cancelled/client_cancelled; with none active it is an error."""
    async with Emulator(EmulatorOptions(strict=True, reply_rate=1.0)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws, turn_detection=None)
        await client.send({"type": "response.cancel"})
        assert (await client.until("error"))["error"]["code"] == "response_cancel_not_active"
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.cancel"})
        done = await client.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        assert done["response"]["output"][0]["status"] == "incomplete"
        record = emu.sessions[0].responses[0]
        deltas = [e for e in client.events if e["type"] == "response.output_audio.delta"]
        sent = sum(len(base64.b64decode(e["delta"])) for e in deltas) // 2
        assert sent == record.audio_samples_sent
        assert record.audio_samples_sent < 24000 * 2  # stopped well before the ~2.5 s sentence ended
        assert [c.response_id is None for c in emu.sessions[0].cancels] == [True, False]
        # after response.done the conversation is free again
        await client.send({"type": "response.create"})
        assert (await client.until("response.created"))["response"]["status"] == "in_progress"
        assert not emu.violations


async def test_busy_response_create_is_an_error() -> None:
    """response.create while a response is active → conversation_already_has_active_response."""
    async with Emulator(EmulatorOptions(strict=True, reply_rate=2.0)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws, turn_detection=None)
        await client.send({"type": "response.create"})
        created = await client.until("response.created")
        event_id = await client.send({"type": "response.create"})
        error = await client.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert created["response"]["id"] in error["error"]["message"]
        assert error["error"]["event_id"] == event_id


async def test_speech_interrupts_reply() -> None:
    """With interrupt_response, speech during a reply cancels it with reason turn_detected."""
    async with Emulator(EmulatorOptions(strict=True, reply_rate=1.0)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws)
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.append(np.concatenate([speech("stop"), silence(0.1, 24000)]).astype(np.int16))
        await client.until("input_audio_buffer.speech_started")
        done = await client.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"


async def test_function_call_round_trip() -> None:
    """A scripted call streams arguments; function_call_output + response.create gets a reply using it."""
    script = DefaultScript(calls={1: FunctionCall("get_time", {"zone": "UTC"})})
    async with Emulator(EmulatorOptions(strict=True, reply_rate=20.0, script=script)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws, turn_detection=None)
        await client.send({"type": "response.create"})
        args_done = await client.until("response.function_call_arguments.done")
        done = await client.until("response.done")
        assert args_done["name"] == "get_time"
        assert json.loads(args_done["arguments"]) == {"zone": "UTC"}
        deltas = "".join(e["delta"] for e in client.events if e["type"] == "response.function_call_arguments.delta")
        assert deltas == args_done["arguments"]
        assert done["response"]["output"][0]["type"] == "function_call"
        assert len(args_done["call_id"]) <= 32
        output = {"type": "function_call_output", "call_id": args_done["call_id"], "output": "twelve o'clock"}
        await client.send({"type": "conversation.item.create", "item": output})
        await client.until("conversation.item.done")
        await client.send({"type": "response.create"})
        transcript = (await client.until("response.output_audio_transcript.done"))["transcript"]
        assert transcript == "Done: the get_time tool said twelve o'clock."
        bad = {"type": "function_call_output", "call_id": "call_unknown", "output": "x"}
        await client.send({"type": "conversation.item.create", "item": bad})
        assert (await client.until("error"))["error"]["param"] == "item.call_id"


async def test_trigger_phrase_and_wake_word_reply() -> None:
    """A phrase in the user's text triggers a call; scripted replies can say the wake word."""
    script = DefaultScript(replies=[WAKE_WORD_REPLY], calls={"volume": FunctionCall("set_volume", {"level": 30})})
    async with Emulator(EmulatorOptions(strict=True, reply_rate=20.0, script=script)) as emu, open_client(emu) as ws:
        client = await ready(emu, ws, turn_detection=None)
        await client.send({"type": "response.create"})
        assert "Jarvis" in (await client.until("response.output_audio_transcript.done"))["transcript"]
        await client.until("response.done")
        text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "turn the volume down"}]}
        await client.send({"type": "conversation.item.create", "item": text})
        await client.send({"type": "response.create"})
        assert (await client.until("response.function_call_arguments.done"))["name"] == "set_volume"


async def test_session_expiry() -> None:
    """After session_expires_s the server sends session_expired and closes with 1001."""
    async with Emulator(EmulatorOptions(strict=True, session_expires_s=0.3)) as emu, open_client(emu) as ws:
        client = Client(ws)
        error = await client.until("error")
        assert error["error"]["code"] == "session_expired"
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert ws.close_code == 1001


async def test_beta_header_rejected(emulator: Emulator) -> None:
    """OpenAI-Beta: realtime=v1 → beta_api_shape_disabled, then close 4000."""
    async with open_client(emulator, **{"OpenAI-Beta": "realtime=v1"}) as ws:
        client = Client(ws)
        error = await client.recv()
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert ws.close_code == 4000


async def test_auth_and_model_checks() -> None:
    """No bearer / wrong key → 401, no model → 400, sk-bad keys → invalid_api_key error."""
    async with Emulator(EmulatorOptions(strict=True, api_key="sk-right")) as emu:
        for kwargs, status in (({"key": ""}, 401), ({"key": "sk-wrong"}, 401), ({"key": "sk-right", "query": ""}, 400)):
            with pytest.raises(InvalidStatus) as info:
                async with open_client(emu, **kwargs):
                    pass
            assert info.value.response.status_code == status
        with pytest.raises(InvalidStatus) as info:
            async with connect(emu.url + f"?model={MODEL}", max_size=None):
                pass
        assert info.value.response.status_code == 401
    async with Emulator(EmulatorOptions(strict=True)) as emu, open_client(emu, key="sk-bad-123") as ws:
        error = await Client(ws).recv()
        assert error["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert "sk-bad-123" not in json.dumps(emu.sessions[0].headers)


async def test_client_violations_recorded(emulator: Emulator) -> None:
    """A beta-shaped session.update validates but its unknown keys are recorded as violations."""
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws)
        bad = {
            "type": "session.update",
            "session": {"type": "realtime", "voice": "alloy", "input_audio_format": "pcm16"},
        }
        await client.send(bad)
        await client.until("session.updated")
        await client.send({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0})
        await client.until("error")
    problems = [v.problem for v in emulator.violations if v.direction == "client"]
    assert "unknown key $.session.voice" in problems
    assert "unknown key $.session.input_audio_format" in problems
    assert any("audio_end_ms" in p for p in problems)


def test_validator_accepts_good_client_events() -> None:
    """The validator itself: a good GA event passes, a beta event name fails."""
    assert validate_client_event(session_update()) == []
    assert validate_client_event({"type": "input_audio_buffer.append", "audio": "AAAA"}) == []
    assert validate_client_event({"type": "response.audio.delta", "delta": "AAAA"}) != []
    assert validate_client_event("{not json") != []


async def test_parallel_waits_are_bounded() -> None:
    """Emulator.wait_for wakes on recorded events and times out otherwise."""
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        with pytest.raises(TimeoutError):
            await emu.wait_for(lambda: len(emu.sessions) > 0, within_s=0.05)
        async with open_client(emu) as ws:
            await emu.wait_for(lambda: bool(emu.sessions) and bool(emu.sessions[0].server_events))
            await ws.close()
        await emu.wait_for(lambda: emu.sessions[0].close_code is not None)
    assert asyncio.get_running_loop() is not None


async def test_a_reply_whose_voice_cannot_be_spoken_gets_a_tone(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The speech engine fails (it cannot start): the response is still streamed, as a tone, and ends."""
    from earshot.emulator import tts, voice

    async def broken(text: str, engine: str = "auto") -> np.ndarray:
        raise OSError("flite: cannot execute")

    monkeypatch.setattr(tts, "speak", broken)
    async with open_client(emulator) as ws:
        client = await ready(emulator, ws)
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
    assert done["response"]["status"] == "completed"
    record = emulator.sessions[0].responses[0]
    assert record.audio_samples_sent == voice.tone(record.text).size
