"""The emulator's replies: one response streamed as server events, paced, as a generator the core advances.

:func:`stream_response` yields the time it waits for (its next chunk at ``reply_rate``) or a
:class:`Speak` for the reply's voice, and emits its events through the session when advanced. A
cancel is seen at the next chunk. Pure: the core gives the time, the shell the voice.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

import earshot.emulator.voice as voice
from earshot.emulator.options import FunctionCall, Reply, ResponseRecord, Turn
from earshot.emulator.wire import new_id

if TYPE_CHECKING:
    from earshot.emulator.protocol import ServerSession

__all__ = ["Response", "Speak", "Step", "response_object", "stream_response"]

logger = logging.getLogger("earshot.emulator.server")


@dataclass(frozen=True, slots=True)
class Speak:
    """What a response's stream yields to have ``text`` spoken (it is sent the 24 kHz audio back)."""

    text: str


Step = float | Speak
"""What a response's stream yields: the time it waits for (monotonic seconds), or a voice to speak."""


class Response:
    """A response being streamed: a generator advanced when its time comes; a cancel stops it at the next chunk."""

    def __init__(self, record: ResponseRecord) -> None:
        self.record = record
        self.cancel_reason: str | None = None
        self.stream: Generator[Step, NDArray[np.int16] | None, None] | None = None
        self.due: float | None = None  # when to advance it; None while it waits for its voice
        self.voice: NDArray[np.int16] | None = None  # the spoken reply, sent into the stream

    @property
    def id(self) -> str:
        """The response's id."""
        return self.record.id


def response_object(
    session: ServerSession, response: Response, params: dict[str, Any], output: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``response`` object of ``response.created``/``response.done`` with ``output`` so far."""
    modalities = params.get("output_modalities") or session.session["output_modalities"]
    out_audio = (params.get("audio") or {}).get("output") or {}
    return {
        "id": response.id,
        "object": "realtime.response",
        "conversation_id": None if params.get("conversation") == "none" else "conv_default",
        "status": response.record.status,
        "status_details": None,
        "output": output,
        "output_modalities": modalities,
        "max_output_tokens": params.get("max_output_tokens", session.session.get("max_output_tokens", "inf")),
        "metadata": params.get("metadata"),
        "audio": {
            "output": {
                "format": out_audio.get("format", session.out_fmt),
                "voice": out_audio.get("voice", session.session["audio"]["output"]["voice"]),
            }
        },
        "usage": None,
    }


def _quoted(instructions: Any) -> str | None:
    if not isinstance(instructions, str) or "«" not in instructions or not instructions.endswith("»"):
        return None
    return instructions[instructions.index("«") + 1 : -1]


def stream_response(
    session: ServerSession, response: Response, turn: Turn, params: dict[str, Any], out_of_band: bool
) -> Generator[Step, NDArray[np.int16] | None, None]:
    """The whole response to ``turn``: created, each output item streamed, done (cancelled or completed).

    An out-of-band response whose instructions quote a text in « » (an announcement) says that text.
    """
    quoted = _quoted(params.get("instructions")) if out_of_band else None
    reply = Reply(text=quoted) if quoted is not None else session.opts.script(turn)
    response.record.function_call = reply.function_call
    modalities = params.get("output_modalities") or session.session["output_modalities"]
    text_only = modalities == ["text"]
    out_fmt = ((params.get("audio") or {}).get("output") or {}).get("format") or session.out_fmt
    session.emit({"type": "response.created", "response": response_object(session, response, params, [])})
    session.emit(
        {
            "type": "rate_limits.updated",
            "rate_limits": [
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},
            ],
        }
    )
    output: list[dict[str, Any]] = []
    rid = response.id
    if not out_of_band:
        said = _mcp(session, response, reply, output)
        if said is not None:
            reply = Reply(text=said)
    if reply.text:
        output.append(
            (yield from _stream_message(session, response, reply.text, text_only, out_fmt, len(output), out_of_band))
        )
    call = reply.function_call
    if call is not None and call.server_label is None and response.cancel_reason is None:
        output.append(_stream_call(session, response, call, len(output), out_of_band))
    if response.cancel_reason is not None:
        status, reason = "cancelled", response.cancel_reason
    else:
        status, reason = "completed", None
    response.record.status, response.record.reason = status, reason
    done = response_object(session, response, params, output)
    done["status_details"] = {"type": status, "reason": reason} if reason else None
    words = len(reply.text.split())
    audio_ms = 0 if text_only else response.record.audio_samples_sent * 1000 // max(response.record.rate_hz, 1)
    out_tokens = words + audio_ms // 50
    done["usage"] = {
        "total_tokens": 120 + out_tokens,
        "input_tokens": 120,
        "output_tokens": out_tokens,
        "input_token_details": {"text_tokens": 100, "audio_tokens": 20, "cached_tokens": 0, "image_tokens": 0},
        "output_token_details": {"text_tokens": words, "audio_tokens": audio_ms // 50},
    }
    if session.response is response:
        session.response = None
    session.emit({"type": "response.done", "response": done})
    logger.info("session %d: response %s %s", session.record.index, rid, status)


def _stream_message(
    session: ServerSession,
    response: Response,
    text: str,
    text_only: bool,
    out_fmt: dict[str, Any],
    index: int,
    out_of_band: bool,
) -> Generator[Step, NDArray[np.int16] | None, dict[str, Any]]:
    rid = response.id
    item_id = new_id("item")
    response.record.item_id = item_id
    response.record.text = text
    item: dict[str, Any] = {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    base = {"response_id": rid, "item_id": item_id, "output_index": index}
    session.emit({"type": "response.output_item.added", "response_id": rid, "output_index": index, "item": item})
    previous = next(reversed(session.record.items), None)
    if not out_of_band:
        session.record.items[item_id] = item
        session.emit({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
    part: dict[str, Any] = {"type": "text", "text": ""} if text_only else {"type": "audio", "transcript": ""}
    session.emit({"type": "response.content_part.added", **base, "content_index": 0, "part": part})
    words = text.split(" ")
    said: list[str] = []
    started = session.now
    if text_only:
        for i, word in enumerate(words):
            yield session.pace(started, 0.25 * i)
            if response.cancel_reason is not None:
                break
            delta = word if i == 0 else " " + word
            said.append(delta)
            session.emit({"type": "response.output_text.delta", **base, "content_index": 0, "delta": delta})
    else:
        spoken = yield Speak(text)
        pcm = spoken if spoken is not None else voice.tone(text)
        rate = voice.format_rate_hz(out_fmt)
        response.record.rate_hz = rate
        session.audio_sent[item_id] = (0, rate)
        chunk = max(1, voice.RATE_HZ * session.opts.chunk_ms // 1000)
        n_chunks = max(1, math.ceil(pcm.size / chunk))
        started = session.now
        for i in range(n_chunks):
            yield session.pace(started, i * chunk / voice.RATE_HZ)
            if response.cancel_reason is not None:
                break
            first, last = len(words) * i // n_chunks, len(words) * (i + 1) // n_chunks
            if last > first:
                delta = " ".join(words[first:last])
                delta = delta if not said else " " + delta
                said.append(delta)
                session.emit(
                    {"type": "response.output_audio_transcript.delta", **base, "content_index": 0, "delta": delta}
                )
            wire = voice.to_wire(pcm[i * chunk : (i + 1) * chunk], out_fmt)
            samples = len(wire) // 2 if rate == voice.RATE_HZ else len(wire)
            session.voice_locked = True
            session.emit(
                {
                    "type": "response.output_audio.delta",
                    **base,
                    "content_index": 0,
                    "delta": base64.b64encode(wire).decode(),
                }
            )
            sent = session.audio_sent[item_id][0] + samples
            session.audio_sent[item_id] = (sent, rate)
            response.record.audio_samples_sent = sent
    transcript = "".join(said)
    cancelled = response.cancel_reason is not None
    if text_only:
        session.emit({"type": "response.output_text.done", **base, "content_index": 0, "text": transcript})
        final_part = {"type": "output_text", "text": transcript}
        session.emit(
            {
                "type": "response.content_part.done",
                **base,
                "content_index": 0,
                "part": {"type": "text", "text": transcript},
            }
        )
    else:
        session.emit({"type": "response.output_audio.done", **base, "content_index": 0})
        session.emit(
            {"type": "response.output_audio_transcript.done", **base, "content_index": 0, "transcript": transcript}
        )
        final_part = {"type": "output_audio", "transcript": transcript}
        session.emit(
            {
                "type": "response.content_part.done",
                **base,
                "content_index": 0,
                "part": {"type": "audio", "transcript": transcript},
            }
        )
    item = {**item, "status": "incomplete" if cancelled else "completed", "content": [final_part]}
    session.emit({"type": "response.output_item.done", "response_id": rid, "output_index": index, "item": item})
    if not out_of_band:
        if item_id in session.record.items:
            session.record.items[item_id] = item
        session.emit({"type": "conversation.item.done", "item": item, "previous_item_id": previous})
    return item


def _mcp(session: ServerSession, response: Response, reply: Reply, output: list[dict[str, Any]]) -> str | None:
    """A remote MCP tool's turn: an approval request, or the call and what to say of it; None if none."""
    if session.mcp_decided:
        call, approved = session.mcp_decided.pop(0)
        if not approved:
            return f"The {call.name} call was refused."
    elif reply.function_call is not None and reply.function_call.server_label is not None:
        call = reply.function_call
        server = next(
            (
                t
                for t in session.session.get("tools") or []
                if t.get("type") == "mcp" and t.get("server_label") == call.server_label
            ),
            None,
        )
        if server is None:
            return f"There is no MCP server called {call.server_label}."
        if server.get("require_approval") == "always":
            request = _mcp_item(session, response, output, "mcp_approval_request", call)
            session.mcp_requests[request["id"]] = call
            return ""
    else:
        return None
    item = _mcp_item(session, response, output, "mcp_call", call)
    return f"The {call.name} tool said {item['output']}."


def _mcp_item(
    session: ServerSession, response: Response, output: list[dict[str, Any]], kind: str, call: FunctionCall
) -> dict[str, Any]:
    """One MCP output item streamed as the service does (a call runs: the server answers at once)."""
    rid, index = response.id, len(output)
    arguments = json.dumps(dict(call.arguments))
    item: dict[str, Any] = {
        "id": new_id("item"),
        "type": kind,
        "server_label": call.server_label,
        "name": call.name,
        "arguments": "" if kind == "mcp_call" else arguments,
    }
    session.emit({"type": "response.output_item.added", "response_id": rid, "output_index": index, "item": item})
    if kind == "mcp_call":
        ids = {"response_id": rid, "item_id": item["id"], "output_index": index}
        session.emit({"type": "response.mcp_call_arguments.delta", **ids, "delta": arguments})
        session.emit({"type": "response.mcp_call_arguments.done", **ids, "arguments": arguments})
        session.emit({"type": "response.mcp_call.in_progress", "item_id": item["id"], "output_index": index})
        session.emit({"type": "response.mcp_call.completed", "item_id": item["id"], "output_index": index})
        item = {**item, "arguments": arguments, "output": f"{call.name} done"}
    session.emit({"type": "response.output_item.done", "response_id": rid, "output_index": index, "item": item})
    output.append(item)
    return item


def _stream_call(
    session: ServerSession, response: Response, call: FunctionCall, index: int, out_of_band: bool
) -> dict[str, Any]:
    rid = response.id
    item_id, call_id = new_id("item"), new_id("call")[:32]
    arguments = json.dumps(dict(call.arguments))
    item: dict[str, Any] = {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": call_id,
        "name": call.name,
        "arguments": "",
    }
    session.emit({"type": "response.output_item.added", "response_id": rid, "output_index": index, "item": item})
    previous = next(reversed(session.record.items), None)
    if not out_of_band:
        session.record.items[item_id] = item
        session.emit({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
    half = len(arguments) // 2
    for delta in (arguments[:half], arguments[half:]):
        session.emit(
            {
                "type": "response.function_call_arguments.delta",
                "response_id": rid,
                "item_id": item_id,
                "output_index": index,
                "call_id": call_id,
                "delta": delta,
            }
        )
    session.emit(
        {
            "type": "response.function_call_arguments.done",
            "response_id": rid,
            "item_id": item_id,
            "output_index": index,
            "call_id": call_id,
            "name": call.name,
            "arguments": arguments,
        }
    )
    item = {**item, "status": "completed", "arguments": arguments}
    session.calls[call_id] = call.name
    session.emit({"type": "response.output_item.done", "response_id": rid, "output_index": index, "item": item})
    if not out_of_band:
        session.record.items[item_id] = item
        session.emit({"type": "conversation.item.done", "item": item, "previous_item_id": previous})
    return item
