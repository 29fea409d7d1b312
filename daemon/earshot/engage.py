"""The engagement state machine: what the user of the appliance lives through (DESIGN.md).

::

    IDLE ──engage──► CONNECTING ──session ready──► LISTENING ──end of turn──► THINKING
      ▲                                              ▲    ▲                       │ reply audio starts
      │                                  barge-in    │    │ speech                ▼
      └──── follow-up window over ── FOLLOW_UP ◄─────┼────┴──── reply played ── SPEAKING
                                                     └────────────────────────────┘

Pure: every input takes ``now`` (monotonic seconds) and, where audio is concerned, a 16 kHz
capture position; outputs are :class:`Action` objects drained with :meth:`Engagement.actions`.
The caller sleeps until :meth:`Engagement.next_deadline` and then calls :meth:`Engagement.tick`.

Rules this machine keeps:

- No connection exists in IDLE unless it is being kept for ``realtime.idle_close_s`` after an
  engagement (so a quick second question does not pay the handshake again); then it is closed.
- Engaging opens the connection at once and starts the uplink at the engagement point minus the
  pre-roll; the caller buffers that audio until the session is ready, so nothing is clipped.
- While SPEAKING the uplink is paused: the server never hears the device's own voice. Barge-in
  resumes it from the speech onset minus the pre-roll.
- FOLLOW_UP listens locally without the wake word; the uplink restarts only when local speech
  starts (no billed audio for silence).
- A dropped connection keeps the phase and decides at once whether the next session gets the user's
  unanswered turn again (:class:`ReplayTurn`): yes unless the reply was already playing (a reply cut
  by the drop is not asked for again). The link holds that turn, and all said since, until told.

Transitions are a table (:mod:`earshot.engagetable`); a move the table does not list raises
:class:`InvalidTransition`, except inputs that are meaningless in a phase (e.g. ``end_of_turn`` while
IDLE), which the table marks as ignored so that late events from the network never crash the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from earshot.engagetable import TRANSITIONS, Input, Phase
from earshot.errors import InvalidTransition

__all__ = [
    "TRANSITIONS",
    "Action",
    "CloseSession",
    "CommitTurn",
    "EndEngagement",
    "Engagement",
    "EngagementSettings",
    "Input",
    "Interrupt",
    "OpenSession",
    "Phase",
    "PhaseChanged",
    "PlayEarcon",
    "ReplayTurn",
    "StartUplink",
    "StopUplink",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Action:
    """Base of everything the machine asks its caller to do."""


@dataclass(frozen=True, slots=True)
class OpenSession(Action):
    """Open the Realtime connection now (nothing is connected)."""


@dataclass(frozen=True, slots=True)
class CloseSession(Action):
    """Close the Realtime connection (idle long enough, or the engagement ended for good)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StartUplink(Action):
    """Send microphone audio from ``from_position`` (16 kHz capture index) on, in order.

    Audio before the session is ready is buffered by the caller and sent once it is.
    """

    from_position: int


@dataclass(frozen=True, slots=True)
class StopUplink(Action):
    """Stop sending microphone audio (send nothing: the server must not hear the device)."""


@dataclass(frozen=True, slots=True)
class ReplayTurn(Action):
    """The connection dropped: the next session gets the unanswered user turn again (``replay``), or not."""

    replay: bool


@dataclass(frozen=True, slots=True)
class CommitTurn(Action):
    """Local turn detection: commit the input buffer and ask for a response."""


@dataclass(frozen=True, slots=True)
class Interrupt(Action):
    """Barge-in: stop playback at once and truncate the reply at what was heard.

    Attributes:
        local: detected on the device (the server did not interrupt itself: cancel too).
    """

    local: bool


@dataclass(frozen=True, slots=True)
class PlayEarcon(Action):
    """Play a short generated sound: ``wake``, ``listening_end``, ``error``, ``offline``, ``resting``."""

    kind: str


@dataclass(frozen=True, slots=True)
class PhaseChanged(Action):
    """The phase changed (status line, hooks, metrics)."""

    old: Phase
    new: Phase
    reason: str


@dataclass(frozen=True, slots=True)
class EndEngagement(Action):
    """The engagement is over (for the journal summary)."""

    reason: str


@dataclass(frozen=True, slots=True)
class EngagementSettings:
    """The timing knobs of the machine, in seconds (from ``GateConfig`` / ``RealtimeConfig``)."""

    preroll_samples: int = 4800
    follow_up_s: float = 6.0
    no_speech_timeout_s: float = 8.0
    reply_timeout_s: float = 30.0
    connect_timeout_s: float = 15.0
    max_engagement_s: float = 300.0
    idle_close_s: float = 20.0
    local_turn_detection: bool = False


class Engagement:
    """The engagement state machine. See the module docstring for the rules."""

    def __init__(self, settings: EngagementSettings) -> None:
        self.settings = settings
        self.phase = Phase.IDLE
        self.connected = False
        """True while a session is ready (or being kept open after an engagement)."""
        self.connecting = False
        self.uplink = False
        self.turn_start_position: int | None = None
        """Where the current user turn's audio starts (for replay after a reconnect)."""
        self.engaged_at: float | None = None
        self.turns = 0
        self.barge_ins = 0
        self._phase_deadline: float | None = None
        self._close_deadline: float | None = None
        self._actions: list[Action] = []

    # ------------------------------------------------------------------ outputs

    def actions(self) -> list[Action]:
        """Return and clear the actions produced by the inputs so far."""
        out, self._actions = self._actions, []
        return out

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`tick` must be called, or None."""
        deadlines = [d for d in (self._phase_deadline, self._close_deadline, self._engagement_deadline()) if d]
        return min(deadlines) if deadlines else None

    @property
    def engaged(self) -> bool:
        """True between an engagement and its end."""
        return self.phase is not Phase.IDLE

    # ------------------------------------------------------------------ inputs

    def engage(self, now: float, position: int, source: str = "wake") -> None:
        """The wake word, a button, ``earshot engage`` or speech (vad mode) at ``position``."""
        old = self.phase
        if self._move(Input.ENGAGE, now, f"engaged by {source}") is None:
            return
        self._emit(PlayEarcon("wake"))
        start = max(0, position - self.settings.preroll_samples)
        if old is Phase.IDLE:
            self.engaged_at = now
            self.turns = 0
            self.barge_ins = 0
        self._start_turn(start)
        self._close_deadline = None
        if self.connected:
            # The session kept open after the last engagement is still there.
            if self.phase is Phase.CONNECTING:
                self._set_phase(Phase.LISTENING, now, "session already open")
        elif not self.connecting:
            self.connecting = True
            self._emit(OpenSession())

    def announce(self, now: float) -> bool:
        """An announcement (``earshot say``): no turn of the user's, its reply awaited (THINKING). False if busy."""
        if self._move(Input.ANNOUNCE, now, "announcement") is None:
            return False
        self.engaged_at = now
        self.turns = 0
        self.barge_ins = 0
        self._close_deadline = None
        if not self.connected and not self.connecting:
            self.connecting = True
            self._emit(OpenSession())
        return True

    def session_ready(self, now: float) -> None:
        """``session.updated`` arrived: the session is configured."""
        self.connected = True
        self.connecting = False
        if self._move(Input.SESSION_READY, now, "session ready") is None:
            if not self.engaged:
                self._close_deadline = now + self.settings.idle_close_s
            return

    def speech_started(self, now: float, position: int) -> None:
        """Speech began (local VAD, or the server's ``speech_started``) at ``position``."""
        old = self.phase
        if self._move(Input.SPEECH_STARTED, now, "user speaking") is None:
            return
        if old is Phase.FOLLOW_UP:
            self._start_turn(max(0, position - self.settings.preroll_samples))
        elif old is Phase.THINKING:
            # The user went on talking before the reply came: same turn continues.
            self.uplink = True
        self._phase_deadline = None

    def speech_ended(self, now: float) -> None:
        """Local VAD: speech stopped. Re-arms the no-speech timer while LISTENING."""
        if self.phase is Phase.LISTENING:
            self._phase_deadline = now + self.settings.no_speech_timeout_s

    def end_of_turn(self, now: float) -> None:
        """The user's turn ended (server ``committed``, or local end of turn)."""
        old = self.phase
        if self._move(Input.END_OF_TURN, now, "end of turn") is None or old is not Phase.LISTENING:
            return
        self.turns += 1
        if self.settings.local_turn_detection:
            self._emit(CommitTurn())
        self._emit(PlayEarcon("listening_end"))

    def reply_started(self, now: float) -> None:
        """The first sample of the reply reached the device."""
        if self._move(Input.REPLY_STARTED, now, "speaking") is None:
            return
        self._stop_uplink()

    def reply_played(self, now: float) -> None:
        """The reply has really been played out (and the response is done)."""
        if self._move(Input.REPLY_PLAYED, now, "reply played") is None:
            return
        self._stop_uplink()
        self.turn_start_position = None

    def response_done(self, now: float, *, had_audio: bool) -> None:
        """``response.done`` for a response that produced no audio (text, or a failure)."""
        if had_audio:
            return
        if self._move(Input.RESPONSE_DONE, now, "response without audio") is None:
            return
        self._stop_uplink()
        self.turn_start_position = None

    def barge_in(self, now: float, position: int, *, local: bool) -> None:
        """The user spoke over the reply; ``position`` is the speech onset."""
        if self._move(Input.BARGE_IN, now, "barge-in") is None:
            return
        # The user is talking now: the no-speech timer starts when they stop (speech_ended), not here.
        # Armed at the barge-in, it ended the engagement as "nobody spoke" 8 s into a long interruption
        # that the local VAD heard as one stretch of speech (the bench's streaming run).
        self._phase_deadline = None
        self.barge_ins += 1
        self._emit(Interrupt(local=local))
        self._start_turn(max(0, position - self.settings.preroll_samples))

    def cancel(self, now: float, reason: str = "cancelled") -> None:
        """``earshot cancel`` or a button: end the engagement now."""
        was_speaking = self.phase is Phase.SPEAKING
        if self._move(Input.CANCEL, now, reason) is None:
            return
        if was_speaking:
            self._emit(Interrupt(local=True))

    def connection_lost(self, now: float) -> None:
        """The connection dropped; the caller is reconnecting."""
        self.connected = False
        if not self.engaged:
            # The session kept open after an engagement dropped: nobody needs it, so no attempt to
            # reconnect is made while idle (a server that drops such sessions was retried for ever).
            self._close_deadline = None
            self.connecting = False
            self._emit(CloseSession("connection lost while idle"))
            return
        self.connecting = True
        # The user need not repeat themselves: what the server had not answered goes again. A reply
        # already playing answered it (SPEAKING plays out what arrived; it is not asked for again).
        self._emit(ReplayTurn(self.phase is not Phase.SPEAKING))
        self._move(Input.CONNECTION_LOST, now, "connection lost")

    def connection_closed(self) -> None:
        """The connection was closed on purpose (after :class:`CloseSession`)."""
        self.connected = False
        self.connecting = False
        self._close_deadline = None

    def offline(self, now: float, reason: str) -> None:
        """The service could not be reached for longer than the offline buffer: give up (and stop connecting)."""
        if self._move(Input.OFFLINE, now, reason) is None:
            return
        self._emit(PlayEarcon("offline"))

    def failed(self, now: float, reason: str) -> None:
        """A fatal error for this engagement (bad key, quota): end it with the error earcon (and stop connecting).

        The connection is over at once, engaged or not: a wake in the idle-close window connects afresh.
        """
        self.connected = False
        self.connecting = False
        self._close_deadline = None
        if self._move(Input.FAILED, now, reason) is None:
            return
        self._emit(PlayEarcon("error"))

    def tick(self, now: float) -> None:
        """Handle every deadline that has passed at ``now``."""
        engagement_deadline = self._engagement_deadline()
        if engagement_deadline is not None and now >= engagement_deadline:
            self._timeout(now, "engagement too long")
        if self._phase_deadline is not None and now >= self._phase_deadline:
            reason = {
                Phase.CONNECTING: "no session in time",
                Phase.LISTENING: "nobody spoke",
                Phase.THINKING: "no reply in time",
                Phase.FOLLOW_UP: "follow-up window over",
                Phase.SPEAKING: "reply stalled",
            }.get(self.phase, "timeout")
            self._timeout(now, reason)
        if self._close_deadline is not None and now >= self._close_deadline and not self.engaged:
            self._close_deadline = None
            if self.connected or self.connecting:
                self.connected = self.connecting = False
                self._emit(CloseSession("idle"))

    # ------------------------------------------------------------------ internals

    def _timeout(self, now: float, reason: str) -> None:
        old = self.phase
        was_speaking = old is Phase.SPEAKING
        if self._move(Input.TIMEOUT, now, reason) is None:
            return
        if was_speaking:
            self._emit(Interrupt(local=True))
        if old in (Phase.CONNECTING, Phase.THINKING):
            self._emit(PlayEarcon("error"))
        elif old is Phase.LISTENING:
            self._emit(PlayEarcon("listening_end"))

    def _engagement_deadline(self) -> float | None:
        if self.engaged_at is None or not self.engaged:
            return None
        return self.engaged_at + self.settings.max_engagement_s

    def _start_turn(self, from_position: int) -> None:
        self.turn_start_position = from_position
        self.uplink = True
        self._emit(StartUplink(from_position))

    def _stop_uplink(self) -> None:
        if self.uplink:
            self.uplink = False
            self._emit(StopUplink())

    def _move(self, inp: Input, now: float, reason: str) -> Phase | None:
        """Apply the table; return the new phase, or None when the input is ignored here."""
        key = (self.phase, inp)
        if key not in TRANSITIONS:
            raise InvalidTransition(f"{inp.value} is not allowed in {self.phase.name}")
        new = TRANSITIONS[key]
        if new is None:
            logger.debug("= %s ignores %s", self.phase.name, inp.value)
            return None
        self._set_phase(new, now, reason)
        return new

    def _set_phase(self, new: Phase, now: float, reason: str) -> None:
        old = self.phase
        self.phase = new
        s = self.settings
        self._phase_deadline = {
            Phase.CONNECTING: now + s.connect_timeout_s,
            Phase.LISTENING: now + s.no_speech_timeout_s,
            Phase.THINKING: now + s.reply_timeout_s,
            Phase.FOLLOW_UP: now + s.follow_up_s,
        }.get(new)
        if new is Phase.LISTENING and old is Phase.LISTENING and self._phase_deadline is not None:
            # Speech keeps the turn alive; the no-speech timer only guards silence.
            self._phase_deadline = None
        if new is Phase.FOLLOW_UP:
            self._stop_uplink()
        if new is Phase.IDLE:
            self._stop_uplink()
            self.turn_start_position = None
            self._close_deadline = now + s.idle_close_s if (self.connected or self.connecting) else None
            if self.connecting and not self.connected:
                # Still trying to connect for an engagement that is over: stop trying.
                self.connecting = False
                self._close_deadline = None
                self._emit(CloseSession("engagement over"))
            self._emit(EndEngagement(reason))
            self.engaged_at = None
        if old is not new:
            logger.debug("= %s -> %s (%s)", old.name, new.name, reason)
            self._emit(PhaseChanged(old, new, reason))

    def _emit(self, action: Action) -> None:
        self._actions.append(action)
