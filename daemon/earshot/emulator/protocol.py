"""The emulator's protocol core, sans I/O: the server side of PROTOCOL.md for one connection.

:class:`ServerSession` takes client messages and the time, and returns the server's messages with
the time each is due; replies are streamed by deadlines (the shell calls :meth:`ServerSession.tick`)
and their voice is asked of the shell (:class:`VoiceRequest`). The shell,
:mod:`earshot.emulator.server`, owns the WebSocket, the timer and the speech engine, as
:mod:`earshot.realtime.connection` does for the daemon's :class:`~earshot.realtime.session.RealtimeSession`.

This is an independent implementation of the server side (it shares no code with the daemon's
``realtime`` package), so that a mistake in the daemon shows up against it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import earshot.emulator.schema as schema
from earshot.emulator.inputbuffer import InputBuffer
from earshot.emulator.inputs import ClientInputs
from earshot.emulator.options import (
    FATAL_CODES,
    Cancel,
    EmulatorOptions,
    FunctionCall,
    ResponseRecord,
    SessionRecord,
    Turn,
)
from earshot.emulator.replies import Response, Speak, stream_response
from earshot.emulator.wire import (
    CLIENT_TYPES,
    HUGE_MESSAGE_BYTES,
    Out,
    ServerError,
    check_format,
    default_session,
    merge_session,
    new_id,
    redact,
    strip_audio,
)

__all__ = ["ServerSession", "VoiceRequest"]

logger = logging.getLogger("earshot.emulator.server")


@dataclass(frozen=True, slots=True)
class VoiceRequest:
    """The shell is to speak ``text`` with ``engine`` and hand the audio to :meth:`ServerSession.voice_ready`."""

    response_id: str
    text: str
    engine: str


class ServerSession(ClientInputs):
    """The server side of one connection, sans I/O: client messages in, server messages out.

    Inputs take the time (monotonic seconds) as an argument: :meth:`open`, :meth:`receive`,
    :meth:`sent` (after the shell sent a message: the per-event faults), :meth:`voice_ready`,
    :meth:`tick` (at :meth:`next_deadline`), and the fault injections. Outputs: :meth:`outputs`
    (messages with the time each is due) and :meth:`voice_requests`. Responses are paced by
    deadlines, not sleeps; the shell owns the socket, the timer and the speech engine.

    Args:
        options: the emulator's options (faults may change while it runs).
        record: where this connection's history is kept.
        now_wall: wall-clock seconds now (for the session's ``expires_at``).
        add_violation: records a schema problem ``(direction, problem, event)``.
        take_budget: whether a fault may hit this connection within its budget (shared by all connections).
    """

    def __init__(
        self,
        options: EmulatorOptions,
        record: SessionRecord,
        *,
        now_wall: float,
        add_violation: Callable[[str, str, Any], None],
        take_budget: Callable[[str, int | None], bool],
    ) -> None:
        self.record = record
        self.opts = options
        self._add_violation = add_violation
        self._take_budget = take_budget
        self.session = default_session(record.model, int(now_wall + options.session_expires_s))
        if record.pinned is not None:  # an ephemeral secret's session applies from the start
            keep = {k: v for k, v in record.pinned.items() if k not in ("id", "object", "expires_at")}
            self.session = merge_session(self.session, keep)
        self.now = 0.0
        self._out: list[Out] = []
        self._voice: list[VoiceRequest] = []
        self._streams: list[Response] = []
        self._expires_at: float | None = None
        self.events_sent = 0
        self.injected: set[str] = set()
        self.input = InputBuffer()
        self.response: Response | None = None
        self.responses_started = 0
        self.audio_sent: dict[str, tuple[int, int]] = {}  # assistant item id → (samples sent, rate)
        self.calls: dict[str, str] = {}  # call_id → function name
        self.pending_texts: list[str] = []
        self.pending_audio_ms = 0
        self.pending_outputs: list[tuple[str, str]] = []
        self.mcp_requests: dict[str, FunctionCall] = {}  # approval request item id → the MCP call it asks for
        self.mcp_decided: list[tuple[FunctionCall, bool]] = []  # answered requests, for the next response
        self.voice_locked = False

    # --- the shell's side ------------------------------------------------------------------------------------

    def outputs(self) -> list[Out]:
        """Messages to send, in order (handed over and cleared)."""
        out, self._out = self._out, []
        return out

    def voice_requests(self) -> list[VoiceRequest]:
        """Replies to speak (handed over and cleared)."""
        out, self._voice = self._voice, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` is due next (a response's next chunk, the session's expiry), or None."""
        due = [r.due for r in self._streams if r.due is not None]
        if self._expires_at is not None:
            due.append(self._expires_at)
        return min(due) if due else None

    def tick(self, now: float) -> None:
        """Advance the responses whose time has come; expire the session at its cap."""
        self.now = now
        if self._expires_at is not None and now >= self._expires_at:
            self._expires_at = None
            self.expire(now)
        self._advance_due()

    def voice_ready(self, response_id: str, pcm: NDArray[np.int16], now: float) -> None:
        """The spoken reply of ``response_id`` (24 kHz), as asked by a :class:`VoiceRequest`."""
        self.now = now
        for response in self._streams:
            if response.id == response_id and response.stream is not None and response.due is None:
                response.voice = pcm
                response.due = now
        self._advance_due()

    # --- sending ---------------------------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        """Queue a server event (an ``event_id`` is added); validated first when ``strict``."""
        event = {"event_id": new_id("event"), **event}
        if self.opts.strict:
            for problem in schema.validate_server_event(event):
                self._add_violation("server", problem, redact(event))
        self.record.server_events.append(redact(event))
        self._enqueue(json.dumps(event), event["type"])

    def _enqueue(self, text: str | None, kind: str, *, close: tuple[int, str] | None = None, raw: bool = False) -> None:
        due = self.now + self.opts.faults.delay_ms / 1000.0
        self._out.append(Out(due, text, kind, close, raw))

    def error(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        """Send an ``error`` event (``event_id`` is the client event that caused it)."""
        self.emit(
            {
                "type": "error",
                "error": {"type": error_type, "code": code, "message": message, "param": param, "event_id": event_id},
            }
        )

    def close_after_sent(self, code: int, reason: str) -> None:
        """Close the socket once everything queued so far has been sent."""
        self._enqueue(None, "close", close=(code, reason))

    def sent(self, kind: str, now: float) -> Literal["drop", "half_open"] | None:
        """The shell sent an event of type ``kind``: apply the per-event faults.

        Returns what the shell must do to the connection now (abort it, or go half-open), or None.
        """
        self.now = now
        self.events_sent += 1
        f = self.opts.faults
        n = self.events_sent
        drop = (f.drop_after_events is not None and n >= f.drop_after_events) or f.drop_on_event == kind
        if drop and self._take_budget("drop", f.drop_times):
            return "drop"
        half = (f.half_open_after_events is not None and n >= f.half_open_after_events) or f.half_open_on_event == kind
        if half and self._take_budget("half_open", f.half_open_times):
            return "half_open"
        if f.error_code is not None and f.error_on_event == kind and "error" not in self.injected:
            self.inject_error(f.error_code, f.error_close)
        if f.malformed_after_events is not None and n == f.malformed_after_events:
            self.send_raw('{"type": "response.output_audio.delta", "delta": "AAAA')
        if f.unknown_after_events is not None and n == f.unknown_after_events:
            self.send_raw(json.dumps({"type": "response.future_feature.delta", "event_id": new_id("event"), "x": 1}))
        if f.huge_after_events is not None and n == f.huge_after_events:
            self.send_huge()
        oversize = f.oversize_after_events is not None and n == f.oversize_after_events
        if oversize and self._take_budget("oversize", f.oversize_times):
            self.send_oversize(f.oversize_bytes)
        return None

    def send_raw(self, text: str) -> None:
        """Send text as is (no validation, no event counting): for malformed or unknown events."""
        self.record.server_events.append({"type": "<raw>", "text": text[:200]})
        self._enqueue(text, "<raw>", raw=True)

    def send_huge(self) -> None:
        """Send a valid ``conversation.item.retrieved`` of about 10 MB (an item with long audio)."""
        audio = base64.b64encode(bytes(HUGE_MESSAGE_BYTES * 3 // 4)).decode()
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_audio", "audio": audio, "transcript": "(a very long reply)"}],
        }
        event = {"type": "conversation.item.retrieved", "event_id": new_id("event"), "item": item}
        self.record.server_events.append({"type": event["type"], "item": strip_audio(item)})
        self._enqueue(json.dumps(event), "conversation.item.retrieved", raw=True)

    def send_oversize(self, size: int) -> None:
        """Send one audio delta of ``size`` characters in 1 MiB fragments (a broken or hostile server)."""
        head = json.dumps({"type": "response.output_audio.delta", "event_id": new_id("event")})[:-1] + ', "delta": "'
        self.record.server_events.append({"type": "<oversize>", "size": size})
        self._out.append(Out(self.now, head, "<oversize>", raw=True, size=size))

    def inject_error(self, code: str, close: bool | None = None, message: str | None = None) -> None:
        """Send an ``error`` with ``code``; close with 1008 afterwards if ``close`` (None: for fatal codes)."""
        if not self._take_budget("error", self.opts.faults.error_times):
            return
        self.injected.add("error")
        self.error(message or f"Emulated error: {code}", code=code)
        if close if close is not None else code in FATAL_CODES:
            self.close_after_sent(1008, code)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def open(self, now: float, *, beta: bool, key: str) -> None:
        """The connection is open: greet (or refuse a beta client or a bad key), start the session's clock."""
        self.now = now
        if beta:
            self.error(
                "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.",
                code="beta_api_shape_disabled",
            )
            self.close_after_sent(4000, "beta_api_shape_disabled")
        elif key.startswith("sk-bad"):
            self.error(
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
            self.close_after_sent(1008, "invalid_api_key")
        else:
            self.emit({"type": "session.created", "session": self.session})
            self.emit(
                {
                    "type": "conversation.created",
                    "conversation": {"id": new_id("conv"), "object": "realtime.conversation"},
                }
            )
            f = self.opts.faults
            if f.error_code is not None and f.error_on_event is None:
                self.inject_error(f.error_code, f.error_close)
            self._expires_at = now + self.opts.session_expires_s

    def expire(self, now: float | None = None) -> None:
        """``session_expired`` then close 1001, as the real server does at its 60-minute cap."""
        if now is not None:
            self.now = now
        minutes = max(1, round(self.opts.session_expires_s / 60))
        message = f"Your session hit the maximum duration of {minutes} minutes."
        logger.info("session %d expired", self.record.index)
        self.error(message, code="session_expired")
        self.close_after_sent(1001, message)

    # --- receiving -------------------------------------------------------------------------------------------

    def receive(self, message: str | bytes, now: float) -> None:
        """Handle one client message: record, validate, dispatch; protocol errors go back as ``error``."""
        self.now = now
        self._advance_due()  # what was due before the message went out before it
        self._receive(message)
        self._advance_due()

    def _receive(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._add_violation("client", "binary frame", f"<{len(message)} bytes>")
            self.error("Binary messages are not supported.", code="invalid_request_error")
            return
        try:
            event = json.loads(message)
        except ValueError as exc:
            self._add_violation("client", f"malformed JSON: {exc}", message[:300])
            self.error(f"Invalid JSON: {exc}", code="invalid_json")
            return
        if not isinstance(event, dict):
            self._add_violation("client", "not a JSON object", message[:300])
            self.error("Expected a JSON object.", code="invalid_request_error")
            return
        self.record.client_events.append(redact(event))
        kind = event.get("type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if kind != "input_audio_buffer.append":
            logger.debug("session %d < %s %s", self.record.index, kind, event_id or "")
        problems = schema.validate_client_event(event)
        for problem in problems:
            self._add_violation("client", problem, redact(event))
        hard = [p for p in problems if not p.startswith("unknown key")]
        if kind not in CLIENT_TYPES:
            self.error(
                f"Invalid value: '{kind}'. Supported values are: {sorted(CLIENT_TYPES)}.",
                code="invalid_value",
                param="type",
                event_id=event_id,
            )
            return
        if hard:
            self.error(f"Invalid request: {hard[0]}", code="invalid_value", event_id=event_id)
            return
        handler: Callable[[dict[str, Any]], None] = getattr(self, "_on_" + str(kind).replace(".", "_"))
        try:
            handler(event)
        except ServerError as exc:
            self.error(exc.message, code=exc.code, param=exc.param, event_id=event_id)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # shape not checked without the SDK
            self._add_violation("client", f"malformed {kind}: {exc!r}", redact(event))
            self.error(f"Invalid {kind} event: {exc!r}", code="invalid_value", event_id=event_id)

    def _on_session_update(self, event: dict[str, Any]) -> None:
        update = event["session"]
        if update.get("type") != "realtime":
            raise ServerError("Only realtime sessions are emulated.", code="invalid_value", param="session.type")
        if "model" in update and update["model"] != self.session["model"]:
            raise ServerError("The model of a session cannot be changed.", code="invalid_value", param="session.model")
        audio = update.get("audio") or {}
        for side in ("input", "output"):
            fmt = (audio.get(side) or {}).get("format")
            if fmt is not None and (problem := check_format(fmt, f"session.audio.{side}.format")):
                raise ServerError(problem, code="invalid_value", param=f"session.audio.{side}.format")
        out = audio.get("output") or {}
        if "voice" in out and out["voice"] != self.session["audio"]["output"]["voice"] and self.voice_locked:
            raise ServerError(
                "Cannot update a conversation's voice if assistant audio is present.",
                code="cannot_update_voice",
                param="session.audio.output.voice",
            )
        modalities = update.get("output_modalities")
        if modalities is not None and len(modalities) != 1:
            raise ServerError(
                "output_modalities must be ['audio'] or ['text'].",
                code="invalid_value",
                param="session.output_modalities",
            )
        merged = merge_session(self.session, update)
        td = merged["audio"]["input"].get("turn_detection")
        if isinstance(td, dict):
            defaults: dict[str, Any] = (
                {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500, "idle_timeout_ms": None}
                if td.get("type") == "server_vad"
                else {"eagerness": "auto"}
            )
            merged["audio"]["input"]["turn_detection"] = {
                **defaults,
                "create_response": True,
                "interrupt_response": True,
                **td,
            }
        self.session = merged
        self.input.configure()  # the VAD is rebuilt from the new config on the next append
        self.emit({"type": "session.updated", "session": self.session})
        for tool in self.session.get("tools") or []:
            if isinstance(tool, dict) and tool.get("type") == "mcp":
                item_id = new_id("item")  # the service lists the server's tools
                self.emit({"type": "mcp_list_tools.in_progress", "item_id": item_id})
                self.emit({"type": "mcp_list_tools.completed", "item_id": item_id})

    # --- responses -------------------------------------------------------------------------------------------

    def _on_response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if params.get("conversation") != "none" and self.response is not None:
            raise ServerError(
                f"Conversation already has an active response in progress: {self.response.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        self._start_response(params, event.get("event_id"))

    def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        active = self.response
        if active is None or active.cancel_reason is not None or (wanted is not None and wanted != active.id):
            self.record.cancels.append(Cancel(None, wanted))
            raise ServerError("Cancellation failed: no active response found", code="response_cancel_not_active")
        self.record.cancels.append(Cancel(active.id, wanted))
        self._cancel(active, "client_cancelled")

    def _cancel(self, response: Response, reason: str) -> None:
        if response.cancel_reason is None:
            logger.debug("session %d: cancelling %s (%s)", self.record.index, response.id, reason)
            response.cancel_reason = reason
            if response.stream is not None and response.due is not None:
                response.due = self.now  # it stops at its next chunk, after what this message does

    def _start_response(self, params: dict[str, Any], client_event_id: str | None) -> None:
        self.responses_started += 1
        turn = Turn(
            number=self.responses_started,
            session_index=self.record.index,
            user_texts=tuple(self.pending_texts),
            user_audio_ms=self.pending_audio_ms,
            tool_outputs=tuple(self.pending_outputs),
        )
        self.pending_texts, self.pending_audio_ms, self.pending_outputs = [], 0, []
        record = ResponseRecord(id=new_id("resp"))
        self.record.responses.append(record)
        response = Response(record)
        out_of_band = params.get("conversation") == "none"
        if not out_of_band:
            self.response = response
        response.stream = stream_response(self, response, turn, params, out_of_band)
        response.due = self.now  # it starts after what this message does, as a task would
        self._streams.append(response)

    def _advance_due(self) -> None:
        """Advance every response stream whose time has come, in the order they started."""
        for response in list(self._streams):
            if response.due is not None and response.due <= self.now:
                self._advance(response)

    def _advance(self, response: Response) -> None:
        stream = response.stream
        while stream is not None:
            voice, response.voice = response.voice, None
            try:
                step = stream.send(voice)
            except StopIteration:
                response.stream = stream = None
                response.due = None
                self._streams.remove(response)
                return
            if isinstance(step, Speak):
                response.due = None
                self._voice.append(VoiceRequest(response.id, step.text, self.opts.voice_engine))
                return
            if step > self.now and response.cancel_reason is None:
                response.due = step
                return

    def pace(self, started: float, media_s: float) -> float:
        """When ``media_s`` of reply would have been produced at ``reply_rate``."""
        return started + media_s / max(self.opts.reply_rate, 1e-3)
