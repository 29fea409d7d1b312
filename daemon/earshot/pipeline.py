"""The conversation's executor: feeds the core, carries out what it asks, decides nothing.

:class:`Conversation` hands every input to :class:`~earshot.conversation.core.ConversationCore` with
the state only the edges know (``playback.active``), then carries out its
:mod:`~earshot.conversation.effects` in order against the link, the playback, the stats and the app's
callbacks. It keeps no state of its own: a phase check or a flag here would be a second owner of a
decision (issue 16).

It never awaits: every method is called on the event loop with ``now`` and returns at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio.backend import CAPTURE_CHUNK_SAMPLES
from earshot.audio.ledger import is_earcon
from earshot.config import Config
from earshot.conversation import effects as fx
from earshot.conversation.core import HOOK_FOR_PHASE, PHASE_STATUS, PLAYBACK_RATE_HZ, ConversationCore
from earshot.engage import Engagement, Phase
from earshot.gate import gate as gt

__all__ = ["HOOK_FOR_PHASE", "PHASE_STATUS", "Conversation"]

logger = logging.getLogger(__name__)


class Conversation:
    """Runs a :class:`ConversationCore` against the real parts. See the module docstring.

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
            wake hit and ``("turn", pcm16k, {turn})`` for a user turn.
        set_capture_latency: short capture periods (True) or long ones (False).
        cancel_tools: cancels the tool calls still running.
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
        set_capture_latency: Callable[[bool], None] | None = None,
        cancel_tools: Callable[[], None] | None = None,
        stop_ring: Callable[[str], None] | None = None,
    ) -> None:
        self.core = ConversationCore(
            config, gate=gate, echo=echo, bargein=bargein, wake_guard=wake_guard, tools=run_tool is not None
        )
        self.playback = playback
        self.link = link
        self.stats = stats
        self._on_phase = on_phase
        self._hook = on_hook
        self._run_tool = run_tool
        self._record = on_record
        self._set_capture_latency = set_capture_latency
        self._cancel_tools = cancel_tools
        self._stop_ring = stop_ring

    # ------------------------------------------------------------------ what the app reads

    @property
    def phase(self) -> Phase:
        """The current engagement phase."""
        return self.core.phase

    def busy(self) -> bool:
        """An exchange is in progress (the core decides; the playback says whether something plays)."""
        return self.core.busy(playback_active=self.playback.active)

    @property
    def engagement(self) -> Engagement:
        """The phase table (read-only use: deadlines, ``engaged``)."""
        return self.core.engagement

    @property
    def position(self) -> int:
        """The capture position (16 kHz samples) reached so far."""
        return self.core.position

    @property
    def echo(self) -> Any | None:
        """The echo canceller, or None."""
        return self.core.echo

    @property
    def sounding(self) -> bool:
        """The device is playing something (a reply, an earcon, a ring)."""
        return bool(self.playback.active)

    @property
    def bargein(self) -> Any | None:
        """The barge-in detector, or None."""
        return self.core.bargein

    @property
    def muted(self) -> bool:
        """The microphone is muted."""
        return self.core.muted

    @property
    def resting_reason(self) -> str | None:
        """Why no connection is made for now (a fatal-for-now error), or None."""
        return self.core.resting_reason

    @property
    def timeline(self) -> Any:
        """The recent lifecycle marks (loop time, what)."""
        return self.core.timeline

    @property
    def daily_cap_reached(self) -> Callable[[float], bool]:
        """Whether the daily connected-minutes cap is used up at ``now``."""
        return self.core.daily_cap_reached

    @daily_cap_reached.setter
    def daily_cap_reached(self, check: Callable[[float], bool]) -> None:
        self.core.daily_cap_reached = check

    # ------------------------------------------------------------------ inputs

    def on_capture(self, pcm: NDArray[np.int16], position: int, now: float) -> None:
        """Capture (16 kHz mono) at ``position``: one chunk, or a period of contiguous chunks.

        A period goes to the core whole while it is :meth:`~ConversationCore.batchable` (idle), else
        chunk by chunk, each one's effects carried out before the next (a barge-in's drop must be
        done before the next chunk asks whether playback is active).
        """
        if len(pcm) <= CAPTURE_CHUNK_SAMPLES:
            self.core.capture(pcm, position, now, playback_active=self.playback.active)
        elif self.core.batchable(playback_active=self.playback.active):
            self.core.capture_period(pcm, position, now)
        else:
            for i in range(0, len(pcm), CAPTURE_CHUNK_SAMPLES):
                self.core.capture(
                    pcm[i : i + CAPTURE_CHUNK_SAMPLES], position + i, now, playback_active=self.playback.active
                )
                self._carry_out(now)
            return
        self._carry_out(now)

    def on_link_event(self, ev: Any, now: float) -> None:
        """An event from the link: a session event, ``LinkDown`` or ``OfflineOverflow``."""
        self.core.link_event(ev, now, playback_active=self.playback.active)
        self._carry_out(now)

    def on_playback_event(self, ev: Any, now: float) -> None:
        """A ``PlaybackStarted`` / ``PlaybackFinished`` from Playback."""
        self.core.playback_event(ev, now)
        self._carry_out(now)

    def engage(self, now: float, position: int | None = None, *, source: str) -> bool:
        """Engage (wake word, button, ``earshot engage``). False when it cannot."""
        ok = self.core.engage(now, position, source=source)
        self._carry_out(now)
        return ok

    def cancel(self, now: float, reason: str = "cancelled") -> None:
        """End the engagement now (``earshot cancel``, button)."""
        self.core.cancel(now, reason)
        self._carry_out(now)

    def end_turn(self, now: float) -> None:
        """Push-to-talk released: the user's turn ends now."""
        self.core.end_turn(now)
        self._carry_out(now)

    def set_muted(self, muted: bool, now: float) -> None:
        """Privacy mute on or off (an engagement in progress ends)."""
        self.core.set_muted(muted, now)
        self._carry_out(now)

    def retry_now(self) -> None:
        """Forget a fatal-for-now pause (SIGHUP, a changed credential)."""
        self.core.retry_now()

    def play_earcon(self, kind: str, now: float = 0.0) -> None:
        """Play a cue now (``offline`` when the speaker returns after audio was lost to it)."""
        self.core.play_earcon(kind)
        self._carry_out(now)

    def announce(self, text: str, now: float, *, listen: bool = False, interrupt: bool = False) -> int:
        """``earshot say``: queue ``text`` to be said (see :meth:`ConversationCore.announce`)."""
        place = self.core.announce(text, now, listen=listen, interrupt=interrupt)
        self._carry_out(now)
        return place

    def ring_timer(self, level_dbfs: float, now: float = 0.0) -> None:
        """One ring of a timer (:class:`~earshot.timerservice.TimerService`)."""
        self.core.ring_timer(level_dbfs)
        self._carry_out(now)

    def stop_ring(self, now: float, by: str) -> None:
        """Answer a ringing timer from outside (``earshot stop``)."""
        self.core.stop_ring(now, by)
        self._carry_out(now)

    def ring_ended(self) -> None:
        """No timer rings any more."""
        self.core.ring_ended()

    @property
    def idle(self) -> bool:
        """Nobody is engaged and nothing plays: a due timer may ring."""
        return self.core.phase is Phase.IDLE and not self.playback.active

    def tick(self, now: float) -> None:
        """Run the deadlines (call at least at ``engagement.next_deadline()``)."""
        self.core.tick(now)
        self._carry_out(now)

    # ------------------------------------------------------------------ effects

    def _carry_out(self, now: float) -> None:
        for effect in self.core.effects():
            self._do(effect, now)

    def _do(self, effect: fx.Effect, now: float) -> None:
        stats = self.stats
        match effect:
            case fx.SendAudio(pcm=pcm):
                self.link.send_audio(pcm, now)
            case fx.FlushAudio():
                self.link.flush_audio(now)
            case fx.ReplayTurn(replay=replay):
                self.link.replay_turn(replay)
            case fx.Announce(text=text):
                self.link.announce(text, now)
            case fx.UseProfile(profile=profile):
                self.link.use_profile(profile)
            case fx.DiscardTurn():
                self.link.discard_turn()
            case fx.CommitAudio():
                self.link.commit_turn(now)
            case fx.OpenLink():
                self.link.open()
            case fx.CloseLink():
                self.link.close()
            case fx.RotateLink():
                self.link.rotate()
            case fx.Interrupt(local=local, reaction_ms=reaction_ms):
                self._interrupt(now, local=local, reaction_ms=reaction_ms)
            case fx.RunTool(call_id=call_id, name=name, arguments=arguments):
                if self._run_tool is not None:
                    self._run_tool(call_id, name, arguments)
            case fx.PlayReply(item_id=item_id, pcm=pcm, rate_hz=rate_hz):
                self.playback.play(item_id, pcm, rate_hz)
            case fx.PlayCue(key=key, pcm=pcm):
                self.playback.enqueue(key, pcm)
                self.playback.finish()
            case fx.FinishPlayback():
                self.playback.finish()
            case fx.StopPlayback():
                self.playback.stop()
            case fx.PhaseChanged(old=old, new=new, reason=reason):
                if self._on_phase is not None:
                    self._on_phase(old, new, reason)
            case fx.Hook(name=name, data=data):
                if self._hook is not None:
                    self._hook(name, data)
            case fx.CaptureLatency(low=low):
                if self._set_capture_latency is not None:
                    self._set_capture_latency(low)
            case fx.CancelTools():
                if self._cancel_tools is not None:
                    self._cancel_tools()
            case fx.StopRing(by=by):
                if self.core.phase is Phase.IDLE:
                    self.playback.stop()  # the ring cue playing now, at once (a ring only sounds while idle)
                if self._stop_ring is not None:
                    self._stop_ring(by)
            case fx.Record(kind=kind, pcm=pcm, info=info):
                if self._record is not None:
                    self._record(kind, pcm, info)
            case _ if stats is not None:
                self._count(stats, effect, now)

    def _count(self, stats: Any, effect: fx.Effect, now: float) -> None:
        match effect:
            case fx.Counted(what="wake"):
                stats.wake()
            case fx.Counted(what="turn"):
                stats.turn()
            case fx.Counted(what="reconnect"):
                stats.reconnect()
            case fx.Measured(what="session_ready", ms=ms):
                stats.session_ready(ms)
            case fx.Measured(what="reply_started", ms=ms):
                stats.reply_started(ms)
            case fx.ConnectionState(state=state):
                stats.set_connection(state, now, time.time())
            case fx.DuplexChanged(mode=mode):
                stats.set_duplex(mode)
            case fx.ErrorSeen(code=code, message=message):
                stats.error(code, message, time.time())
            case fx.EngagementStarted(trigger=trigger):
                stats.engagement_started(now, time.time(), trigger=trigger)
            case fx.EngagementEnded(reason=reason):
                stats.engagement_ended(now, reason=reason)
            case fx.Usage(tokens=tokens):
                stats.tokens.add(tokens)
            case fx.RateLimitsSeen(limits=limits):
                stats.tokens.rate_limits = limits

    def _interrupt(self, now: float, *, local: bool, reaction_ms: float | None) -> None:
        """Stop the speaker and tell the server how much of the reply was heard: the ledger's count."""
        heard = {k: v for k, v in self.playback.stop().items() if not is_earcon(k)}
        audio_end_ms = round(1000 * sum(heard.values()) / PLAYBACK_RATE_HZ)
        self.core.played_until_interrupt(now, audio_end_ms)
        if self.stats is not None:
            self.stats.bargein(reaction_ms)
            if heard:
                self.stats.truncate()
        self.link.interrupt(heard_samples=heard, local=local, now=now)
