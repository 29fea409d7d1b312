"""The server's events into a Realtime session: how :class:`~earshot.realtime.session.RealtimeSession` reads them.

:class:`ServerEvents` is a base of that one protocol state machine, in a module of its own for
length: the dispatch of each parsed server event (audio and transcript deltas, the handshake's
``session.created`` / ``session.updated``, responses, items, the server's VAD, function calls,
errors) onto the session's state and its events for the app. It sends only through the session's
own helpers. Pure: no asyncio, threads, processes or sockets.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from earshot.errors import RealtimeError, RealtimeServerError
from earshot.realtime import events as ev
from earshot.realtime.outputs import (
    AudioDone,
    McpActivity,
    PlayAudio,
    RateLimits,
    ResponseDone,
    ResponseStarted,
    ServerError,
    SessionEvent,
    SessionExpired,
    SessionReady,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
    TurnCommitted,
)
from earshot.realtime.sessionconfig import build_session_config, minted_update

if TYPE_CHECKING:
    from earshot.config import RealtimeConfig
    from earshot.realtime.toolspec import ToolSpec
    from earshot.realtime.transcript import TranscriptLog
    from earshot.realtime.uplinkaudio import UplinkAudio

__all__ = ["RATE_LIMIT_RETRIES_S", "ItemAudio", "ServerEvents"]

logger = logging.getLogger("earshot.realtime.session")

_CODE_MAX = 64
"""Longest server error code kept (real codes are under 40 characters)."""
_MESSAGE_MAX = 300
"""Longest server error message kept (logged, shown in status)."""
RATE_LIMIT_RETRIES_S = (1.0, 3.0)
"""Delays before re-creating a response that failed with ``inference_rate_limit_exceeded``."""
_MAX_TRACKED_ITEMS = 16
_MAX_PENDING_CALLS = 16
"""Function calls waiting for their output at most (a reply asks for a few; a hostile server for thousands)."""


@dataclass(slots=True)
class ItemAudio:
    """The assistant audio received of one item (for truncation)."""

    response_id: str
    content_index: int
    received_samples: int = 0
    done: bool = False
    closed: bool = False


class ServerEvents:
    """The session's reading of server events (see the module docstring)."""

    if TYPE_CHECKING:  # what the session itself provides
        _config: RealtimeConfig
        _tools: tuple[ToolSpec, ...]
        _mcp_tools: tuple[Mapping[str, Any], ...]
        _approve: dict[str, frozenset[str]]
        _vad: bool
        input_rate_hz: int
        output_rate_hz: int
        _events: list[SessionEvent]
        _sent_types: OrderedDict[str, str]
        session_id: str | None
        expires_at: int | None
        dropped_deltas: int
        dropped_calls: int
        _created: bool
        _ready: bool
        _ready_deadline: float | None
        _uplink: UplinkAudio
        _active_response: str | None
        _create_in_flight: str | None
        _create_wanted: bool
        _cancel_on_created: bool
        _cancelled: deque[str]
        _pending_calls: set[str]
        _rate_limit_retry_at: float | None
        _rate_limit_attempt: int
        _items: OrderedDict[str, ItemAudio]
        _log: TranscriptLog
        _announcements: list[str]

        def _fail(self, error: RealtimeError) -> None: ...
        def _next_id(self, kind: str) -> str: ...
        def _send(self, event: dict[str, Any]) -> None: ...
        def _request_response(self) -> None: ...
        def _mark_committed(self) -> None: ...
        def _stream_pending(self) -> None: ...

    # ---------------------------------------------------------------------------------- dispatch

    def _dispatch(self, event: ev.ServerEvent, now: float) -> None:
        if isinstance(event, ev.AudioDeltaEvent):
            self._on_audio(event)
        elif isinstance(event, ev.TranscriptEvent):
            self._on_transcript(event)
        elif isinstance(event, ev.SessionCreatedEvent):
            if not self._created:
                self._created = True
                self.session_id, self.expires_at = event.session_id, event.expires_at
                config = build_session_config(self._config, self._tools, mcp=self._mcp_tools)
                if self._config.auth.token_url is not None:
                    config = minted_update(config)
                self._send(ev.session_update(config, self._next_id("update")))
        elif isinstance(event, ev.SessionUpdatedEvent):
            if self._created and not self._ready:
                self._become_ready()
        elif isinstance(event, ev.ErrorEvent):
            self._on_error(event)
        elif isinstance(event, ev.ResponseCreatedEvent):
            self._on_response_created(event)
        elif isinstance(event, ev.ResponseDoneEvent):
            self._on_response_done(event, now)
        elif isinstance(event, ev.OutputItemEvent):
            if not event.done and event.item_type == "message" and event.item_id:
                self._log.entry(event.item_id, "assistant").response_id = event.response_id
        elif isinstance(event, ev.AudioDoneEvent):
            item = self._items.get(event.item_id)
            if item is not None:
                item.done = True
            if event.response_id not in self._cancelled:
                self._events.append(AudioDone(event.item_id, event.response_id))
        elif isinstance(event, ev.SpeechStartedEvent):
            self._uplink.speech_started(max(0, event.audio_start_ms) * self.input_rate_hz // 1000)
            self._events.append(SpeechStarted(event.audio_start_ms, event.item_id))
        elif isinstance(event, ev.SpeechStoppedEvent):
            self._uplink.speech_stopped(max(0, event.audio_end_ms) * self.input_rate_hz // 1000)
            self._events.append(SpeechStopped(event.audio_end_ms, event.item_id))
        elif isinstance(event, ev.CommittedEvent):
            if self._vad:
                self._mark_committed()
            self._log.entry(event.item_id, "user")
            self._events.append(TurnCommitted(event.item_id))
        elif isinstance(event, ev.InputTranscriptionEvent):
            self._on_input_transcription(event)
        elif isinstance(event, ev.FunctionCallEvent):
            if event.call_id in self._pending_calls:
                return
            if len(self._pending_calls) >= _MAX_PENDING_CALLS:
                self.dropped_calls += 1
                if self.dropped_calls == 1:  # once per session: a flood must not flood the journal too
                    logger.warning("< function calls dropped: %d already pending", _MAX_PENDING_CALLS)
                return
            self._pending_calls.add(event.call_id)
            self._events.append(ToolCall(event.call_id, event.name, event.arguments))
        elif isinstance(event, ev.McpEvent):
            self._on_mcp(event)
        elif isinstance(event, ev.RateLimitsEvent):
            self._events.append(RateLimits(event.limits))
        elif isinstance(event, ev.UnknownServerEvent):
            logger.debug("< %s (not used)", event.type)
        # ItemEvent, ItemTruncatedEvent, ClearedEvent: nothing to do

    def _become_ready(self) -> None:
        self._ready = True
        self._ready_deadline = None
        previous = "root"
        for i, item in enumerate(self._log.prior):
            item_id = f"earshot_h{i}"
            self._send(
                ev.item_create(
                    ev.message_item(item.role, item.text, item_id),
                    previous_item_id=previous,
                    event_id=self._next_id("history"),
                )
            )
            previous = item_id
        if not self._uplink.replay_undecided:
            self._stream_pending()
        self._events.append(SessionReady(self.session_id))
        if self._create_wanted:
            self._create_wanted = False
            self._request_response()
        pending, self._announcements = self._announcements, []
        for text in pending:
            self._send(ev.response_announce(text, self._next_id("announce")))

    def _on_mcp(self, event: ev.McpEvent) -> None:
        """A remote MCP server's listing, call or approval request (the service talks to the server)."""
        if event.kind == "approval_request":
            approved = event.name in self._approve.get(event.server_label, frozenset())
            logger.info(
                "mcp %s.%s: %s", event.server_label[:64], event.name[:64], "approved" if approved else "refused"
            )
            item = {
                "type": "mcp_approval_response",
                "id": self._next_id("approval"),
                "approval_request_id": event.item_id,
                "approve": approved,
            }
            self._send(ev.item_create(item, event_id=self._next_id("approval")))
            self._events.append(McpActivity(event.kind, event.server_label, event.name))
            self._request_response()  # the response goes on (queued while the current one runs)
        elif event.kind.endswith("failed"):
            what = event.name[:120] or event.item_id[:64]
            logger.warning("mcp %s: %s", event.kind, what)
            self._events.append(ServerError("mcp_" + event.kind, what, None, False))
        else:
            logger.info("mcp %s %s", event.kind, event.name[:64])
            if event.kind == "call_in_progress":
                self._events.append(McpActivity(event.kind, event.server_label, event.name))

    def _on_audio(self, event: ev.AudioDeltaEvent) -> None:
        entry = self._log.get(event.item_id)
        if entry is not None:
            entry.total_ms += event.pcm.size * 1000 // self.output_rate_hz
        if event.response_id in self._cancelled:
            self.dropped_deltas += 1
            return
        item = self._items.get(event.item_id)
        if item is None:
            item = self._items[event.item_id] = ItemAudio(event.response_id, event.content_index)
            while len(self._items) > _MAX_TRACKED_ITEMS:
                self._items.popitem(last=False)
        item.received_samples += event.pcm.size
        self._events.append(PlayAudio(event.item_id, event.content_index, event.response_id, event.pcm))

    def _on_transcript(self, event: ev.TranscriptEvent) -> None:
        entry = self._log.entry(event.item_id, "assistant")
        entry.response_id = entry.response_id or event.response_id
        self._log.set_text(entry, event.text, event.final)
        if event.response_id not in self._cancelled:
            self._events.append(Transcript("assistant", event.item_id, entry.text, event.final))

    def _on_input_transcription(self, event: ev.InputTranscriptionEvent) -> None:
        if event.failed:
            logger.info("input transcription failed for %s", event.item_id)
            return
        entry = self._log.entry(event.item_id, "user")
        self._log.set_text(entry, event.text, event.final)
        self._events.append(Transcript("user", event.item_id, entry.text, event.final))

    def _on_response_created(self, event: ev.ResponseCreatedEvent) -> None:
        self._active_response = event.response_id
        self._create_in_flight = None
        self._uplink.response_created()
        self._events.append(ResponseStarted(event.response_id))
        if self._cancel_on_created:
            self._cancel_on_created = False
            self._cancelled.append(event.response_id)
            self._send(ev.response_cancel(event.response_id, self._next_id("cancel")))

    def _on_response_done(self, event: ev.ResponseDoneEvent, now: float) -> None:
        if self._active_response == event.response_id or self._active_response is None:
            self._active_response = None
        settled = event.status != "failed"
        if settled:
            # the user turn this response answered is settled: it will not be replayed as audio
            self._uplink.response_settled()
            self._log.settle(event.response_id)
        reason = event.reason or event.error_code
        self._events.append(ResponseDone(event.response_id, event.status, reason, event.usage))
        if event.status == "failed" and event.error_code == ev.CODE_RATE_LIMIT:
            if self._rate_limit_attempt < len(RATE_LIMIT_RETRIES_S):
                self._rate_limit_retry_at = now + RATE_LIMIT_RETRIES_S[self._rate_limit_attempt]
                self._rate_limit_attempt += 1
                logger.warning("response rate-limited; retrying in %.0f s", RATE_LIMIT_RETRIES_S[0])
            return
        if event.status == "completed":
            self._rate_limit_attempt = 0
        if self._create_wanted:
            self._create_wanted = False
            self._request_response()

    def _on_error(self, event: ev.ErrorEvent) -> None:
        # Cut what a hostile server controls before it reaches the log, status and metrics.
        code = event.code[:_CODE_MAX] if event.code else event.code
        message = event.message[:_MESSAGE_MAX]
        caused_by = self._sent_types.get(event.event_id) if event.event_id else None
        if caused_by == ev.RESPONSE_CREATE and self._create_in_flight == event.event_id:
            self._create_in_flight = None
        harmless = (
            code == ev.CODE_RESPONSE_CANCEL_NOT_ACTIVE
            or message.startswith(ev.CANCEL_FAILED_PREFIX)
            or ev.TRUNCATE_TOO_LONG_MARKER in message
            or ev.TRUNCATE_NOT_AUDIO_MARKER in message
            or (code == ev.CODE_COMMIT_EMPTY and self._vad)
        )
        if harmless:
            logger.debug("< error %s (harmless): %s", code, message)
            return
        if code == ev.CODE_ACTIVE_RESPONSE:
            # our create raced a response the server started (VAD): create again when that one is done
            logger.debug("< error %s: response.create queued", code)
            self._create_wanted = True
            return
        if code == ev.CODE_SESSION_EXPIRED:
            logger.info("session expired: %s", message)
            self._events.append(SessionExpired())
            self._fail(RealtimeServerError(message, code=code, error_type=event.error_type))
            return
        fatal = code in ev.FATAL_CODES
        log = logger.error if fatal else logger.warning
        log("< error %s: %s (caused by %s %s)", code or event.error_type, message, caused_by, event.event_id)
        self._events.append(ServerError(code, message, event.event_id, fatal, caused_by))
        if fatal or caused_by == ev.SESSION_UPDATE:
            self._fail(RealtimeServerError(message, code=code, event_id=event.event_id, error_type=event.error_type))
