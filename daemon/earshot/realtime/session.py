"""RealtimeSession: the GA Realtime protocol as a sans-I/O state machine, one per connection.

Inputs are method calls with an explicit ``now`` (monotonic seconds): the connection opened, a
message received, audio appended, a local end of turn, a barge-in with what was heard, a tool
result, the connection lost. Outputs are JSON text frames (:meth:`messages_to_send`) and events
for the app (:meth:`events_received`). Nothing here reads a clock, touches a socket or sleeps.

The handshake (PROTOCOL.md §1.5, §2): on ``session.created`` a full ``session.update`` is sent;
only ``session.updated`` makes the session ready. Then, in this order: the text history given to
the constructor is replayed (``conversation.item.create`` items chained with
``previous_item_id``), the ``replay_audio`` of an interrupted user turn is streamed as
``input_audio_buffer.append`` (the server's VAD, or the app's :meth:`commit_turn`, ends that turn
as usual), then the audio appended while not ready, then live audio. Audio is batched into
``append_ms`` messages.

Each server event is read in :mod:`.serverevents` (a base of this class, in a module of its own for
length). Responses: a busy flag goes up on ``response.created`` and down on ``response.done``;
``response.create`` is never sent while busy (or while our own create is in flight) and is
queued instead. Barge-in (:meth:`interrupt`) truncates the assistant item at what was heard,
cancels the response when the server will not, and drops late deltas of that response.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.config import RealtimeConfig
from earshot.errors import RealtimeError, RemoteProtocolError
from earshot.realtime import events as ev
from earshot.realtime import outputs
from earshot.realtime.outputs import *  # noqa: F403 - the session's outputs, re-exported (callers use session.X)
from earshot.realtime.outputs import ServerError, SessionEvent
from earshot.realtime.policy import HistoryItem
from earshot.realtime.serverevents import ItemAudio, ServerEvents
from earshot.realtime.sessionconfig import build_session_config
from earshot.realtime.toolspec import ToolSpec
from earshot.realtime.transcript import TranscriptLog
from earshot.realtime.uplinkaudio import MAX_REPLAY_S, UplinkAudio

__all__ = ["MAX_REPLAY_S", "HistoryItem", "RealtimeSession", "build_session_config"]
__all__ += outputs.__all__

logger = logging.getLogger(__name__)
COMMIT_MIN_MS = 100
"""The server refuses to commit less than this (``input_audio_buffer_commit_empty``, PROTOCOL.md §4.3)."""
_MAX_SENT_IDS = 256
_MAX_PENDING_ANNOUNCEMENTS = 8


class RealtimeSession(ServerEvents):
    """The protocol state of one Realtime connection.

    Args:
        config: the ``realtime`` section.
        tools: the tools declared to the model.
        history: text turns to restore after ``session.updated`` (trimmed to ``config.history``).
        replay_audio: the audio of a user turn cut by the previous connection (input wire rate),
            streamed again before anything appended here if :meth:`decide_replay` says so (the
            conversation core decides: a turn whose reply was already playing is not asked again).
            Until then nothing is streamed: audio appended meanwhile waits behind it.

    The caller drains :meth:`messages_to_send` and :meth:`events_received` after every input, and
    calls :meth:`tick` at :meth:`next_deadline`. When :attr:`failure` is set the connection must be
    closed and the error handed to the reconnect policy.
    """

    def __init__(
        self,
        config: RealtimeConfig,
        *,
        tools: Sequence[ToolSpec] = (),
        history: Sequence[HistoryItem] = (),
        replay_audio: NDArray[np.int16] | None = None,
        replay_offline_samples: int = 0,
        mcp_tools: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self._config = config
        self._tools = tuple(tools)
        self._mcp_tools = tuple(mcp_tools)
        self._approve: dict[str, frozenset[str]] = {
            s.server_label: frozenset(s.approve) for s in config.mcp_servers if s.require_approval == "always"
        }
        self._format: ev.AudioFormat = config.format
        self.input_rate_hz = ev.WIRE_RATE_HZ[config.format]
        self.output_rate_hz = ev.WIRE_RATE_HZ[config.format]
        self._vad = config.turn_detection.type != "none"

        self._out: list[str] = []
        self._events: list[SessionEvent] = []
        self._seq = 0
        self._sent_types: OrderedDict[str, str] = OrderedDict()

        self.session_id: str | None = None
        self.expires_at: int | None = None
        self.failure: RealtimeError | None = None
        self.protocol_errors = 0
        self.dropped_deltas = 0
        self.dropped_calls = 0
        self._opened = False
        self._created = False
        self._ready = False
        self._closed = False
        self._ready_deadline: float | None = None

        # audio upstream
        self._uplink = UplinkAudio(
            batch_samples=max(1, self.input_rate_hz * config.append_ms // 1000),
            max_buffer_samples=int(config.reconnect.offline_buffer_s * self.input_rate_hz),
            max_turn_samples=int(max(config.reconnect.offline_buffer_s, MAX_REPLAY_S) * self.input_rate_hz),
            replay=replay_audio,
            replay_offline_samples=replay_offline_samples,
        )

        # responses
        self._active_response: str | None = None
        self._create_in_flight: str | None = None
        self._create_wanted = False
        self._cancel_on_created = False
        self._cancelled: deque[str] = deque(maxlen=32)
        self._pending_calls: set[str] = set()
        self._rate_limit_retry_at: float | None = None
        self._rate_limit_attempt = 0

        # assistant audio per item, for truncation
        self._items: OrderedDict[str, ItemAudio] = OrderedDict()

        # history
        self._log = TranscriptLog(history, config.history)
        self._announcements: list[str] = []  # asked for before the session was ready

    # ---------------------------------------------------------------------------------- properties

    @property
    def ready(self) -> bool:
        """``session.updated`` has arrived and the connection is not lost."""
        return self._ready and not self._closed

    @property
    def transcript_chars(self) -> int:
        """Characters of transcript kept for this session's items (bounded)."""
        return self._log.chars

    @property
    def dropped_transcript_chars(self) -> int:
        """Characters of transcript dropped at the per-item bound."""
        return self._log.dropped_chars

    @property
    def dropped_audio_samples(self) -> int:
        """Audio dropped while waiting for the session, at the offline bound."""
        return self._uplink.dropped_samples

    @property
    def busy(self) -> bool:
        """A response is active (or our ``response.create`` is on its way)."""
        return self._active_response is not None or self._create_in_flight is not None

    @property
    def history(self) -> list[HistoryItem]:
        """The conversation as text, oldest first, for replay into the next session.

        It holds the restored history plus every settled turn of this session: user transcripts
        (when input transcription is on) and assistant transcripts of responses that ended
        (an item cut by barge-in keeps about the part that was heard, marked ``truncated``).
        A user turn still waiting for its reply, and a reply cut by a lost connection, are left out:
        the turn's audio is replayed instead (:meth:`unsettled_audio`).
        """
        return self._log.history()

    def offline_samples(self) -> int:
        """Samples of :meth:`unsettled_audio` that no server heard: audio that arrived while disconnected."""
        return self._uplink.offline_samples(self._ready)

    @property
    def replay_undecided(self) -> bool:
        """A replayed turn waits for :meth:`decide_replay` (and every appended sample behind it)."""
        return self._uplink.replay_undecided

    def decide_replay(self, replay: bool) -> int:
        """Send the previous connection's unanswered turn again (``replay``), or forget it.

        Returns the samples that will be sent again (0 when forgotten, or when there is nothing
        undecided). Audio appended meanwhile follows, once the session is ready.
        """
        if not self._uplink.replay_undecided:
            return 0  # nothing waits: nothing to stream either
        samples = self._uplink.decide_replay(replay)
        if self._ready:
            self._stream_pending()
        return samples

    def unsettled_audio(self) -> NDArray[np.int16]:
        """The audio of the user turn not yet answered (input wire rate), for replay after a drop.

        It starts where the last answered turn ended (or at the server's speech start when it is
        later) and holds at most :data:`MAX_REPLAY_S` or ``reconnect.offline_buffer_s``, the longer
        (the most recent part).
        """
        return self._uplink.unsettled_audio()

    # ---------------------------------------------------------------------------------- outputs

    def messages_to_send(self) -> list[str]:
        """JSON text frames to send, in order (the list is handed over and cleared)."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SessionEvent]:
        """Events for the app, in order (the list is handed over and cleared)."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next, or None."""
        deadlines = [d for d in (self._ready_deadline, self._rate_limit_retry_at) if d is not None]
        return min(deadlines) if deadlines and not self._closed else None

    # ----------------------------------------------------------------------------------- inputs

    def connection_opened(self, now: float) -> None:
        """The WebSocket is open; ``session.created`` must arrive within ``ready_timeout_s``."""
        self._opened = True
        self._ready_deadline = now + self._config.ready_timeout_s

    def connection_lost(self, now: float) -> None:
        """The WebSocket is gone: nothing more is sent; history and unsettled audio stay readable."""
        self._closed = True
        self._out.clear()
        self._ready_deadline = None
        self._rate_limit_retry_at = None

    def tick(self, now: float) -> None:
        """Handle deadlines: the ready timeout, a delayed response retry."""
        if self._closed:
            return
        if self._ready_deadline is not None and now >= self._ready_deadline and not self._ready:
            self._ready_deadline = None
            what = "session.updated" if self._created else "session.created"
            self._fail(RemoteProtocolError(f"no {what} within {self._config.ready_timeout_s:g} s"))
        if self._rate_limit_retry_at is not None and now >= self._rate_limit_retry_at:
            self._rate_limit_retry_at = None
            self._request_response()

    def append_audio(self, pcm: NDArray[np.int16], now: float) -> None:
        """Audio for the server: mono int16 at :attr:`input_rate_hz`.

        Before ready it is queued (bounded by ``reconnect.offline_buffer_s``; the oldest is dropped
        past it); after, it is sent in ``append_ms`` messages.
        """
        if self._closed:
            return
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        if not pcm.size:
            return
        if not self._ready or self._uplink.replay_undecided:
            self._uplink.queue(pcm)
            return
        self._send_batches(self._uplink.stream(pcm))

    def flush_audio(self, now: float) -> None:
        """Send the partial batch now (end of a turn, before a commit)."""
        if self._ready and not self._closed:
            rest = self._uplink.flush()
            if rest is not None:
                self._send_batch(rest)

    def commit_turn(self, now: float) -> None:
        """Local end of turn: commit the input buffer and ask for a response.

        Less than 100 ms of uncommitted audio is not committed (the server would refuse it); a
        :class:`ServerError` with code ``input_audio_buffer_commit_empty`` reports the short turn.
        """
        if self._closed:
            return
        if not self._ready or self._uplink.replay_undecided:
            logger.warning("end of turn before the session is ready: ignored")
            return
        self.flush_audio(now)
        if self._uplink.uncommitted_samples * 1000 < COMMIT_MIN_MS * self.input_rate_hz:
            self._events.append(
                ServerError(ev.CODE_COMMIT_EMPTY, "turn too short to commit (under 100 ms)", None, False)
            )
            return
        self._send(ev.audio_commit(self._next_id("commit")))
        self._mark_committed()
        self._request_response()

    def announce(self, text: str, now: float) -> None:
        """Have ``text`` said now, out of band: it never enters the conversation (``earshot say``)."""
        if self._closed:
            return
        if not self._ready:
            if len(self._announcements) < _MAX_PENDING_ANNOUNCEMENTS:
                self._announcements.append(text)
            return
        self._send(ev.response_announce(text, self._next_id("announce")))

    def interrupt(
        self, *, heard_samples: Mapping[str, int], local: bool, now: float, heard_rate_hz: int = 24000
    ) -> None:
        """Barge-in: the user spoke over the reply and playback was stopped.

        Args:
            heard_samples: samples of each assistant item actually played (``Playback.stop()``).
            local: the daemon detected the speech (the server did not, so it will not cancel).
            now: monotonic seconds.
            heard_rate_hz: the rate ``heard_samples`` count at (the playback rate, 24 kHz).

        The current assistant item is truncated at what was heard (clamped to [1, ms received]);
        nothing is sent for an item of which nothing was heard or that had finished playing. The
        response is cancelled when ``local`` (or when the server does not interrupt by itself) and
        its late deltas are dropped. With local turn detection the input buffer is cleared too:
        call this before appending the new turn's audio.
        """
        if self._closed:
            return
        for item_id, item in self._items.items():
            if item.closed:
                continue
            item.closed = True
            heard = heard_samples.get(item_id, 0)
            if heard <= 0:
                continue
            received_ms = item.received_samples * 1000 // self.output_rate_hz
            if item.done and heard * self.output_rate_hz >= item.received_samples * heard_rate_hz:
                continue  # played out: nothing to truncate
            heard_ms = heard * 1000 // heard_rate_hz
            end_ms = max(1, min(heard_ms, received_ms))
            # conversation.item.truncate: audio_end_ms must not exceed the audio the server sent for the item
            if self._ready:
                self._send(ev.item_truncate(item_id, item.content_index, end_ms, self._next_id("truncate")))
            entry = self._log.get(item_id)
            if entry is not None:
                entry.heard_ms = end_ms
        td = self._config.turn_detection
        self._cancel_response(send=not (self._vad and td.interrupt_response and not local))
        if not self._vad:
            self._uplink.clear_uncommitted()
            if self._ready:
                self._send(ev.audio_clear(self._next_id("clear")))

    def discard_turn(self) -> None:
        """Forget the user's turn so far: the stop phrase said over a reply is not a question.

        The partial batch is dropped and the input buffer cleared; a response the server started on
        what it already committed is cancelled (its late deltas dropped), and none is asked for.
        """
        if self._closed:
            return
        self._uplink.clear_uncommitted()
        if self._ready:
            self._send(ev.audio_clear(self._next_id("clear")))
        self._cancel_response(send=True)

    def _cancel_response(self, *, send: bool) -> None:
        """The response in flight is unwanted: its late deltas are dropped, and none is asked for.

        ``send``: say ``response.cancel`` (not when the server cancels it by itself).
        """
        if self._active_response is not None:
            if self._active_response not in self._cancelled:
                self._cancelled.append(self._active_response)
                if send and self._ready:
                    self._send(ev.response_cancel(self._active_response, self._next_id("cancel")))
        elif self._create_in_flight is not None:
            self._cancel_on_created = True  # a cancel before response.created is a no-op (PROTOCOL.md §4.4)
        self._create_wanted = False
        self._rate_limit_retry_at = None

    def tool_result(self, call_id: str, output: str, now: float) -> None:
        """The output of a tool call: sent as a ``function_call_output`` item; a response follows.

        ``response.create`` is sent once every call of the response is answered and the response
        that asked is done.
        """
        if self._closed or not self._ready:
            return
        if call_id not in self._pending_calls:
            logger.warning("tool result for unknown call %s: dropped", call_id)
            return
        self._pending_calls.discard(call_id)
        self._send(ev.item_create(ev.function_call_output_item(call_id, output), event_id=self._next_id("tool")))
        if not self._pending_calls:
            self._request_response()

    def receive_message(self, raw: str | bytes, now: float) -> None:
        """A message from the server. Malformed ones are counted and skipped, never raised."""
        self.receive_parsed(self.parse(raw), now)

    def parse(self, raw: str | bytes) -> ev.ServerEvent | RemoteProtocolError:
        """Parse a server message, or say why it is unusable. It touches no state: it may run in a worker."""
        try:
            return ev.parse_server_event(raw, self._format)
        except RemoteProtocolError as exc:
            return exc

    def receive_parsed(self, parsed: ev.ServerEvent | RemoteProtocolError, now: float) -> None:
        """A server message :meth:`parse` has read (in order): as :meth:`receive_message`."""
        if self._closed:
            return
        if isinstance(parsed, RemoteProtocolError):
            self.protocol_errors += 1
            logger.warning("< unusable server message (%d so far): %s", self.protocol_errors, parsed)
            return
        self._dispatch(parsed, now)

    # ---------------------------------------------------------------------------------- helpers

    def _fail(self, error: RealtimeError) -> None:
        if self.failure is None:
            self.failure = error

    def _next_id(self, kind: str) -> str:
        self._seq += 1
        return f"earshot_{kind}_{self._seq}"

    def _send(self, event: dict[str, Any]) -> None:
        event_id = event.get("event_id")
        if isinstance(event_id, str):
            self._sent_types[event_id] = event["type"]
            while len(self._sent_types) > _MAX_SENT_IDS:
                self._sent_types.popitem(last=False)
            logger.debug("> %s %s", event["type"], event_id)
        self._out.append(ev.dumps(event))

    def _request_response(self) -> None:
        if not self._ready or self.busy or self._pending_calls:
            self._create_wanted = True
            return
        event_id = self._next_id("response")
        self._create_in_flight = event_id
        self._send(ev.response_create(event_id))

    def _mark_committed(self) -> None:
        self._uplink.mark_committed(self._vad)

    def _stream_pending(self) -> None:
        self._send_batches(self._uplink.stream_pending())

    def _send_batches(self, batches: Sequence[NDArray[np.int16]]) -> None:
        for pcm in batches:
            self._send_batch(pcm)

    def _send_batch(self, pcm: NDArray[np.int16]) -> None:
        self._out.append(ev.dumps(ev.audio_append(ev.encode_audio(pcm, self._format))))
