"""The conversation core: every decision that depends on the phase, in one sans-I/O object.

After h11's rule: one state machine decides everything. :class:`ConversationCore` takes

- capture chunks (16 kHz, with their positions), which it runs through the echo canceller, the uplink
  guard, the gate and the barge-in detectors;
- the link's events (session events, :class:`~earshot.realtime.linkevents.LinkDown`,
  :class:`~earshot.realtime.linkevents.OfflineOverflow`);
- the playback's events (first sample heard, reply played out);
- the user's commands (engage, cancel, end of turn, mute) and the clock (:meth:`tick`),

each with ``now`` (monotonic seconds) and, for what the caller owns, its state as an argument
(``playback_active``). It returns :mod:`~earshot.conversation.effects` through :meth:`effects`,
which :class:`~earshot.pipeline.Conversation` carries out and nothing else.

The link's and the playback's events are handled in :mod:`.replyside`, a timer's ring and the
announcements in :mod:`.appliance` (parts of this class, in modules of their own for length). The
phase table itself is :class:`~earshot.engage.Engagement`, which only this core drives; the rule that
the server never hears the device is :class:`~earshot.uplink.UplinkGuard`, which only this core
feeds. Pure: no asyncio, threads, processes or sockets; tested without an event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot import engage as eg
from earshot.audio.backend import CAPTURE_CHUNK_SAMPLES, CAPTURE_RATE_HZ, CaptureChunk
from earshot.audio.earcons import earcon
from earshot.config import Config
from earshot.conversation import effects as fx
from earshot.conversation.appliance import ApplianceSide
from earshot.conversation.front import AudioFront
from earshot.conversation.replyside import ReplySide
from earshot.engage import Engagement, EngagementSettings, Phase
from earshot.gate import gate as gt

__all__ = ["CAPTURE_RATE_HZ", "HOOK_FOR_PHASE", "PHASE_STATUS", "PLAYBACK_RATE_HZ", "ConversationCore"]

logger = logging.getLogger(__name__)


PLAYBACK_RATE_HZ = 24000
_TIMELINE = 400

PHASE_STATUS = {
    Phase.IDLE: "Idle: listening for the wake word",
    Phase.CONNECTING: "Woken: connecting to the assistant",
    Phase.LISTENING: "Listening to the user",
    Phase.THINKING: "Thinking: waiting for the reply",
    Phase.SPEAKING: "Speaking the reply",
    Phase.FOLLOW_UP: "Listening for a follow-up",
}
HOOK_FOR_PHASE = {
    Phase.IDLE: "idle",
    Phase.CONNECTING: "wake",
    Phase.LISTENING: "listening",
    Phase.THINKING: "thinking",
    Phase.SPEAKING: "speaking",
    Phase.FOLLOW_UP: "listening",
}


class ConversationCore(ReplySide, ApplianceSide):
    """Decides the conversation. See the module docstring.

    Args:
        config: the whole configuration.
        gate: the listening gate.
        echo: the echo canceller, or None.
        bargein: the barge-in detector used over a reply, or None (no barge-in).
        wake_guard: rejects wakes explained by the device's own voice, or None.
        tools: whether tool calls can be run (a tool call's response then has no audio of its own).
    """

    def __init__(
        self,
        config: Config,
        *,
        gate: gt.Gate,
        echo: Any | None = None,
        bargein: Any | None = None,
        wake_guard: Any | None = None,
        tools: bool = True,
    ) -> None:
        self.config = config
        self.gate = gate
        self.echo = echo
        self.bargein = bargein
        self.wake_guard = wake_guard
        self._tools = tools
        self._recording = config.recordings.enabled
        self.daily_cap_reached: Callable[[float], bool] = lambda now: False
        """Whether the daily connected-minutes cap is used up at ``now`` (the app keeps that count)."""
        rt = config.realtime
        preroll = config.gate.preroll_ms * CAPTURE_RATE_HZ // 1000
        self.engagement = Engagement(
            EngagementSettings(
                preroll_samples=preroll,
                follow_up_s=config.gate.follow_up_s,
                no_speech_timeout_s=config.gate.no_speech_timeout_s,
                reply_timeout_s=rt.reply_timeout_s,
                connect_timeout_s=rt.reconnect.offline_buffer_s + rt.open_timeout_s,
                max_engagement_s=config.gate.max_engagement_s,
                idle_close_s=rt.idle_close_s,
                local_turn_detection=rt.turn_detection.type == "none",
            )
        )
        self.front = AudioFront(config, echo=echo, wake_guard=wake_guard, detect_over_sound=bargein is not None)
        """The canceller, the pre-roll ring, the uplink guard and the uplink pump (:mod:`.front`)."""
        self.ring = self.front.ring
        self.uplink_guard = self.front.uplink_guard
        self.over_sound = self.front.over_sound
        self.wire_rate_hz = self.front.wire_rate_hz
        self._position = 0
        self.muted = False
        ApplianceSide.__init__(self)  # a timer's ring, the announcements
        ReplySide.__init__(self)  # the response in flight, the session's readiness, a pause after a fatal error
        self._bargein_onset: int | None = None
        self.connection: str = "disconnected"
        """What the core last told the counters of the connection (``connecting`` … ``resting``)."""
        self.timeline: deque[tuple[float, str]] = deque(maxlen=_TIMELINE)
        """The recent lifecycle marks (loop time, what), for status, tests and the demo."""
        self._duplex_mode: str | None = None
        self._effects: list[fx.Effect] = []
        self._update_gate_suppression()

    # ------------------------------------------------------------------ outputs

    def effects(self) -> list[fx.Effect]:
        """Return and clear what the inputs so far asked for, in order."""
        out, self._effects = self._effects, []
        return out

    @property
    def phase(self) -> Phase:
        """The current engagement phase."""
        return self.engagement.phase

    @property
    def position(self) -> int:
        """The capture position (16 kHz samples) reached so far."""
        return self._position

    def busy(self, *, playback_active: bool) -> bool:
        """An exchange is in progress: the user is being heard or answered, or something still plays."""
        return playback_active or self.phase in (Phase.CONNECTING, Phase.LISTENING, Phase.THINKING, Phase.SPEAKING)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next (monotonic), or None."""
        return self.engagement.next_deadline()

    # ------------------------------------------------------------------ capture

    def batchable(self, *, playback_active: bool) -> bool:
        """Whether :meth:`capture` may take a whole period (several chunks) at once.

        Only while nothing can happen between the chunks that a chunk would change: no engagement,
        nothing sounding or echoing (the canceller bypasses), the uplink guard settled, or muted. The
        gate still sees every sample, in order; its events come after the period, with their own
        positions (:meth:`capture_period`). Otherwise the executor hands the chunks over one by one.
        """
        if self.muted:
            return True
        return self.phase is Phase.IDLE and self.front.quiet(self._position, playback_active=playback_active)

    def capture(self, pcm: NDArray[np.int16], position: int, now: float, *, playback_active: bool) -> None:
        """One capture chunk (16 kHz mono) at ``position``; ``playback_active``: the device is sounding.

        A whole period goes to :meth:`capture_period` instead, while :meth:`batchable`.
        """
        if len(pcm) > CAPTURE_CHUNK_SAMPLES:
            raise ValueError(f"one chunk is {CAPTURE_CHUNK_SAMPLES} samples, got {len(pcm)}: see capture_period")
        self._position = position + len(pcm)
        if self.muted:
            self._tick(now)
            return
        user_turn = self.phase in (Phase.CONNECTING, Phase.LISTENING)
        near_end = (
            bool(getattr(self.bargein, "user_speaking", False))
            or bool(getattr(self.over_sound, "user_speaking", False))
            # the user was already talking when the device began to sound (their own turn)
            or (self.uplink_guard.user_speaking and user_turn)
        )
        cleaned, frame = self.front.clean(pcm, position, near_end=near_end, sounding=playback_active)
        guarded = self.front.guard(
            pcm,
            cleaned,
            frame,
            position,
            playback_active=playback_active,
            user_turn=user_turn,
            speaking=self.phase is Phase.SPEAKING,
        )
        if guarded.over_sound is not None:
            onset = guarded.over_sound.position
            self._mark(
                now,
                "speech_over_device",
                f"user speech over the device's sound at {onset / CAPTURE_RATE_HZ:.3f} s",
                onset_s=round(onset / CAPTURE_RATE_HZ, 3),
            )
            if self.ringing and self.phase is Phase.IDLE:
                self._stop_ring(now, "speech")
                self._answering_ring = True
        for onset in guarded.released:
            self._speech_started(onset, now)
        self._hear_user_for_stop(position, over_sound=guarded.over_sound is not None)
        self.gate.vad.set_second_stage(self._vad_second_stage())
        for ev in self.gate.process(CaptureChunk(cleaned, position)):
            self._on_gate_event(ev, now)
        bargein = self.bargein
        if self.phase is Phase.SPEAKING and bargein is not None and bargein.armed:
            hit = bargein.process(cleaned, pcm, frame, position)
            self._duplex(bargein.duplex.mode.value)  # it follows the echo measured during the reply
            self._update_gate_suppression()
            if hit is not None:
                self._barge_in(now, hit.position, local=True)
        self._pump_uplink(force=False)
        self._tick(now)

    def _vad_second_stage(self) -> bool:
        """Whether the gate's VAD needs Silero for this chunk (see :meth:`earshot.gate.vad.Vad.set_second_stage`).

        Not over a reply while the uplink guard holds its echo and nothing listens for a word (FULL
        duplex): the VAD's speech there is held and judged after the sound ends (with Silero again),
        the barge-in detector judges the user with its own webrtcvad on the cleaned signal, and no
        VAD event moves a speaking conversation. It stays on for a stretch the user was already
        talking into (their speech's end there decides what of it goes up), wherever the VAD's start
        would wake the wake-word or stop engine, and outside replies: in LISTENING the VAD's own end of
        turn ends the user's turn (local turn detection), and an announcement taken for speech there
        ended a turn nobody had spoken (tests/conversation/test_core.py).
        """
        guard = self.uplink_guard
        if self.phase is not Phase.SPEAKING or not guard.holding or guard.users_stretch:
            return True
        return not self.gate.suppressed or self.gate.stop_listening

    def capture_period(self, pcm: NDArray[np.int16], position: int, now: float) -> None:
        """A period of contiguous chunks, taken in one call; only while :meth:`batchable` (the caller asks).

        What the chunk path does, once for all of it: an idle device costs a call a period, not ten.
        The canceller only counts the chunks (it bypasses), the wake guard needs no idle chunks (it
        judges only chunks with playback in them), the uplink guard has nothing held, and no barge-in
        detector runs outside SPEAKING.
        """
        self._position = position + len(pcm)
        if self.muted:
            self._tick(now)
            return
        self.front.pass_period(pcm, position)
        self.gate.vad.set_second_stage(True)  # nothing is held in a quiet period
        for ev in self.gate.process(CaptureChunk(pcm, position)):
            self._on_gate_event(ev, now)
        self._pump_uplink(force=False)
        self._tick(now)

    def _on_gate_event(self, ev: gt.GateEvent, now: float) -> None:
        if isinstance(ev, gt.SpeechStarted):
            if self.uplink_guard.speech_started(ev.position):
                self._speech_started(ev.position, now)
            # else: inside the device's own sound, held until it is known to be the user's
        elif isinstance(ev, gt.SpeechEnded):
            self._answering_ring = False
            if self.uplink_guard.speech_ended(ev.position) and self.phase is Phase.LISTENING:
                self.engagement.speech_ended(now)
                self._run_engagement(now)
        elif isinstance(ev, gt.Wake):
            self._on_wake(ev, now)
        elif isinstance(ev, gt.StopWord):
            self._on_stop_word(ev, now)
        elif self.phase is Phase.LISTENING and self.engagement.settings.local_turn_detection:
            self._end_of_turn(now)  # a gt.EndOfTurn: local turn detection ends the turn

    def _on_wake(self, ev: gt.Wake, now: float) -> None:
        self._emit(fx.Counted("wake"))
        if self.wake_guard is not None and not self.wake_guard.accept(ev.position, ev.start_position):
            logger.info("wake ignored: the device heard its own voice (%s)", self.wake_guard.last_reason)
            return
        if self.ringing and self.phase is Phase.IDLE:
            self._stop_ring(now, "wake word")  # the answer to a ring, not a question
            return
        if self.phase is Phase.SPEAKING:
            self._barge_in(now, ev.start_position, local=True)  # gated duplex: the wake word interrupts
        elif self.config.gate.mode == "wakeword" and self.phase in (Phase.IDLE, Phase.FOLLOW_UP):
            logger.info("wake word (%s, score %.2f)", ev.engine, ev.score)
            self._emit(fx.Hook("wake", {"engine": ev.engine, "score": round(float(ev.score), 3)}))
            if self._recording:
                info = {"engine": ev.engine, "score": float(ev.score)}
                self._emit(fx.Record("wake", self.ring.since(ev.start_position), info))
            self.engage(now, ev.start_position, source=f"wake word ({ev.engine})", profile=self._wake_profile(ev.word))

    def _speech_started(self, position: int, now: float) -> None:
        """Speech of the user's (local VAD, or released by the uplink guard) at ``position``."""
        if self.ringing and self.phase is Phase.IDLE:
            self._stop_ring(now, "speech")  # an answer to the ring (between its cues), not a question
            self._answering_ring = True
        if self._answering_ring:
            return
        if self._announcing is not None and self.phase is Phase.THINKING:
            return  # the announcement comes first; with --listen the user answers it after
        if self.phase is Phase.IDLE and self.config.gate.mode == "vad":
            self.engage(now, position, source="speech")
        elif self.phase in (Phase.LISTENING, Phase.FOLLOW_UP, Phase.THINKING):
            self.engagement.speech_started(now, position)
            self._run_engagement(now)

    # ------------------------------------------------------------------ commands

    def engage(self, now: float, position: int | None = None, *, source: str, profile: str | None = None) -> bool:
        """Engage (wake word, button, ``earshot engage``, speech in vad mode). False when it cannot.

        ``profile``: the wake word's ``realtime.profiles`` entry (see ``ApplianceSide._choose_profile``).
        """
        if self.muted:
            return False
        if self.ringing and self.phase is Phase.IDLE and position is None:
            self._stop_ring(now, source)  # the button (or `earshot engage`) answers the ring
            return False
        if self.phase is Phase.IDLE or source.startswith("wake word"):
            self._choose_profile(now, profile)
        if self.phase is Phase.IDLE:
            if self._resting_until is not None and now < self._resting_until:
                logger.info("not connecting: %s", self.resting_reason)
                self._play_earcon("error")
                return False
            if self.daily_cap_reached(now):
                logger.info("daily connected-minutes cap reached: resting instead of connecting")
                self._play_earcon("resting")
                self._emit(fx.Hook("error", {"reason": "daily cap reached"}))
                return False
            self._ready_reported = False
            self._emit(fx.EngagementStarted(source))
        self._mark(now, "engaged", f"engaged by {source}", source=source)
        self.engagement.engage(now, self._position if position is None else position, source)
        self._run_engagement(now)
        return True

    def cancel(self, now: float, reason: str = "cancelled") -> None:
        """End the engagement now (``earshot cancel``, a button, mute)."""
        self.engagement.cancel(now, reason)
        self._run_engagement(now)

    def end_turn(self, now: float) -> None:
        """Push-to-talk released: the user's turn ends now (commit it, ask for the reply)."""
        if self.phase is not Phase.LISTENING:
            return
        self._end_of_turn(now)
        if not self.engagement.settings.local_turn_detection:
            # With server turn detection the engagement does not commit: the button does, here.
            self._pump_uplink()
            self._emit(fx.CommitAudio())

    def set_muted(self, muted: bool, now: float) -> None:
        """Privacy mute: nothing of the microphone reaches the gate or the uplink; an engagement ends."""
        self.muted = muted
        if muted and self.phase is not Phase.IDLE:
            self.cancel(now, "muted")

    def retry_now(self) -> None:
        """Forget a fatal-for-now pause (SIGHUP, a changed credential)."""
        self._resting_until = None
        self.resting_reason = None

    def play_earcon(self, kind: str) -> None:
        """Play a cue now (``offline`` when the speaker returns after audio was lost to it)."""
        self._play_earcon(kind)

    # ------------------------------------------------------------------ the turn

    def _barge_in(self, now: float, onset: int, *, local: bool) -> None:
        self._bargein_onset = onset
        self._barged_at = onset
        self.gate.stop_user_heard(onset)  # still SPEAKING: the interruption may be the stop phrase
        self.uplink_guard.user_speech(onset)
        self.uplink_guard.released()  # the barge-in itself starts the user's turn
        who = "local" if local else "server"
        onset_s = round(onset / CAPTURE_RATE_HZ, 3)
        self._mark(now, "bargein", f"barge-in ({who}) at {onset_s:.3f} s", source=who, onset_s=onset_s)
        self.engagement.barge_in(now, onset, local=local)
        self._run_engagement(now)

    def _end_of_turn(self, now: float) -> None:
        was_listening = self.phase is Phase.LISTENING
        turn_start = self.engagement.turn_start_position
        self.engagement.end_of_turn(now)
        if was_listening and turn_start is not None and self._recording:
            self._emit(fx.Record("turn", self.ring.since(turn_start), {"turn": self.engagement.turns}))
        if was_listening and self.phase is Phase.THINKING:
            self._turn_ended_at = now
            self._emit(fx.Counted("turn"))
        self._run_engagement(now)

    # ------------------------------------------------------------------ uplink

    def _pump_uplink(self, *, force: bool = True) -> None:
        # A commit, a flush or an end of turn pumps what is left at once; capture pumps in batches.
        if not self.engagement.uplink:
            return
        wire = self.front.pump(self._position, force=force)
        if wire is not None:
            self._emit(fx.SendAudio(wire))

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Run the deadlines that have passed (call at least at :meth:`next_deadline`)."""
        self._tick(now)

    def _tick(self, now: float) -> None:
        deadline = self.engagement.next_deadline()
        if deadline is not None and now >= deadline:
            self.engagement.tick(now)
            self._run_engagement(now)
        ready_at = self._session_ready_at
        if (
            ready_at is not None
            and now - ready_at >= self.config.realtime.rotate_after_s
            and self.phase in (Phase.IDLE, Phase.FOLLOW_UP)
            and self.engagement.connected
        ):
            # The server ends sessions at 60 minutes: replace this one now, while nobody is talking.
            self._session_ready_at = None
            self._mark(now, "session_rotating", "rotating the session before the server's 60-minute cap")
            self._emit(fx.RotateLink())

    # ------------------------------------------------------------------ the engagement's actions

    def _run_engagement(self, now: float) -> None:
        for action in self.engagement.actions():
            self._follow(action, now)

    def _follow(self, action: eg.Action, now: float) -> None:
        match action:
            case eg.OpenSession():
                self._connection("connecting")
                self._emit(fx.OpenLink())
            case eg.CloseSession(reason=reason):
                self._mark(now, "session_closed", f"session closed ({reason})", reason=reason)
                self._session_ready_at = None
                self._emit(fx.CloseLink(reason))
                self.engagement.connection_closed()
                if self.connection != "resting":
                    self._connection("disconnected")
            case eg.StartUplink(from_position=pos):
                self.front.start_uplink(pos)
            case eg.ReplayTurn(replay=replay):
                # The link holds the unanswered turn's audio (and all since) until told.
                if replay:
                    self._mark(now, "turn_replayed", "user turn sent again into the new session")
                self._emit(fx.ReplayTurn(replay))
            case eg.StopUplink():
                self._pump_uplink()
                self._emit(fx.FlushAudio())
            case eg.CommitTurn():
                self._pump_uplink()
                self._emit(fx.CommitAudio())
            case eg.Interrupt(local=local):
                self._interrupt(local=local)
            case eg.PlayEarcon(kind=kind):
                self._play_earcon(kind)
            case eg.PhaseChanged(old=old, new=new, reason=reason):
                self._update_gate_suppression()
                self._emit(fx.PhaseChanged(old, new, reason))
                if (old is Phase.IDLE) != (new is Phase.IDLE):
                    # Short capture periods only while engaged: wake-word latency is set by the engine,
                    # not the period; barge-in and the uplink need the short ones.
                    self._emit(fx.CaptureLatency(low=new is not Phase.IDLE))
                if new is Phase.IDLE and self._tools:
                    self._emit(fx.CancelTools())  # no tool runs outside an engagement: its answer has no listener
                if new is Phase.IDLE:
                    self._announcing = None
                    self._next_announcement(now)  # the next one waiting, once this engagement is over
            case eg.EndEngagement(reason=reason):
                self._barged_at = None
                self._mark(now, "engagement_ended", f"engagement ended ({reason})", reason=reason)
                if self.bargein is not None:
                    self.bargein.stop()
                self._emit(fx.EngagementEnded(reason))
            case _:  # pragma: no cover - every action is handled above
                raise AssertionError(f"unhandled action {action!r}")

    def _interrupt(self, *, local: bool) -> None:
        if self.bargein is not None:
            self.bargein.stop()
        reaction_ms = None
        if self._bargein_onset is not None:
            reaction_ms = 1000.0 * (self._position - self._bargein_onset) / CAPTURE_RATE_HZ
            self._bargein_onset = None  # a later cancel of another reply is no barge-in of this onset
        self._emit(fx.Interrupt(local=local, reaction_ms=reaction_ms))
        self._response_done = True
        self._reply_pending = False
        # The interrupted reply is dealt with: its response.done (cancelled) must not stop playback
        # again, which would cut the fade still playing (a click, and fewer samples heard than truncated).
        self._response_has_audio = False

    def played_until_interrupt(self, now: float, heard_ms: int) -> None:
        """The executor stopped the speaker for an ``Interrupt``: this much of the reply was heard."""
        self._mark(now, "truncate", f"playback stopped; truncate at {heard_ms} ms heard", heard_ms=heard_ms)

    def _play_earcon(self, kind: str) -> None:
        cues = self.config.gate.earcons
        if cues.enabled:
            self._emit(fx.PlayCue(f"earcon:{kind}", earcon(kind, level_dbfs=cues.volume_db)))

    def _duplex(self, mode: str) -> None:
        if mode != self._duplex_mode:
            self._duplex_mode = mode
            self._emit(fx.DuplexChanged(mode))

    def _connection(self, state: Any) -> None:
        self.connection = state
        self._emit(fx.ConnectionState(state))

    def _mark(self, now: float, event: str, what: str, **data: str | int | float) -> None:
        """One lifecycle event in the log and the timeline.

        A stable ``event`` name and its ``data`` for tools (journald's ``EVENT`` field; ``event``,
        ``data`` and ``at``, the capture time in seconds, in JSON lines), and ``what`` for people.
        """
        at = round(self._position / CAPTURE_RATE_HZ, 3)
        logger.info("[%.3f] %s", at, what, extra={"at": at, "mark": what, "event": event, "data": data})
        self.timeline.append((now, what))

    def _emit(self, effect: fx.Effect) -> None:
        self._effects.append(effect)
