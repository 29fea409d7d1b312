"""The emulator's protocol core without an event loop: messages and the time in, messages with due times out."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from earshot.emulator.options import EmulatorOptions, Reply, SessionRecord, Turn
from earshot.emulator.protocol import ServerSession


def _core(**options: Any) -> tuple[ServerSession, SessionRecord]:
    record = SessionRecord(index=0, path="/v1/realtime?model=m", model="m", headers={})
    core = ServerSession(
        EmulatorOptions(**options),
        record,
        now_wall=1_700_000_000.0,
        add_violation=lambda *_: None,
        take_budget=lambda *_: True,
    )
    return core, record


def _types(core: ServerSession) -> list[str]:
    return [json.loads(o.text)["type"] for o in core.outputs() if o.text is not None]


def _send(core: ServerSession, event: dict[str, Any], now: float) -> list[str]:
    core.receive(json.dumps(event), now)
    return _types(core)


def test_greeting_update_and_the_session_cap_as_a_deadline() -> None:
    core, _ = _core(session_expires_s=30.0)
    core.open(100.0, beta=False, key="sk-test")
    assert _types(core) == ["session.created", "conversation.created"]
    assert core.next_deadline() == 130.0
    assert _send(core, {"type": "session.update", "session": {"type": "realtime"}}, 101.0) == ["session.updated"]
    core.tick(129.9)
    assert core.outputs() == []
    core.tick(130.0)
    out = core.outputs()
    assert [o.kind for o in out] == ["error", "close"]
    assert out[1].close == (1001, "Your session hit the maximum duration of 1 minutes.")
    assert core.next_deadline() is None


def test_a_reply_is_paced_by_deadlines_and_asks_the_shell_for_its_voice() -> None:
    core, record = _core(reply_rate=1.0, chunk_ms=100, script=lambda turn: Reply("one two three four"))
    core.open(0.0, beta=False, key="sk-test")
    core.outputs()
    text = {"type": "input_text", "text": "hello"}
    _send(
        core, {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [text]}}, 1.0
    )
    assert _send(core, {"type": "response.create"}, 2.0)[:2] == ["response.created", "rate_limits.updated"]
    (request,) = core.voice_requests()
    assert request.text == "one two three four"
    assert core.next_deadline() == 3600.0  # waiting for the voice: only the session cap is due
    core.voice_ready(request.response_id, np.full(24000 // 2, 1000, np.int16), 5.0)  # 0.5 s: 5 chunks
    first = _types(core)
    assert first.count("response.output_audio.delta") == 1  # the first chunk at once, the rest at real time
    assert core.next_deadline() == 5.1
    core.tick(5.35)  # late: every chunk due by then goes out now
    assert _types(core).count("response.output_audio.delta") == 3
    core.tick(5.4)
    assert _types(core)[-1] == "response.done"
    assert record.responses[0].status == "completed"
    assert record.responses[0].audio_samples_sent == 24000 // 2


def test_a_cancel_stops_the_reply_at_its_next_chunk_after_the_message() -> None:
    core, record = _core(reply_rate=1.0, script=lambda turn: Reply("a long reply"))
    core.open(0.0, beta=False, key="sk-test")
    core.outputs()
    _send(core, {"type": "response.create"}, 1.0)
    (request,) = core.voice_requests()
    core.voice_ready(request.response_id, np.full(24000, 1000, np.int16), 1.0)
    core.outputs()
    types = _send(core, {"type": "response.cancel"}, 1.25)
    # the chunks due before the cancel arrived (0.1 and 0.2 s) go out first, then nothing more of the reply
    assert types.count("response.output_audio.delta") == 2
    assert types.index("response.output_audio.done") > max(i for i, t in enumerate(types) if t.endswith("audio.delta"))
    assert types[-1] == "response.done"
    assert record.responses[0].status == "cancelled"
    assert record.responses[0].audio_samples_sent == 2400 * 3  # chunks at 0, 0.1 and 0.2 s
    assert core.next_deadline() == 3600.0


def test_the_servers_vad_starts_and_ends_a_turn_from_appended_audio() -> None:
    turns: list[Turn] = []

    def script(turn: Turn) -> Reply:
        turns.append(turn)
        return Reply("ok")

    core, record = _core(script=script)
    core.open(0.0, beta=False, key="sk-test")
    core.outputs()
    speech = (np.sin(np.arange(24000) / 3.0) * 8000).astype(np.int16)
    silence = np.zeros(24000, np.int16)
    seen: list[str] = []
    for i, block in enumerate(np.split(np.concatenate([silence, speech, silence]), 30)):
        audio = base64.b64encode(block.astype("<i2").tobytes()).decode()
        seen += _send(core, {"type": "input_audio_buffer.append", "audio": audio}, 0.1 * i)
    assert seen[:2] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    assert "input_audio_buffer.committed" in seen
    assert "response.created" in seen
    assert core.voice_requests()[0].text == "ok"
    assert len(turns) == 1
    # the buffer since the session began: 1 s of silence, 1 s of speech, the 200 ms of silence that ended it
    assert 2000 <= turns[0].user_audio_ms <= 2400
    assert len(record.user_audio) == 1
