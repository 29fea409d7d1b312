"""The conversation pipeline: capture chunks, link events and playback events in; actions out.

:class:`Conversation` joins the parts. On every 10 ms capture chunk it runs the echo canceller,
the gate and (while the device speaks) the barge-in detector, drives the
:class:`~earshot.engage.Engagement` machine, and streams the uplink from the pre-roll ring to the
:class:`~earshot.realtime.connection.Link`. Session events become playback and machine inputs;
playback events (first sample heard, reply really played out) close the loop.

It never awaits: every method is called on the event loop with ``now`` and returns at once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot import engage as eg
from earshot.audio.backend import CaptureChunk
from earshot.audio.earcons import earcon
from earshot.audio.playback import PlaybackFinished, PlaybackStarted, is_earcon
from earshot.audio.resample import StreamResampler
from earshot.audio.ring import AudioRing
from earshot.config import Config
from earshot.engage import Engagement, EngagementSettings, Phase
from earshot.gate import gate as gt
from earshot.gate.bargein import BargeInDetector, DuplexMode
from earshot.realtime import session as rs
from earshot.realtime.connection import LinkDown, OfflineOverflow
from earshot.realtime.policy import Verdict
from earshot.uplink import UplinkGuard

__all__ = ["HOOK_FOR_PHASE", "PHASE_STATUS", "Conversation"]

logger = logging.getLogger(__name__)

CAPTURE_RATE_HZ = 16000
PLAYBACK_RATE_HZ = 24000
RING_S = 30.0
# Without a canceller nothing measures the echo tail: the device's sound is taken to linger this long.
_NO_CANCELLER_TAIL_S = 0.3

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


class Conversation:
    """Joins gate, engagement, link and playback. See the module docstring.

    Args:
        config: the whole configuration.
        gate: the listening gate.
        playback: the reply player.
        link: the Realtime link (connects only while engaged).
        echo: the echo canceller, or None.
        bargein: the barge-in detector (``BargeInDetector``), or None.
        wake_guard: rejects wakes explained by the device's own voice, or None.
        stats: the daemon's stats, or None.
        on_phase: called on every phase change.
        on_hook: fires an event hook (``wake``, ``error``, ``offline``…).
        run_tool: starts a tool call ``(call_id, name, arguments_json)``.
        on_record: receives audio worth a debug recording: ``("wake", pcm16k, {engine, score})`` for a
            wake hit and ``("turn", pcm16k, {turn})`` for a user turn (the app writes it when enabled).
    """

    def __init__(
        self,
        config: Config,
        *,
        gate: gt.Gate,
        playback: Any,
        link: Any,
        echo: Any | None = None,
        bargein: Any | None = None,
        wake_guard: Any | None = None,
        stats: Any | None = None,
        on_phase: Callable[[Phase, Phase, str], None] | None = None,
        on_hook: Callable[[str, dict[str, Any]], None] | None = None,
        run_tool: Callable[[str, str, str], None] | None = None,
        on_record: Callable[[str, NDArray[np.int16], dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self.gate = gate
        self.playback = playback
        self.link = link
        self.echo = echo
        self.bargein = bargein
        self.wake_guard = wake_guard
        self.stats = stats
        self._on_phase = on_phase
        self._hook = on_hook or (lambda name, data: None)
        self._run_tool = run_tool
        self._record = on_record
        rt = config.realtime
        self.engagement = Engagement(
            EngagementSettings(
                preroll_samples=config.gate.preroll_ms * CAPTURE_RATE_HZ // 1000,
                follow_up_s=config.gate.follow_up_s,
                no_speech_timeout_s=config.gate.no_speech_timeout_s,
                reply_timeout_s=rt.reply_timeout_s,
                connect_timeout_s=rt.reconnect.offline_buffer_s + rt.open_timeout_s,
                max_engagement_s=config.gate.max_engagement_s,
                idle_close_s=rt.idle_close_s,
                local_turn_detection=rt.turn_detection.type == "none",
            )
        )
        self.ring = AudioRing(int(RING_S * CAPTURE_RATE_HZ))
        self.uplink_guard = UplinkGuard(
            lead_samples=config.gate.preroll_ms * CAPTURE_RATE_HZ // 1000, keep_samples=self.ring.capacity_samples
        )
        """What of the capture may go upstream: never the device's own sound (:mod:`earshot.uplink`)."""
        self.over_sound = BargeInDetector(config.bargein) if bargein is not None else None
        """Local detection of the user over the device's sound outside a reply (earcons, the reply's tail)."""
        self._audible_until = -1  # without a canceller: capture position the device's sound may last to
        self.wire_rate_hz = 24000 if rt.format == "pcm16" else 8000
        self._up = StreamResampler(CAPTURE_RATE_HZ, self.wire_rate_hz)
        self._down = (
            StreamResampler(self.wire_rate_hz, PLAYBACK_RATE_HZ) if self.wire_rate_hz != PLAYBACK_RATE_HZ else None
        )
        self._cursor: int | None = None
        self._pump_samples = rt.append_ms * CAPTURE_RATE_HZ // 1000
        self._position = 0
        self.muted = False
        self._response_has_audio = False
        self._response_done = True
        self._reply_pending = False
        self._turn_ended_at: float | None = None
        self._bargein_onset: int | None = None
        self._resting_until: float | None = None
        self._session_ready_at: float | None = None
        self.resting_reason: str | None = None
        self.timeline: deque[tuple[float, str]] = deque(maxlen=400)
        """The recent lifecycle marks (loop time, what), for status, tests and the demo."""
        self.daily_cap_reached: Callable[[float], bool] = lambda now: False
        self._update_gate_suppression()

    # ------------------------------------------------------------------ capture path

    @property
    def phase(self) -> Phase:
        """The current engagement phase."""
        return self.engagement.phase

    @property
    def position(self) -> int:
        """The capture position (16 kHz samples) reached so far."""
        return self._position

    def on_capture(self, pcm: NDArray[np.int16], position: int, now: float) -> None:
        """One 10 ms capture chunk (16 kHz mono) at ``position``."""
        self._position = position + len(pcm)
        if self.muted:
            self._tick(now)
            return
        frame = None
        cleaned = pcm
        if self.echo is not None:
            near_end = bool(getattr(self.bargein, "user_speaking", False)) or bool(
                getattr(self.over_sound, "user_speaking", False)
            )
            cleaned = self.echo.process(pcm, near_end=near_end)
            frame = self.echo.frame
            if self.wake_guard is not None:
                self.wake_guard.observe(frame, position)
        self.ring.append(cleaned, position)
        self._guard_chunk(pcm, cleaned, frame, position, now)
        for ev in self.gate.process(CaptureChunk(cleaned, position)):
            self._on_gate_event(ev, now)
        if self.phase is Phase.SPEAKING and self.bargein is not None and self.bargein.armed:
            hit = self.bargein.process(cleaned, pcm, frame, position)
            if self.stats is not None:
                # The mode follows the echo measurement during the reply: keep status current.
                self.stats.set_duplex(self.bargein.duplex.mode.value)
            self._update_gate_suppression()
            if hit is not None:
                self._barge_in(now, hit.position, local=True)
        self._pump_uplink(now, force=False)
        self._tick(now)

    def _guard_chunk(
        self, raw: NDArray[np.int16], cleaned: NDArray[np.int16], frame: Any, position: int, now: float
    ) -> None:
        """Tell the uplink guard whether the device's own sound can be in this chunk, and judge it."""
        guard = self.uplink_guard
        if frame is not None:
            # The canceller's reference was loud within its filter span (the longest echo path it
            # models), or a new pairing is still being aligned: the echo can be in this chunk.
            audible = bool(frame.reference_active or frame.settling)
        else:
            if self.playback.active:
                self._audible_until = position + len(raw) + int(_NO_CANCELLER_TAIL_S * CAPTURE_RATE_HZ)
            audible = position < self._audible_until
        was = guard.audible
        guard.chunk(position, len(raw), audible=audible)
        over = self.over_sound
        if over is not None:
            if guard.holding and not was:
                erle = self.echo.erle_db if self.echo is not None else None
                erl = self.echo.erl_db if self.echo is not None else None
                over.start(position, erle_db=erle, erl_db=erl, canceller=self.echo is not None)
            elif not guard.audible and over.armed:
                over.stop()
            if guard.holding and over.armed and self.phase is not Phase.SPEAKING:
                hit = over.process(cleaned, raw, frame, position)
                if hit is not None:
                    self._mark(now, f"user speech over the device's sound at {hit.position / CAPTURE_RATE_HZ:.3f} s")
                    guard.user_speech(hit.position)
        for onset in guard.released():
            self._on_user_speech(onset, now)

    def _on_user_speech(self, position: int, now: float) -> None:
        """Speech the uplink guard decided is the user's (it started inside the device's sound)."""
        if self.phase is Phase.IDLE and self.config.gate.mode == "vad":
            self.engage(now, position, source="speech")
        elif self.phase in (Phase.LISTENING, Phase.FOLLOW_UP, Phase.THINKING):
            self.engagement.speech_started(now, position)
            self._run_actions(now)

    def _on_gate_event(self, ev: gt.GateEvent, now: float) -> None:
        mode = self.config.gate.mode
        phase = self.phase
        if isinstance(ev, gt.SpeechStarted) and not self.uplink_guard.speech_started(ev.position):
            return  # inside the device's own sound: held until it is known to be the user's
        if isinstance(ev, gt.SpeechEnded) and not self.uplink_guard.speech_ended(ev.position):
            return
        if isinstance(ev, gt.Wake):
            if self.stats is not None:
                self.stats.wake()
            if self.wake_guard is not None and not self.wake_guard.accept(ev.position, ev.start_position):
                logger.info("wake ignored: the device heard its own voice (%s)", self.wake_guard.last_reason)
                return
            if phase is Phase.SPEAKING:
                # Gated duplex: the wake word over playback interrupts.
                self._barge_in(now, ev.start_position, local=True)
            elif mode == "wakeword" and phase in (Phase.IDLE, Phase.FOLLOW_UP):
                logger.info("wake word (%s, score %.2f)", ev.engine, ev.score)
                self._hook("wake", {"engine": ev.engine, "score": round(float(ev.score), 3)})
                if self._record is not None:
                    self._record("wake", self.ring.since(ev.start_position), {"engine": ev.engine, "score": ev.score})
                self.engage(now, ev.start_position, source=f"wake word ({ev.engine})")
        elif isinstance(ev, gt.SpeechStarted):
            if phase is Phase.IDLE and mode == "vad":
                self.engage(now, ev.position, source="speech")
            elif phase in (Phase.LISTENING, Phase.FOLLOW_UP, Phase.THINKING):
                self.engagement.speech_started(now, ev.position)
                self._run_actions(now)
        elif isinstance(ev, gt.SpeechEnded):
            if phase is Phase.LISTENING:
                self.engagement.speech_ended(now)
                self._run_actions(now)
        elif phase is Phase.LISTENING and self.engagement.settings.local_turn_detection:
            self._end_of_turn(now)  # ev is a gt.EndOfTurn: local turn detection ends the turn

    def engage(self, now: float, position: int | None = None, *, source: str) -> bool:
        """Engage (wake word, button, ``earshot engage``, speech in vad mode). False when it cannot."""
        if self.muted:
            return False
        if self.phase is Phase.IDLE:
            if self._resting_until is not None and now < self._resting_until:
                logger.info("not connecting: %s", self.resting_reason)
                self._play_earcon("error")
                return False
            if self.daily_cap_reached(now):
                logger.info("daily connected-minutes cap reached: resting instead of connecting")
                self._play_earcon("resting")
                self._hook("error", {"reason": "daily cap reached"})
                return False
            if self.stats is not None:
                self.stats.engagement_started(now, time.time(), trigger=source)
        pos = self._position if position is None else position
        self._mark(now, f"engaged by {source}")
        self.engagement.engage(now, pos, source)
        self._run_actions(now)
        return True

    def cancel(self, now: float, reason: str = "cancelled") -> None:
        """End the engagement now (``earshot cancel``, button, mute)."""
        self.engagement.cancel(now, reason)
        self._run_actions(now)

    def end_turn(self, now: float) -> None:
        """Push-to-talk released: the user's turn ends now (commit it, ask for the reply)."""
        if self.phase is not Phase.LISTENING:
            return
        local = self.engagement.settings.local_turn_detection
        self._end_of_turn(now)
        if not local:
            # With server turn detection the commit is ours to send here (CommitTurn is for local).
            self._pump_uplink(now)
            self.link.commit_turn(now)

    def retry_now(self) -> None:
        """Forget a fatal-for-now pause (SIGHUP, a changed credential)."""
        self._resting_until = None
        self.resting_reason = None

    def _barge_in(self, now: float, onset: int, *, local: bool) -> None:
        self._bargein_onset = onset
        self.uplink_guard.user_speech(onset)
        self.uplink_guard.released()  # the barge-in itself starts the user's turn
        self._mark(now, f"barge-in ({'local' if local else 'server'}) at {onset / CAPTURE_RATE_HZ:.3f} s")
        self.engagement.barge_in(now, onset, local=local)
        self._run_actions(now)

    def _end_of_turn(self, now: float) -> None:
        was_listening = self.phase is Phase.LISTENING
        turn_start = self.engagement.turn_start_position
        self.engagement.end_of_turn(now)
        if was_listening and self._record is not None and turn_start is not None:
            self._record("turn", self.ring.since(turn_start), {"turn": self.engagement.turns})
        if was_listening and self.phase is Phase.THINKING:
            self._turn_ended_at = now
            if self.stats is not None:
                self.stats.turn()
        self._run_actions(now)

    # ------------------------------------------------------------------ uplink

    def _pump_uplink(self, now: float, *, force: bool = True) -> None:
        if not self.engagement.uplink or self._cursor is None:
            return
        # Only what the guard has decided goes up: a stretch the device's sound may be in waits until
        # it is known to be silence (it was all echo) or the user's (local detection confirmed them).
        upto = min(self._position, self.uplink_guard.decided_upto())
        start = max(self._cursor, self.ring.start_position or 0)
        if upto <= start or (not force and upto - start < self._pump_samples):
            # Per capture chunk, audio goes up in ``append_ms`` batches: the session sends no smaller
            # message anyway, and one resampler call per batch instead of per 10 ms chunk is a quarter
            # of the per-call cost (measured: the uplink resampler was a fifth of the engaged loop).
            # A commit, a flush or an end of turn pumps what is left at once.
            return
        pcm = self.uplink_guard.apply(self.ring.since(start)[: upto - start], start)
        self._cursor = upto
        wire = self._up.process(pcm)
        if len(wire):
            self.link.send_audio(wire, now)

    def _start_uplink(self, from_position: int) -> None:
        start = self.ring.start_position
        self._cursor = from_position if start is None else max(from_position, start)
        self._up.reset()

    # ------------------------------------------------------------------ link events

    def on_link_event(self, ev: Any, now: float) -> None:
        """An event from the link: a :mod:`~earshot.realtime.session` event, LinkDown or OfflineOverflow."""
        if isinstance(ev, LinkDown):
            self._on_link_down(ev, now)
        elif isinstance(ev, OfflineOverflow):
            self._mark(now, "offline for longer than the buffer")
            self._hook("offline", {"reason": "offline buffer exceeded"})
            self.engagement.offline(now, "offline")
        elif isinstance(ev, rs.SessionReady):
            self._on_session_ready(now)
        elif isinstance(ev, rs.PlayAudio):
            self._on_play_audio(ev, now)
        elif isinstance(ev, rs.ResponseStarted):
            self._response_has_audio = False
            self._response_done = False
        elif isinstance(ev, rs.ResponseDone):
            self._on_response_done(ev, now)
        elif isinstance(ev, rs.SpeechStarted):
            if self.phase is Phase.SPEAKING:
                self._barge_in(now, self._position, local=False)
            else:
                self._drop_unheard_reply(now)
                self.engagement.speech_started(now, self._position)
        elif isinstance(ev, rs.TurnCommitted):
            self._end_of_turn(now)
        elif isinstance(ev, rs.ToolCall) and self.phase is Phase.IDLE:
            # Nobody is engaged: running it would answer into a session nobody listens to (and run
            # local commands for a server while idle).
            logger.warning("tool call %s while idle: not run", ev.name[:64])
        elif isinstance(ev, rs.ToolCall):
            self._mark(now, f"tool call {ev.name}")
            self._reply_pending = True
            if self._run_tool is not None:
                self._run_tool(ev.call_id, ev.name, ev.arguments)
        elif isinstance(ev, rs.ServerError):
            self._on_server_error(ev, now)
        elif isinstance(ev, rs.Transcript) and ev.final:
            logger.debug("transcript (%s): %d characters", ev.role, len(ev.text))
        self._run_actions(now)

    def _on_session_ready(self, now: float) -> None:
        self._mark(now, "session ready")
        self._session_ready_at = now
        if self.stats is not None:
            self.stats.set_connection("connected", now, time.time())
            rec = self.stats.engagement
            if rec is not None and rec.wake_to_ready_ms is None:
                self.stats.session_ready(1000.0 * (now - rec.started_at))
        self.engagement.session_ready(now)

    def _on_play_audio(self, ev: rs.PlayAudio, now: float) -> None:
        if self.phase is Phase.IDLE:
            return
        pcm = self.playback.fit(ev.pcm, self.wire_rate_hz)
        if self._down is not None:
            pcm = self._down.process(pcm)
        if not self._response_has_audio:
            self._mark(now, "reply audio received")
        self._response_has_audio = True
        self._reply_pending = True
        self.playback.enqueue(ev.item_id, pcm)

    def _on_response_done(self, ev: rs.ResponseDone, now: float) -> None:
        self._response_done = True
        self._mark(now, f"response done ({ev.status})")
        if ev.status == "cancelled" and self.phase is not Phase.SPEAKING:
            # The server interrupted a reply nobody has heard yet (the user went on talking).
            self._drop_unheard_reply(now)
            return
        if self._response_has_audio:
            self.playback.finish()
            return
        if ev.status == "cancelled":
            return
        if self._run_tool is not None and self._reply_pending and not self._response_has_audio:
            # A tool call's response: the spoken answer comes in the next response.
            self._reply_pending = False
            return
        self.engagement.response_done(now, had_audio=False)

    def _drop_unheard_reply(self, now: float) -> None:
        if self.phase is not Phase.SPEAKING and self.playback.active and self._response_has_audio:
            self.playback.stop()
            self._response_has_audio = False
            self._mark(now, "unheard reply dropped")

    def _on_server_error(self, ev: rs.ServerError, now: float) -> None:
        if self.stats is not None:
            self.stats.error(ev.code or "server_error", ev.message, time.time())
        self._hook("error", {"code": ev.code, "message": ev.message})

    def _on_link_down(self, ev: LinkDown, now: float) -> None:
        if self.stats is not None:
            self.stats.error("LinkDown", ev.error, time.time())
        if ev.verdict is Verdict.FATAL_FOR_NOW:
            self._resting_until = now + self.config.realtime.reconnect.slow_retry_s
            self.resting_reason = ev.error
            if self.stats is not None:
                self.stats.set_connection("resting", now, time.time())
            self._mark(now, f"not connecting for now: {ev.error}")
            self._hook("error", {"reason": ev.error})
            self.engagement.failed(now, ev.error)
            # No engagement wants the link now: stop its retries (the next engagement, a SIGHUP or a
            # changed credential retries); left open it would connect sessions while idle.
            self.link.close()
            return
        if self.stats is not None:
            self.stats.set_connection("connecting", now, time.time())
            self.stats.reconnect()
        self._mark(now, f"connection lost: {ev.error}")
        self.engagement.connection_lost(now)
        if self.phase is Phase.SPEAKING and not self._response_done:
            # No more of this reply will come; play what arrived, then move on.
            self._response_done = True
            self.playback.finish()

    # ------------------------------------------------------------------ playback events

    def on_playback_event(self, ev: Any, now: float) -> None:
        """A :class:`PlaybackStarted` / :class:`PlaybackFinished` from Playback."""
        if isinstance(ev, PlaybackFinished):
            logger.debug("playback finished (%d reply items heard)", len(ev.heard))
        if isinstance(ev, PlaybackStarted) and not is_earcon(ev.key):
            if self.phase in (Phase.LISTENING, Phase.THINKING, Phase.FOLLOW_UP):
                self._mark(now, "reply started")
                if self.stats is not None and self._turn_ended_at is not None:
                    self.stats.reply_started(1000.0 * (now - self._turn_ended_at))
                self._turn_ended_at = None
                self.engagement.reply_started(now)
                if self.bargein is not None:
                    erle = self.echo.erle_db if self.echo is not None else None
                    erl = self.echo.erl_db if self.echo is not None else None
                    decision = self.bargein.start(
                        self._position, erle_db=erle, erl_db=erl, canceller=self.echo is not None
                    )
                    if self.stats is not None:
                        self.stats.set_duplex(decision.mode.value)
                    self._update_gate_suppression()
        elif isinstance(ev, PlaybackFinished) and ev.heard and self.phase is Phase.SPEAKING and self._response_done:
            self._mark(now, "reply played out")
            self._reply_pending = False
            # Nothing of this reply is left to drop: a later server speech start must not stop the next
            # engagement's wake earcon as if it were an unheard reply.
            self._response_has_audio = False
            if self.bargein is not None:
                self.bargein.stop()
            self.engagement.reply_played(now)
        self._run_actions(now)

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        """Run the machine's deadlines (call at least every 100 ms)."""
        self._tick(now)

    def _tick(self, now: float) -> None:
        deadline = self.engagement.next_deadline()
        if deadline is not None and now >= deadline:
            self.engagement.tick(now)
            self._run_actions(now)
        ready_at = self._session_ready_at
        if (
            ready_at is not None
            and now - ready_at >= self.config.realtime.rotate_after_s
            and self.phase in (Phase.IDLE, Phase.FOLLOW_UP)
            and self.engagement.connected
        ):
            # The server ends sessions at 60 minutes: replace this one now, while nobody is talking.
            self._session_ready_at = None
            self._mark(now, "rotating the session before the server's 60-minute cap")
            self.link.rotate()

    # ------------------------------------------------------------------ actions

    def _run_actions(self, now: float) -> None:
        for action in self.engagement.actions():
            self._do(action, now)

    def _do(self, action: eg.Action, now: float) -> None:
        match action:
            case eg.OpenSession():
                if self.stats is not None:
                    self.stats.set_connection("connecting", now, time.time())
                self.link.open()
            case eg.CloseSession(reason=reason):
                self._mark(now, f"session closed ({reason})")
                self._session_ready_at = None
                self.link.close()
                self.engagement.connection_closed()
                if self.stats is not None and self.stats.connection != "resting":
                    self.stats.set_connection("disconnected", now, time.time())
            case eg.StartUplink(from_position=pos):
                self._start_uplink(pos)
            case eg.ReplayTurn():
                # The link sends the interrupted turn's audio into the new session itself.
                self._mark(now, "user turn sent again into the new session")
            case eg.StopUplink():
                self._pump_uplink(now)
                self.link.flush_audio(now)
            case eg.CommitTurn():
                self._pump_uplink(now)
                self.link.commit_turn(now)
            case eg.Interrupt(local=local):
                self._interrupt(now, local=local)
            case eg.PlayEarcon(kind=kind):
                self._play_earcon(kind)
            case eg.PhaseChanged(old=old, new=new, reason=reason):
                self._update_gate_suppression()
                if self._on_phase is not None:
                    self._on_phase(old, new, reason)
            case eg.EndEngagement(reason=reason):
                self._mark(now, f"engagement ended ({reason})")
                if self.bargein is not None:
                    self.bargein.stop()
                if self.stats is not None:
                    self.stats.engagement_ended(now, reason=reason)
            case _:  # pragma: no cover - every action is handled above
                raise AssertionError(f"unhandled action {action!r}")

    def _interrupt(self, now: float, *, local: bool) -> None:
        heard = {k: v for k, v in self.playback.stop().items() if not is_earcon(k)}
        if self.bargein is not None:
            self.bargein.stop()
        audio_end_ms = round(1000 * sum(heard.values()) / PLAYBACK_RATE_HZ)
        self._mark(now, f"playback stopped; truncate at {audio_end_ms} ms heard")
        reaction_ms = None
        if self._bargein_onset is not None:
            reaction_ms = 1000.0 * (self._position - self._bargein_onset) / CAPTURE_RATE_HZ
        if self.stats is not None:
            self.stats.bargein(reaction_ms)
            if heard:
                self.stats.truncate()
        self.link.interrupt(heard_samples=heard, local=local, now=now)
        self._response_done = True
        self._reply_pending = False
        # The interrupted reply is dealt with: its response.done (cancelled) must not stop playback
        # again, which would cut the fade still playing (a click, and fewer samples heard than truncated).
        self._response_has_audio = False

    def _update_gate_suppression(self) -> None:
        # Wakes matter in IDLE and FOLLOW_UP, and over playback unless the duplex is FULL (then the
        # barge-in detector decides alone and the wake-word engine would only burn CPU).
        if self.phase is Phase.SPEAKING:
            full = self.bargein is not None and self.bargein.duplex.mode is DuplexMode.FULL
            self.gate.set_suppressed(full)
        else:
            self.gate.set_suppressed(self.phase not in (Phase.IDLE, Phase.FOLLOW_UP))

    def play_earcon(self, kind: str) -> None:
        """Play a cue now (e.g. ``offline`` when the speaker returns after audio was lost to it)."""
        self._play_earcon(kind)

    def _play_earcon(self, kind: str) -> None:
        if not self.config.gate.earcons.enabled:
            return
        self.playback.enqueue(f"earcon:{kind}", earcon(kind, level_dbfs=self.config.gate.earcons.volume_db))
        self.playback.finish()

    def _mark(self, now: float, what: str) -> None:
        """One lifecycle line in the log and the engagement's timeline (capture time in seconds too)."""
        t_audio = self._position / CAPTURE_RATE_HZ
        logger.info("[%.3f] %s", t_audio, what)
        self.timeline.append((now, what))
