"""Emulator options, fault knobs, the reply script and what is recorded per connection.

Options and faults are plain mutable dataclasses: set them at construction, or change them while the
emulator runs (``emulator.options.faults.delay_ms = 80``); each connection reads them when it needs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

FATAL_CODES = frozenset({"invalid_api_key", "insufficient_quota", "account_deactivated", "billing_hard_limit_reached"})
"""Error codes after which the emulator closes the socket (code 1008) unless told otherwise."""


@dataclass
class Faults:
    """Fault knobs. ``None`` means off; a ``*_times`` budget limits a fault to the first N occurrences.

    Attributes:
        refuse_status: answer the upgrade with this HTTP status (503, 429, …); 0 closes the TCP socket instead.
        refuse_times: how many upgrades to refuse (None: all).
        stall_handshake_s: hold the upgrade this long before answering (``inf``: until the emulator stops).
        stall_times: how many upgrades to stall (None: all).
        drop_after_events: abort the TCP connection after this many server events on a connection.
        drop_on_event: abort right after sending the first event of this type (e.g.
            ``input_audio_buffer.speech_started``: during the user's turn; ``response.output_audio.delta``:
            mid-reply).
        drop_times: how many connections to drop (None: all).
        half_open_after_events: after this many events stop reading (pings go unanswered) and sending.
        half_open_on_event: go half-open right after sending the first event of this type.
        half_open_times: how many connections to make half-open (None: all).
        error_code: send an ``error`` with this code right after ``session.created`` (or after
            ``error_on_event``); fatal codes (:data:`FATAL_CODES`) then close the socket with 1008.
        error_on_event: send ``error_code`` right after the first event of this type instead.
        error_close: close after ``error_code`` (None: only for fatal codes).
        error_times: how many connections get ``error_code`` (None: all).
        malformed_after_events: send one malformed JSON text after this many events.
        unknown_after_events: send one event of an unknown type after this many events.
        huge_after_events: send one valid ~10 MB ``conversation.item.retrieved`` after this many events.
        oversize_after_events: send one ``response.output_audio.delta`` of ``oversize_bytes`` after this
            many events, as 1 MiB fragments (the emulator never holds it whole): past any frame limit.
        oversize_bytes: the size of that message.
        oversize_times: how many connections get it (None: all).
        delay_ms: delay every message sent by this much (one-way latency; order and rate are kept).
    """

    refuse_status: int | None = None
    refuse_times: int | None = None
    stall_handshake_s: float | None = None
    stall_times: int | None = None
    drop_after_events: int | None = None
    drop_on_event: str | None = None
    drop_times: int | None = None
    half_open_after_events: int | None = None
    half_open_on_event: str | None = None
    half_open_times: int | None = None
    error_code: str | None = None
    error_on_event: str | None = None
    error_close: bool | None = None
    error_times: int | None = None
    malformed_after_events: int | None = None
    unknown_after_events: int | None = None
    huge_after_events: int | None = None
    oversize_after_events: int | None = None
    oversize_bytes: int = 64 * 1024 * 1024
    oversize_times: int | None = 1
    delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """A function call the scripted model makes; with ``server_label``, a tool of that remote MCP server."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    server_label: str | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    """What the reply script sees when a response starts.

    Attributes:
        number: responses so far on this connection, this one included (1-based).
        session_index: the connection's index in ``Emulator.sessions``.
        user_texts: ``input_text`` of user/system items created since the previous response.
        user_audio_ms: duration of user audio committed since the previous response.
        tool_outputs: ``(name, output)`` of function_call_output items since the previous response.
    """

    number: int
    session_index: int
    user_texts: tuple[str, ...] = ()
    user_audio_ms: int = 0
    tool_outputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """What the scripted model answers: spoken (or text) ``text`` and an optional function call after it."""

    text: str = ""
    function_call: FunctionCall | None = None


Script = Callable[[Turn], Reply]


class DefaultScript:
    """The default model: a canned sentence with the turn number, scripted replies, and function calls.

    Args:
        replies: texts for turns 1, 2, …; past the end (or empty) the canned sentence is used.
        calls: function calls keyed by turn number, or by a phrase found (case-insensitive) in the user's
            text items of that turn.
    """

    def __init__(self, replies: Sequence[str] = (), calls: Mapping[int | str, FunctionCall] | None = None) -> None:
        self.replies = list(replies)
        self.calls = dict(calls or {})

    def __call__(self, turn: Turn) -> Reply:
        """The reply to ``turn``."""
        if turn.tool_outputs:
            said = "; ".join(f"the {name} tool said {output}" for name, output in turn.tool_outputs)
            return Reply(text=f"Done: {said}.")
        call = self.calls.get(turn.number)
        text = " ".join(turn.user_texts).lower()
        for key, value in self.calls.items():
            if isinstance(key, str) and key.lower() in text:
                call = value
        if call is not None:
            return Reply(function_call=call)
        if turn.number <= len(self.replies):
            return Reply(text=self.replies[turn.number - 1])
        return Reply(text=f"This is reply number {turn.number} from the emulator.")


WAKE_WORD_REPLY = "Sure. By the way, Jarvis is my name, and hey Jarvis wakes me up."
"""A reply that says the wake word, to test that the device does not wake itself."""


@dataclass
class EmulatorOptions:
    """How the emulator behaves.

    Attributes:
        host: address to listen on (loopback).
        port: TCP port; 0 picks a free one (see ``Emulator.url``).
        api_key: if set, the only accepted bearer key (HTTP 401 otherwise); keys starting with ``sk-bad``
            are always accepted at the HTTP level and answered with an ``invalid_api_key`` error.
        strict: validate every event sent against the SDK's ``RealtimeServerEvent`` at runtime (failures go
            to ``Emulator.violations``).
        session_expires_s: after this long a connection gets ``session_expired`` and close 1001.
        reply_rate: how much faster than real time reply audio is streamed (< 1 trickles).
        chunk_ms: audio per ``response.output_audio.delta``.
        voice_engine: ``auto`` (flite, else espeak-ng, else a tone), ``flite``, ``espeak-ng`` or ``tone``.
        script: the model: turn in, reply out (default :class:`DefaultScript`).
        ping_interval_s: server pings (None: off).
        ping_timeout_s: pong deadline for server pings.
        faults: the fault knobs.
        secrets_port: serve ``POST /v1/realtime/client_secrets`` on this port (0 picks one; None: off).
    """

    host: str = "127.0.0.1"
    port: int = 0
    secrets_port: int | None = None
    api_key: str | None = None
    strict: bool = False
    session_expires_s: float = 3600.0
    reply_rate: float = 4.0
    chunk_ms: int = 100
    voice_engine: str = "auto"
    script: Script = field(default_factory=DefaultScript)
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    faults: Faults = field(default_factory=Faults)


@dataclass
class Truncation:
    """One ``conversation.item.truncate`` received: what was asked and what the emulator had sent."""

    item_id: str
    content_index: int
    audio_end_ms: int
    audio_sent_ms: int | None
    error: str | None


@dataclass
class Cancel:
    """One ``response.cancel`` received; ``response_id`` is the response it cancelled (None: none active)."""

    response_id: str | None
    requested_id: str | None


@dataclass
class ResponseRecord:
    """One response: its outcome and the assistant audio actually sent (samples at ``rate_hz``)."""

    id: str
    status: str = "in_progress"
    reason: str | None = None
    text: str = ""
    item_id: str | None = None
    audio_samples_sent: int = 0
    rate_hz: int = 24000
    function_call: FunctionCall | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """A schema problem: ``direction`` is ``client`` (an event received) or ``server`` (one sent)."""

    session: int
    direction: str
    problem: str
    event: Any

    def __str__(self) -> str:
        text = self.event if isinstance(self.event, str) else json.dumps(self.event)[:300]
        return f"session {self.session} {self.direction}: {self.problem}: {text}"


@dataclass
class SessionRecord:
    """Everything one connection did, for tests and logs.

    Attributes:
        index: position in ``Emulator.sessions``.
        path: request path with query.
        model: the ``model`` query parameter.
        headers: request headers (``Authorization`` removed).
        client_events: every client event received (audio payloads replaced by ``<N bytes>``).
        server_events: every event sent (audio payloads replaced likewise).
        items: the conversation: item id → item (no audio bytes), in order.
        user_audio: user audio per committed/created item, 24 kHz int16.
        truncations: every truncate request, with its outcome.
        cancels: every ``response.cancel``.
        responses: every response.
        close_code: the close code once the connection has closed (1006: dropped).
        pinned: the session of the ephemeral secret the connection used (None: an API key).
    """

    index: int
    path: str
    model: str
    headers: dict[str, str]
    client_events: list[dict[str, Any]] = field(default_factory=list)
    server_events: list[dict[str, Any]] = field(default_factory=list)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_audio: dict[str, NDArray[np.int16]] = field(default_factory=dict)
    truncations: list[Truncation] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    close_code: int | None = None
    pinned: dict[str, Any] | None = None
    _audio_runs: list[tuple[int, list[NDArray[np.int16]]]] = field(default_factory=list, repr=False)

    def add_audio(self, pcm: NDArray[np.int16], rate_hz: int) -> None:
        """Record appended input audio at its wire rate."""
        if not self._audio_runs or self._audio_runs[-1][0] != rate_hz:
            self._audio_runs.append((rate_hz, []))
        self._audio_runs[-1][1].append(pcm)

    def received_audio(self) -> NDArray[np.int16]:
        """All input audio appended on this connection, as 24 kHz int16."""
        from earshot.emulator.voice import RATE_HZ, resample

        parts = [resample(np.concatenate(chunks), rate, RATE_HZ) for rate, chunks in self._audio_runs if chunks]
        return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)

    def events_of(self, kind: str, direction: str = "server") -> list[dict[str, Any]]:
        """Recorded events of one type (``direction`` ``server`` or ``client``)."""
        events = self.server_events if direction == "server" else self.client_events
        return [e for e in events if e.get("type") == kind]
