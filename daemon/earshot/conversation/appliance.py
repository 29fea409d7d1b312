"""What the appliance does on its own: a timer's ring, and announcements (issue 19).

:class:`ApplianceSide` is part of :class:`~earshot.conversation.core.ConversationCore` (one state
machine, in a module of its own for length):

- the ring: :meth:`~ApplianceSide.ring_timer` plays one ring cue (whatever ``gate.earcons`` says) and
  sets :attr:`~ApplianceSide.ringing`; while IDLE and ringing, the core turns the wake word, the
  button and the user's speech into ``StopRing`` instead of an engagement;
- announcements (``earshot say``): a bounded queue, said one at a time when the phase is IDLE,
  through the engagement table's ``ANNOUNCE`` (the reply awaited with no turn of the user's) and an
  out-of-band response (:class:`~earshot.conversation.effects.Announce`);
- the stop phrase (``gate.stop_word``), listened for over a reply and a ring: it ends the reply (the
  engagement's cancel truncates it at what was heard) or the ring. Said over a reply, it usually set
  off a barge-in first: that turn is then the phrase itself, and it is discarded, not answered;
- the wake word's profile: several wake words can each name a ``realtime.profiles`` entry; a session
  of another profile is closed before the engagement opens its own.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from earshot import engage as eg
from earshot.audio.earcons import earcon
from earshot.config import profile_named
from earshot.conversation import effects as fx
from earshot.engage import Phase
from earshot.gate import gate as gt
from earshot.gate.bargein import DuplexMode

if TYPE_CHECKING:
    from earshot.config import Config
    from earshot.engage import Engagement

__all__ = ["MAX_ANNOUNCEMENTS", "MAX_ANNOUNCEMENT_CHARS", "Announcement", "ApplianceSide"]

logger = logging.getLogger("earshot.conversation.core")

MAX_ANNOUNCEMENTS = 8
"""Announcements waiting at most (``earshot say``)."""
MAX_ANNOUNCEMENT_CHARS = 1000
STOP_AFTER_BARGEIN_SAMPLES = 16000 * 16 // 10
"""A stop phrase heard within 1.6 s of a barge-in's onset is what set the barge-in off (the stop engine
hears at most 1.5 s from a little before where the user was heard: ``gate.STOP_RUN_MAX_MS``)."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """Something to say without a wake word; ``listen``: open the follow-up window after it."""

    text: str
    listen: bool = False


class ApplianceSide:
    """The ring and the announcements (see the module docstring)."""

    def __init__(self) -> None:
        self.ringing = False
        """A timer rings (the timer service says): the wake word, the button or speech over it stop it."""
        self._answering_ring = False  # the speech that stopped a ring: it asks nothing (until it ends)
        self._announcements: deque[Announcement] = deque()
        self._announcing: Announcement | None = None
        self._barged_at: int | None = None  # the onset of this engagement's last barge-in
        self.profile: str | None = None
        """The ``realtime.profiles`` entry the link's sessions use (None: ``realtime``'s own)."""

    if TYPE_CHECKING:  # what the core itself provides
        config: Config
        engagement: Engagement
        gate: gt.Gate
        bargein: Any | None
        over_sound: Any | None
        wake_guard: Any | None
        _ready_reported: bool

        @property
        def phase(self) -> Phase:
            """The engagement's phase."""

        def cancel(self, now: float, reason: str = "cancelled") -> None:
            """End the engagement now."""

        def _emit(self, effect: fx.Effect) -> None: ...
        def _mark(self, now: float, event: str, what: str, **data: str | int | float) -> None: ...
        def _run_engagement(self, now: float) -> None: ...
        def _follow(self, action: eg.Action, now: float) -> None: ...

    def announce(self, text: str, now: float, *, listen: bool = False, interrupt: bool = False) -> int:
        """Queue ``text`` to be said without a wake word (``earshot say``); its place in the queue (0: now).

        It waits for an engagement in progress to end, unless ``interrupt``; ``listen`` opens the
        follow-up window after it, so that it can be a question. Raises ValueError (said to the
        user) for an empty text or a full queue.
        """
        clean = " ".join(str(text).split())[:MAX_ANNOUNCEMENT_CHARS]
        if not clean:
            raise ValueError("nothing to say")
        if len(self._announcements) >= MAX_ANNOUNCEMENTS:
            raise ValueError(f"already {MAX_ANNOUNCEMENTS} announcements waiting")
        self._announcements.append(Announcement(clean, listen))
        place = len(self._announcements) - (1 if self.phase is Phase.IDLE else 0)
        if interrupt and self.phase is not Phase.IDLE:
            self.cancel(now, "interrupted by an announcement")
        self._next_announcement(now)
        return max(0, place)

    def _next_announcement(self, now: float) -> None:
        if self._announcing is not None or not self._announcements or self.phase is not Phase.IDLE:
            return
        announcement = self._announcements.popleft()
        if not self.engagement.announce(now):
            self._announcements.appendleft(announcement)
            return
        self._announcing = announcement
        self._ready_reported = False
        self._emit(fx.EngagementStarted("announcement"))
        self._mark(now, "announcing", f"announcement ({len(announcement.text)} characters)")
        self._run_engagement(now)
        if self.engagement.connected:
            self._emit(fx.Announce(announcement.text))

    def ring_timer(self, level_dbfs: float) -> None:
        """One ring of a timer (played whatever ``gate.earcons`` says: a timer is not a cue)."""
        self.ringing = True
        self._update_gate_suppression()
        self._emit(fx.PlayCue("earcon:timer", earcon("timer", level_dbfs=level_dbfs)))

    def ring_ended(self) -> None:
        """No timer rings any more (stopped, cancelled or unanswered)."""
        self.ringing = False
        self._update_gate_suppression()

    def stop_ring(self, now: float, by: str) -> None:
        """A ring answered from outside (``earshot stop``): the same way as the wake word or the button."""
        self._stop_ring(now, by)

    def _stop_ring(self, now: float, by: str) -> None:
        self.ringing = False
        self._update_gate_suppression()
        self._mark(now, "ring_stopped", f"timer ring stopped by {by}", by=by)
        self._emit(fx.StopRing(by))

    # ------------------------------------------------------------------ what the gate listens for

    def _update_gate_suppression(self) -> None:
        # Wakes matter in IDLE and FOLLOW_UP, and over playback unless the duplex is FULL (then the
        # barge-in detector decides alone and the wake-word engine would only burn CPU).
        self.gate.set_stop_listening(self._stop_phrase_matters())
        if self.phase is Phase.SPEAKING:
            full = self.bargein is not None and self.bargein.duplex.mode is DuplexMode.FULL
            self.gate.set_suppressed(full)
        else:
            self.gate.set_suppressed(self.phase not in (Phase.IDLE, Phase.FOLLOW_UP))

    def _stop_phrase_matters(self) -> bool:
        """The stop phrase would stop something: a reply, a ring, or the turn a barge-in just opened."""
        after_bargein = self._barged_at is not None and self.phase in (Phase.LISTENING, Phase.THINKING)
        return self.phase is Phase.SPEAKING or self.ringing or after_bargein

    def _hear_user_for_stop(self, position: int, *, over_sound: bool) -> None:
        """Tell the gate when the user is heard over the device's sound: its stop engine runs only then."""
        if not self.gate.stop_listening:
            return
        if (
            over_sound
            or (self.phase is Phase.SPEAKING and bool(getattr(self.bargein, "user_speaking", False)))
            or bool(getattr(self.over_sound, "user_speaking", False))
        ):
            self.gate.stop_user_heard(position)

    def _on_stop_word(self, ev: gt.StopWord, now: float) -> None:
        """The stop phrase: end the ring, or the reply (truncated at what was heard) and its engagement."""
        if self.wake_guard is not None and not self.wake_guard.accept(ev.position, ev.start_position):
            logger.info("stop word ignored: the device heard its own voice (%s)", self.wake_guard.last_reason)
            return
        if self.ringing and self.phase is Phase.IDLE:
            self._stop_ring(now, "stop word")
            return
        barged = self._barged_at
        after_bargein = (
            self.phase in (Phase.LISTENING, Phase.THINKING)
            and barged is not None
            and 0 <= ev.position - barged <= STOP_AFTER_BARGEIN_SAMPLES
        )
        if self.phase is not Phase.SPEAKING and not after_bargein:
            return  # the reply is over: "stop" is then just a word of the user's turn
        self._mark(
            now, "stop_word", f"stop word ({ev.engine}, score {ev.score:.2f}): the engagement ends", engine=ev.engine
        )
        self.cancel(now, "stop word")
        if after_bargein:
            # The barge-in's turn is the phrase itself: the server forgets it (and any answer to it).
            self._emit(fx.DiscardTurn())

    # ------------------------------------------------------------------ profiles

    def _wake_profile(self, word: int) -> str | None:
        """The profile wake word ``word`` names (0: ``gate.wakeword``'s own, ``i + 1``: ``also[i]``)."""
        ww = self.config.gate.wakeword
        if word <= 0 or word > len(ww.also):
            return ww.profile
        return ww.also[word - 1].profile

    def _choose_profile(self, now: float, name: str | None) -> None:
        """The engagement starting now uses profile ``name``: a session of another one is closed first."""
        if name == self.profile:
            return
        if self.phase is Phase.FOLLOW_UP:
            self.cancel(now, "another wake word")  # another person: a new engagement, not a follow-up
        if self.engagement.connected or self.engagement.connecting:
            self._follow(eg.CloseSession("another profile's wake word"), now)
        self.profile = name
        self._mark(now, "profile", f"profile {name or '(default)'}", profile=name or "")
        self._emit(fx.UseProfile(profile_named(self.config, name)))
