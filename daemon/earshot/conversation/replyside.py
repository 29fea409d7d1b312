"""What the server and the speaker say back: the conversation core's link and playback inputs.

:class:`ReplySide` is part of :class:`~earshot.conversation.core.ConversationCore`, kept in a module of
its own so that each stays readable: the session's events (ready, reply audio, response done, the
server's speech start and turn commit, tool calls, errors), a lost link, and the playback's first
sample heard and reply played out. It holds the state of the response in flight (one at a time, as
the server sends them). The same single state machine decides: these handlers read the phase and
drive the same :class:`~earshot.engage.Engagement`; nothing here runs on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from earshot.audio.ledger import PlaybackFinished, PlaybackStarted, is_earcon
from earshot.conversation import effects as fx
from earshot.engage import Phase
from earshot.realtime import session as rs
from earshot.realtime.linkevents import LinkDown, OfflineOverflow
from earshot.realtime.policy import Verdict

if TYPE_CHECKING:
    from earshot.config import Config
    from earshot.conversation.appliance import Announcement
    from earshot.conversation.front import AudioFront
    from earshot.engage import Engagement

__all__ = ["PARTIAL_TRANSCRIPT_EVERY_S", "ReplySide"]

PARTIAL_TRANSCRIPT_EVERY_S = 1.0
"""A partial transcript of an item goes out at most this often (its final one always does)."""

logger = logging.getLogger("earshot.conversation.core")


class ReplySide:
    """The core's handling of link and playback events (see the module docstring)."""

    def __init__(self) -> None:
        self._response_has_audio = False
        self._response_done = True
        self._reply_pending = False  # audio or a tool call's answer is still to come or to play
        self._turn_ended_at: float | None = None
        self._ready_reported = False  # wake → ready measured for this engagement
        self._session_ready_at: float | None = None
        self._resting_until: float | None = None
        self.resting_reason: str | None = None
        self._partial_at: dict[str, float] = {}  # item -> when its last partial transcript went out

    if TYPE_CHECKING:  # what the core itself provides
        config: Config
        engagement: Engagement
        front: AudioFront
        bargein: Any | None
        wire_rate_hz: int
        _tools: bool
        _position: int
        _announcing: Announcement | None

        @property
        def phase(self) -> Phase:
            """The engagement's phase."""

        def _emit(self, effect: fx.Effect) -> None: ...
        def _mark(self, now: float, event: str, what: str, **data: str | int | float) -> None: ...
        def _connection(self, state: Any) -> None: ...
        def _barge_in(self, now: float, onset: int, *, local: bool) -> None: ...
        def _end_of_turn(self, now: float) -> None: ...
        def _run_engagement(self, now: float) -> None: ...
        def _duplex(self, mode: str) -> None: ...
        def _update_gate_suppression(self) -> None: ...

    # ------------------------------------------------------------------ link events

    def link_event(self, ev: Any, now: float, *, playback_active: bool) -> None:
        """A session event, :class:`LinkDown` or :class:`OfflineOverflow`, in the order the link got them."""
        if isinstance(ev, LinkDown):
            self._on_link_down(ev, now)
        elif isinstance(ev, OfflineOverflow):
            self._mark(now, "offline_overflow", "offline for longer than the buffer")
            self._emit(fx.Hook("offline", {"reason": "offline buffer exceeded"}))
            self.engagement.offline(now, "offline")
        elif isinstance(ev, rs.SessionReady):
            self._on_session_ready(now)
        elif isinstance(ev, rs.PlayAudio):
            self._on_play_audio(ev, now)
        elif isinstance(ev, rs.ResponseStarted):
            self._response_has_audio = False
            self._response_done = False
        elif isinstance(ev, rs.ResponseDone):
            self._on_response_done(ev, now, playback_active)
        elif isinstance(ev, rs.SpeechStarted):
            if self.phase is Phase.SPEAKING:
                self._barge_in(now, self._position, local=False)
            else:
                self._drop_unheard_reply(now, playback_active)
                self.engagement.speech_started(now, self._position)
        elif isinstance(ev, rs.TurnCommitted):
            self._end_of_turn(now)
        elif isinstance(ev, rs.ToolCall):
            self._on_tool_call(ev, now)
        elif isinstance(ev, rs.ServerError):
            self._emit(fx.ErrorSeen(ev.code or "server_error", ev.message))
            self._emit(fx.Hook("error", {"code": ev.code, "message": ev.message}))
        elif isinstance(ev, rs.Transcript):
            self._on_transcript(ev, now)
        elif isinstance(ev, rs.RateLimits):
            self._emit(fx.RateLimitsSeen(ev.limits))
        elif isinstance(ev, rs.McpActivity) and self.phase is not Phase.IDLE:
            # Like a tool call: this response ends without audio, the answer comes in the next one.
            self._mark(now, "mcp", f"MCP {ev.server_label}.{ev.name}: {ev.kind}", kind=ev.kind)
            self._reply_pending = True
        self._run_engagement(now)

    def _on_transcript(self, ev: rs.Transcript, now: float) -> None:
        """The user's input transcription or the assistant's transcript: the ``transcript`` hook and event.

        Partial ones at most every :data:`PARTIAL_TRANSCRIPT_EVERY_S` per item (hooks are processes);
        the final one always. Their text reaches the journal only with ``logging.transcripts``.
        """
        if not ev.final:
            last = self._partial_at.get(ev.item_id)
            if last is not None and now - last < PARTIAL_TRANSCRIPT_EVERY_S:
                return
            if len(self._partial_at) >= 64:
                self._partial_at.clear()
        self._partial_at[ev.item_id] = now
        if ev.final:
            self._partial_at.pop(ev.item_id, None)
            if self.config.logging.transcripts:
                logger.info("%s said: %s", ev.role, ev.text, extra={"event": "transcript", "data": {"role": ev.role}})
            else:
                logger.debug("transcript (%s): %d characters", ev.role, len(ev.text))
        self._emit(fx.Hook("transcript", {"role": ev.role, "item_id": ev.item_id, "text": ev.text, "final": ev.final}))

    def _on_session_ready(self, now: float) -> None:
        self._mark(now, "session_ready", "session ready")
        self._session_ready_at = now
        self._connection("connected")
        started = self.engagement.engaged_at
        if started is not None and not self._ready_reported:
            self._ready_reported = True
            self._emit(fx.Measured("session_ready", 1000.0 * (now - started)))
        self.engagement.session_ready(now)
        if self._announcing is not None and self.phase is Phase.THINKING:
            self._emit(fx.Announce(self._announcing.text))  # (again, after a reconnect)

    def _on_play_audio(self, ev: rs.PlayAudio, now: float) -> None:
        if self.phase is Phase.IDLE:
            return  # a late delta of an engagement that is over
        if not self._response_has_audio:
            self._mark(now, "reply_audio", "reply audio received")
        self._response_has_audio = True
        self._reply_pending = True
        self._emit(fx.PlayReply(ev.item_id, ev.pcm, self.wire_rate_hz))

    def _on_response_done(self, ev: rs.ResponseDone, now: float, playback_active: bool) -> None:
        self._response_done = True
        if ev.usage is not None:
            self._emit(fx.Usage(ev.usage))
        self._mark(now, "response_done", f"response done ({ev.status})", status=ev.status)
        if ev.status == "cancelled" and self.phase is not Phase.SPEAKING:
            # The server interrupted a reply nobody has heard yet (the user went on talking).
            self._drop_unheard_reply(now, playback_active)
            return
        if self._response_has_audio:
            self._emit(fx.FinishPlayback())
            return
        if ev.status == "cancelled":
            return
        if self._tools and self._reply_pending:
            # A tool call's response: the spoken answer comes in the next response.
            self._reply_pending = False
            return
        self.engagement.response_done(now, had_audio=False)

    def _on_tool_call(self, ev: rs.ToolCall, now: float) -> None:
        if self.phase is Phase.IDLE:
            # Nobody is engaged: running it would answer into a session nobody listens to (and run
            # local commands for a server while idle).
            logger.warning("tool call %s while idle: not run", ev.name[:64])
            return
        self._mark(now, "tool_call", f"tool call {ev.name}", name=ev.name)
        self._reply_pending = True
        if self._tools:
            self._emit(fx.RunTool(ev.call_id, ev.name, ev.arguments))

    def _drop_unheard_reply(self, now: float, playback_active: bool) -> None:
        if self.phase is not Phase.SPEAKING and playback_active and self._response_has_audio:
            self._emit(fx.StopPlayback())
            self._response_has_audio = False
            self._mark(now, "reply_dropped", "unheard reply dropped")

    def _on_link_down(self, ev: LinkDown, now: float) -> None:
        self._emit(fx.ErrorSeen("LinkDown", ev.error))
        if ev.verdict is Verdict.FATAL_FOR_NOW:
            self._resting_until = now + self.config.realtime.reconnect.slow_retry_s
            self.resting_reason = ev.error
            self._connection("resting")
            self._mark(now, "not_connecting", f"not connecting for now: {ev.error}", error=str(ev.error))
            self._emit(fx.Hook("error", {"reason": ev.error}))
            self.engagement.failed(now, ev.error)
            # No engagement wants the link now: stop its retries (the next engagement, a SIGHUP or a
            # changed credential retries); left open it would connect sessions while idle.
            self._emit(fx.CloseLink(ev.error))
            return
        self._connection("connecting")
        self._emit(fx.Counted("reconnect"))
        self._mark(now, "connection_lost", f"connection lost: {ev.error}", error=str(ev.error))
        self.engagement.connection_lost(now)
        if self.phase is Phase.SPEAKING and not self._response_done:
            # No more of this reply will come; play what arrived, then move on.
            self._response_done = True
            self._emit(fx.FinishPlayback())

    # ------------------------------------------------------------------ playback events

    def playback_event(self, ev: Any, now: float) -> None:
        """A :class:`PlaybackStarted` / :class:`PlaybackFinished` from the playback."""
        if isinstance(ev, PlaybackFinished):
            logger.debug("playback finished (%d reply items heard)", len(ev.heard))
        if isinstance(ev, PlaybackStarted) and not is_earcon(ev.key):
            if self.phase in (Phase.LISTENING, Phase.THINKING, Phase.FOLLOW_UP):
                self._reply_started(now)
        elif isinstance(ev, PlaybackFinished) and ev.heard and self.phase is Phase.SPEAKING and self._response_done:
            self._mark(now, "reply_played_out", "reply played out")
            self._reply_pending = False
            # Nothing of this reply is left to drop: a later server speech start must not stop the next
            # engagement's wake earcon as if it were an unheard reply.
            self._response_has_audio = False
            if self.bargein is not None:
                self.bargein.stop()
            self.engagement.reply_played(now)
            if self._announcing is not None and not self._announcing.listen and self.engagement.turns == 0:
                self.engagement.cancel(now, "announcement said")  # no follow-up window without --listen
        self._run_engagement(now)

    def _reply_started(self, now: float) -> None:
        self._mark(now, "reply_started", "reply started")
        if self._turn_ended_at is not None:
            self._emit(fx.Measured("reply_started", 1000.0 * (now - self._turn_ended_at)))
        self._turn_ended_at = None
        self.engagement.reply_started(now)
        if self.bargein is not None:
            decision = self.bargein.start(self._position, **self.front.echo_figures())
            self._duplex(decision.mode.value)
            self._update_gate_suppression()
