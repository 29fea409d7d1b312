"""Hypothesis: whatever the server sends, no exception escapes RealtimeSession."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earshot.config import default_config
from earshot.realtime import events as ev
from earshot.realtime.session import RealtimeSession

BASE = default_config().realtime
KNOWN_TYPES = [v for k, v in vars(ev).items() if k.isupper() and isinstance(v, str) and "." in v] + ["error"]

odd_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["resp_1", "item_1", "call_1", "", "session_expired", "invalid_api_key"]),
)
json_values = st.recursive(
    odd_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
b64_audio = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=12)
field_values = {
    "response_id": st.sampled_from(["resp_1", "resp_2"]) | odd_scalars,
    "item_id": st.sampled_from(["item_1", "item_2"]) | odd_scalars,
    "call_id": st.sampled_from(["call_1"]) | odd_scalars,
    "delta": b64_audio | odd_scalars,
    "audio_start_ms": st.integers(-(10**12), 10**12) | odd_scalars,
    "audio_end_ms": st.integers(-(10**12), 10**12) | odd_scalars,
    "content_index": st.integers(-5, 5) | odd_scalars,
    "output_index": st.integers(-5, 5) | odd_scalars,
    "transcript": st.text(max_size=30) | odd_scalars,
    "text": st.text(max_size=30) | odd_scalars,
    "name": st.text(max_size=10) | odd_scalars,
    "arguments": st.text(max_size=20) | odd_scalars,
}


@st.composite
def server_event(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=50))
    if kind == 1:
        return draw(st.text(max_size=50))
    if kind == 2:
        return json.dumps(draw(json_values), allow_nan=True)
    event: dict[str, Any] = {"type": draw(st.sampled_from(KNOWN_TYPES))}
    for key in draw(st.lists(st.sampled_from(sorted(field_values)), max_size=8, unique=True)):
        event[key] = draw(field_values[key])
    nested = draw(st.sampled_from(["session", "response", "item", "error", None]))
    if nested is not None:
        event[nested] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": st.sampled_from(["resp_1", "item_1", "sess"]) | odd_scalars,
                    "status": st.sampled_from(["completed", "cancelled", "failed", "in_progress"]) | odd_scalars,
                    "type": st.sampled_from(["message", "function_call", "realtime"]) | odd_scalars,
                    "role": st.sampled_from(["assistant", "user"]) | odd_scalars,
                    "code": st.sampled_from([*sorted(ev.FATAL_CODES), "session_expired", None]),
                    "message": st.text(max_size=30) | odd_scalars,
                    "event_id": st.text(max_size=10) | odd_scalars,
                    "status_details": json_values,
                    "expires_at": odd_scalars,
                },
            )
            | json_values
        )
    return json.dumps(event, allow_nan=True)


actions = st.sampled_from(["append", "commit", "interrupt_local", "interrupt_server", "tool", "tick", "flush"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(["pcm16", "g711_ulaw", "g711_alaw"]),
    td=st.sampled_from(["server_vad", "semantic_vad", "none"]),
    steps=st.lists(st.one_of(server_event(), actions), max_size=40),
)
def test_no_exception_escapes(fmt: Any, td: Any, steps: list[str | bytes]) -> None:
    config = dataclasses.replace(BASE, format=fmt, turn_detection=dataclasses.replace(BASE.turn_detection, type=td))
    session = RealtimeSession(config)
    now = 0.0
    session.connection_opened(now)
    session.receive_message(json.dumps({"type": "session.created", "session": {"id": "s"}}), now)
    session.receive_message(json.dumps({"type": "session.updated", "session": {}}), now)
    for step in steps:
        now += 0.01
        if step == "append":
            session.append_audio(np.arange(-300, 300, dtype=np.int16), now)
        elif step == "commit":
            session.commit_turn(now)
        elif step in ("interrupt_local", "interrupt_server"):
            session.interrupt(heard_samples={"item_1": 500, "item_2": 10**9}, local=step == "interrupt_local", now=now)
        elif step == "tool":
            session.tool_result("call_1", "{}", now)
        elif step == "tick":
            session.tick(now + 100)
        elif step == "flush":
            session.flush_audio(now)
        else:
            session.receive_message(step, now)
        for message in session.messages_to_send():
            assert json.loads(message)["type"]
        session.events_received()
    _ = session.history
    _ = session.unsettled_audio()
