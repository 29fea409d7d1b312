"""The core's side of the stop phrase and of several wake words with profiles (issue 19, item 4).

The device of :mod:`tests.conversation.rig` (a speaker in a room, the canceller, the barge-in
detector); the gate's events that a real engine makes (:mod:`tests.gate.test_words`) are given to the
core as the gate gives them.
"""

from __future__ import annotations

from pathlib import Path

from earshot.config import StopWordConfig, parse_config
from earshot.conversation import effects as fx
from earshot.engage import Phase
from earshot.gate import gate as gt
from earshot.gate.wakeword import build_stop_word
from tests.conversation.rig import Device
from tests.conversation.test_core import _ring, _stops, drive, user

WAKEWORD = "gate:\n  mode: wakeword\n"


def device(yaml: str = WAKEWORD, *, canceller: bool = True) -> Device:
    """The rig's device, its gate listening for "stop" with pocketsphinx (``engine: pocketsphinx``).

    ``canceller=False``: no canceller, so no wake guard either, which would (rightly) refuse a stop
    word given to the core with no voice in the room.
    """
    stop = build_stop_word(StopWordConfig(engine="pocketsphinx"), Path("/nonexistent"))
    return Device(parse_config(yaml), stop_word=stop, canceller=canceller)


def _gate_event(dev: Device, ev: gt.GateEvent) -> None:
    dev.core._on_gate_event(ev, dev.now)
    dev._carry_out()


def _stop_word(dev: Device, start: int) -> None:
    _gate_event(dev, gt.StopWord(dev.position, 0.9, "template:stopword", start))


def _ended(dev: Device) -> list[str]:
    return [e.reason for e in dev.effects if isinstance(e, fx.EngagementEnded)]


def test_the_stop_phrase_over_a_reply_ends_it_with_a_truncate() -> None:
    dev = device(canceller=False)
    assert not dev.core.gate.stop_listening
    drive(dev, Phase.SPEAKING)
    assert dev.core.gate.stop_listening  # the reply is the device's own sound: "stop" is listened for
    assert dev.sent.interrupts == []
    _stop_word(dev, dev.position - 8000)
    assert len(dev.sent.interrupts) == 1  # stops the speaker; the executor truncates at what was heard
    assert dev.core.phase is Phase.IDLE
    assert _ended(dev) == ["stop word"]
    assert not any(isinstance(e, fx.DiscardTurn) for e in dev.effects)  # no turn of the user's to forget
    assert not dev.core.gate.stop_listening
    dev.run(1.0)
    assert dev.sent.commits == 1  # only the question's


def test_stop_said_over_the_reply_is_heard_through_the_canceller_and_asks_nothing() -> None:
    """The real path: the user's "stop" in the room over the reply, the canceller, the gate's engine.

    Whether or not the barge-in detector heard its onset first, the reply ends once, nothing is
    committed, and a turn the barge-in opened is discarded.
    """
    dev = device()
    drive(dev, Phase.SPEAKING)
    dev.run(2.5)
    dev.user, dev.user_at = user("stop"), dev.position
    for _ in range(dev.user.size // 160 + 100):
        dev.step()
        if dev.core.phase is Phase.IDLE:
            break
    assert _ended(dev) == ["stop word"], dev.core.timeline
    assert len(dev.sent.interrupts) == 1
    barged = any("barge-in" in what for _, what in dev.core.timeline)
    assert any(isinstance(e, fx.DiscardTurn) for e in dev.effects) == barged
    dev.run(2.0)
    assert dev.sent.commits == 1  # only the question's


def test_a_barge_ins_turn_that_is_the_stop_phrase_is_discarded_after_the_flush() -> None:
    dev = device(canceller=False)
    drive(dev, Phase.SPEAKING)
    onset = dev.position
    dev.core._barge_in(dev.now, onset, local=True)
    dev._carry_out()
    dev.run(0.4)
    assert dev.core.phase is Phase.LISTENING
    before = len(dev.effects)
    _stop_word(dev, onset + 800)
    assert dev.core.phase is Phase.IDLE
    assert _ended(dev) == ["stop word"]
    kinds = [type(e) for e in dev.effects[before:]]
    assert fx.DiscardTurn in kinds
    # Whatever the end of the uplink flushed goes before the discard (the clear then covers it).
    assert kinds.index(fx.DiscardTurn) > max((i for i, k in enumerate(kinds) if k is fx.FlushAudio), default=-1)
    assert len(dev.sent.interrupts) == 1


def test_stop_in_the_users_own_turn_is_just_a_word() -> None:
    dev = device()
    drive(dev, Phase.LISTENING)
    _stop_word(dev, dev.position - 4000)
    assert dev.core.phase is Phase.LISTENING
    drive_more = [e for e in dev.effects if isinstance(e, fx.DiscardTurn | fx.Interrupt)]
    assert drive_more == []
    # And a barge-in long ago does not make a later "stop" a discarded turn.
    dev2 = device(canceller=False)
    drive(dev2, Phase.SPEAKING)
    dev2.core._barge_in(dev2.now, dev2.position, local=True)
    dev2._carry_out()
    dev2.run(3.0)
    _stop_word(dev2, dev2.position - 4000)
    assert not any(isinstance(e, fx.DiscardTurn) for e in dev2.effects)


def test_the_stop_phrase_answers_a_ring() -> None:
    dev = device()
    _ring(dev, 2.0)
    assert dev.core.ringing
    assert dev.core.gate.stop_listening
    _stop_word(dev, dev.position - 4000)
    assert _stops(dev) == ["stop word"]
    assert not dev.core.ringing
    assert not dev.core.gate.stop_listening
    assert dev.core.phase is Phase.IDLE


PROFILES = """
gate:
  mode: wakeword
  wakeword:
    also:
      - model: okay_nabu
        profile: kids
realtime:
  idle_close_s: 20
  profiles:
    - name: kids
      instructions: Speak simply, for a child.
      voice: alloy
"""


def _wake(dev: Device, word: int) -> None:
    _gate_event(dev, gt.Wake(dev.position, 0.95, f"word{word}", dev.position - 8000, word=word))


def _link_effects(dev: Device, since: int) -> list[str]:
    out = []
    for e in dev.effects[since:]:
        if isinstance(e, fx.UseProfile):
            out.append(f"profile:{e.profile.name if e.profile is not None else None}")
        elif isinstance(e, fx.OpenLink | fx.CloseLink):
            out.append(type(e).__name__)
    return out


def test_each_wake_word_engages_with_its_profile_and_another_closes_the_session_first() -> None:
    dev = Device(parse_config(PROFILES))
    _wake(dev, 1)
    assert _link_effects(dev, 0) == ["profile:kids", "OpenLink"]
    kids = next(e for e in dev.effects if isinstance(e, fx.UseProfile))
    assert kids.profile is not None
    assert kids.profile.voice == "alloy"
    dev.session_ready()
    dev.command("cancel")
    assert dev.core.phase is Phase.IDLE
    # The kids' session is kept open (idle_close_s); the grown-up's wake word closes it, then opens its own.
    mark = len(dev.effects)
    _wake(dev, 0)
    assert _link_effects(dev, mark) == ["CloseLink", "profile:None", "OpenLink"]
    dev.session_ready()
    dev.command("cancel")
    # The same word again: the session kept open serves it.
    mark = len(dev.effects)
    _wake(dev, 0)
    assert _link_effects(dev, mark) == []
    assert dev.core.phase is Phase.LISTENING


def test_another_wake_word_in_the_follow_up_window_is_a_new_engagement() -> None:
    dev = Device(parse_config(PROFILES))
    drive(dev, Phase.FOLLOW_UP)
    dev.run(1.0)  # the reply's echo is over: the wake guard takes a wake word again
    assert dev.core.phase is Phase.FOLLOW_UP
    mark = len(dev.effects)
    _wake(dev, 1)
    assert _link_effects(dev, mark) == ["CloseLink", "profile:kids", "OpenLink"]
    assert _ended(dev)[-1] == "another wake word"
    assert dev.core.phase is Phase.CONNECTING
