"""The engagement machine, driven with explicit times and positions (no event loop)."""

from __future__ import annotations

import itertools

import pytest

from earshot import engage as eg
from earshot.engage import Engagement, EngagementSettings, Phase
from earshot.errors import InvalidTransition

S = EngagementSettings(
    preroll_samples=4800,
    follow_up_s=5.0,
    no_speech_timeout_s=8.0,
    reply_timeout_s=20.0,
    connect_timeout_s=15.0,
    max_engagement_s=300.0,
    idle_close_s=30.0,
)


def kinds(actions: list[eg.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def through_one_exchange(m: Engagement, t: float = 0.0) -> None:
    m.engage(t, 32000)
    m.session_ready(t + 0.3)
    m.speech_started(t + 0.4, 33000)
    m.end_of_turn(t + 2.0)
    m.reply_started(t + 2.5)
    m.reply_played(t + 5.0)


def test_every_phase_and_input_has_a_table_entry() -> None:
    """The table is total: a late event never finds a hole and crashes the daemon."""
    missing = [(p, i) for p, i in itertools.product(eg.Phase, eg.Input) if (p, i) not in eg.TRANSITIONS]
    assert missing == []


def test_wake_opens_the_session_and_starts_uplink_at_preroll() -> None:
    """Engaging opens the connection at once, uplink starts pre-roll before the wake."""
    m = Engagement(S)
    m.engage(10.0, 32000)
    acts = m.actions()
    assert m.phase is Phase.CONNECTING
    assert eg.OpenSession() in acts
    assert eg.StartUplink(32000 - 4800) in acts
    assert eg.PlayEarcon("wake") in acts
    assert eg.PhaseChanged(Phase.IDLE, Phase.CONNECTING, "engaged by wake") in acts


def test_preroll_never_goes_before_the_first_sample() -> None:
    m = Engagement(S)
    m.engage(0.0, 100)
    assert eg.StartUplink(0) in m.actions()


def test_full_exchange_walks_the_phases_and_stops_uplink_while_speaking() -> None:
    """IDLE → CONNECTING → LISTENING → THINKING → SPEAKING → FOLLOW_UP, uplink off while speaking."""
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.3)
    assert m.phase is Phase.LISTENING
    m.speech_started(0.4, 33000)
    m.end_of_turn(2.0)
    assert m.phase is Phase.THINKING
    assert eg.PlayEarcon("listening_end") in m.actions()
    m.reply_started(2.5)
    assert m.phase is Phase.SPEAKING
    assert eg.StopUplink() in m.actions()
    assert not m.uplink
    m.reply_played(5.0)
    assert m.phase is Phase.FOLLOW_UP
    assert m.turns == 1


def test_local_turn_detection_commits() -> None:
    m = Engagement(EngagementSettings(local_turn_detection=True))
    m.engage(0.0, 0)
    m.session_ready(0.1)
    m.actions()
    m.end_of_turn(1.0)
    assert eg.CommitTurn() in m.actions()


def test_follow_up_expiry_then_idle_close() -> None:
    """After the follow-up window the engagement ends; the session closes after idle_close_s."""
    m = Engagement(S)
    through_one_exchange(m)
    m.actions()
    assert m.next_deadline() == pytest.approx(10.0)
    m.tick(10.0)
    assert m.phase is Phase.IDLE
    acts = m.actions()
    assert any(isinstance(a, eg.EndEngagement) for a in acts)
    assert not any(isinstance(a, eg.CloseSession) for a in acts)
    assert m.next_deadline() == pytest.approx(40.0)
    m.tick(39.9)
    assert m.actions() == []
    m.tick(40.0)
    assert m.actions() == [eg.CloseSession("idle")]
    assert not m.connected
    assert m.next_deadline() is None


def test_wake_within_idle_close_reuses_the_session() -> None:
    """A second question while the session is kept open goes straight to LISTENING."""
    m = Engagement(S)
    through_one_exchange(m)
    m.tick(10.0)
    m.actions()
    m.engage(12.0, 200000)
    acts = m.actions()
    assert m.phase is Phase.LISTENING
    assert eg.OpenSession() not in acts
    assert eg.StartUplink(200000 - 4800) in acts
    assert m.next_deadline() == pytest.approx(12.0 + 8.0)


def test_follow_up_speech_restarts_uplink_from_preroll() -> None:
    """In FOLLOW_UP local speech resumes the conversation without the wake word."""
    m = Engagement(S)
    through_one_exchange(m)
    m.actions()
    m.speech_started(6.0, 100000)
    assert m.phase is Phase.LISTENING
    assert m.actions()[-1] == eg.StartUplink(100000 - 4800)


def test_barge_in_interrupts_and_resumes_uplink_from_onset() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.3)
    m.end_of_turn(2.0)
    m.reply_started(2.5)
    m.actions()
    m.barge_in(3.0, 90000, local=True)
    acts = m.actions()
    assert m.phase is Phase.LISTENING
    assert acts.index(eg.Interrupt(local=True)) < acts.index(eg.StartUplink(90000 - 4800))
    assert m.barge_ins == 1


def test_a_long_interruption_is_not_taken_for_silence() -> None:
    """The user is talking at a barge-in: the no-speech timer waits for them to stop, then guards the silence."""
    m = Engagement(S)
    through_one_exchange(m)
    m.speech_started(5.5, 180000)
    m.end_of_turn(7.0)
    m.reply_started(7.5)
    m.barge_in(8.0, 250000, local=False)
    m.tick(8.0 + S.no_speech_timeout_s + 5.0)  # one long stretch of speech: no speech_ended yet
    assert m.phase is Phase.LISTENING
    m.speech_ended(30.0)
    m.tick(30.0 + S.no_speech_timeout_s - 0.1)
    assert m.phase is Phase.LISTENING
    m.tick(30.0 + S.no_speech_timeout_s)
    assert m.phase is Phase.IDLE


def test_barge_in_outside_speaking_is_ignored() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.3)
    m.actions()
    m.barge_in(1.0, 40000, local=True)
    assert m.phase is Phase.LISTENING
    assert m.actions() == []


def test_drop_mid_turn_replays_the_turn_from_its_start() -> None:
    """A connection lost during the user's turn: the new session gets that turn again."""
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.3)
    m.end_of_turn(2.0)
    m.actions()
    m.connection_lost(2.2)
    assert m.phase is Phase.THINKING
    assert not m.connected
    assert eg.ReplayTurn(True) in m.actions()  # decided at the drop, before any new session exists
    m.session_ready(3.0)
    assert not any(isinstance(a, eg.ReplayTurn) for a in m.actions())


def test_drop_while_connecting_replays_what_was_said_so_far() -> None:
    """The question said while the first connection was refused is the user's turn: it goes again."""
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.actions()
    m.connection_lost(0.1)
    assert m.phase is Phase.CONNECTING
    assert eg.ReplayTurn(True) in m.actions()


def test_drop_while_speaking_does_not_replay() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.3)
    m.end_of_turn(2.0)
    m.reply_started(2.5)
    m.actions()
    m.connection_lost(3.0)
    assert eg.ReplayTurn(False) in m.actions()  # the reply was playing: the question is not asked again
    m.session_ready(4.0)
    assert not any(isinstance(a, eg.ReplayTurn) for a in m.actions())
    assert m.phase is Phase.SPEAKING
    m.reply_played(5.0)
    assert m.phase is Phase.FOLLOW_UP


def test_offline_ends_the_engagement_with_earcon_and_stops_connecting() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.actions()
    m.offline(15.0, "offline too long")
    acts = m.actions()
    assert m.phase is Phase.IDLE
    assert eg.PlayEarcon("offline") in acts
    assert eg.CloseSession("engagement over") in acts
    assert not m.connecting


def test_connect_timeout_gives_error_earcon_and_closes() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.actions()
    assert m.next_deadline() == pytest.approx(15.0)
    m.tick(15.0)
    acts = m.actions()
    assert m.phase is Phase.IDLE
    assert eg.PlayEarcon("error") in acts
    assert eg.CloseSession("engagement over") in acts


def test_no_speech_timeout_ends_listening() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.5)
    m.tick(8.4)
    assert m.phase is Phase.LISTENING
    m.tick(8.5)
    assert m.phase is Phase.IDLE


def test_speech_end_rearms_the_no_speech_timer() -> None:
    m = Engagement(S)
    m.engage(0.0, 32000)
    m.session_ready(0.5)
    m.speech_started(1.0, 40000)
    assert m.next_deadline() == pytest.approx(300.0)
    m.speech_ended(4.0)
    assert m.next_deadline() == pytest.approx(12.0)


def test_max_engagement_guardrail() -> None:
    m = Engagement(EngagementSettings(max_engagement_s=60.0, reply_timeout_s=1000.0))
    m.engage(0.0, 0)
    m.session_ready(0.2)
    m.speech_started(0.3, 100)
    m.end_of_turn(1.0)
    m.reply_started(1.2)
    m.actions()
    m.tick(60.0)
    acts = m.actions()
    assert m.phase is Phase.IDLE
    assert eg.Interrupt(local=True) in acts


def test_cancel_while_speaking_interrupts() -> None:
    m = Engagement(S)
    m.engage(0.0, 0)
    m.session_ready(0.2)
    m.end_of_turn(1.0)
    m.reply_started(1.2)
    m.actions()
    m.cancel(2.0)
    assert m.phase is Phase.IDLE
    assert eg.Interrupt(local=True) in m.actions()


def test_response_without_audio_goes_to_follow_up() -> None:
    m = Engagement(S)
    m.engage(0.0, 0)
    m.session_ready(0.2)
    m.end_of_turn(1.0)
    m.response_done(2.0, had_audio=True)
    assert m.phase is Phase.THINKING
    m.response_done(2.0, had_audio=False)
    assert m.phase is Phase.FOLLOW_UP


def test_late_events_in_idle_are_ignored() -> None:
    m = Engagement(S)
    for call in (m.end_of_turn, m.reply_started, m.reply_played):
        call(1.0)
    m.barge_in(1.0, 0, local=False)
    assert m.phase is Phase.IDLE
    assert m.actions() == []


def test_a_hole_in_the_table_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Misuse is loud: a transition the table lacks raises InvalidTransition."""
    monkeypatch.delitem(eg.TRANSITIONS, (Phase.IDLE, eg.Input.ENGAGE))
    with pytest.raises(InvalidTransition, match="engage is not allowed in IDLE"):
        Engagement(S).engage(0.0, 0)


def test_a_connection_lost_while_idle_is_closed_not_retried() -> None:
    """The session kept for idle_close_s dropping while idle is closed: no reconnecting while nobody is engaged."""
    m = Engagement(S)
    through_one_exchange(m)
    m.tick(10.0)
    assert m.phase is Phase.IDLE
    assert m.connected
    m.actions()
    m.connection_lost(12.0)
    assert m.actions() == [eg.CloseSession("connection lost while idle")]
    assert not m.connected
    assert not m.connecting
    assert m.next_deadline() is None
    # The next wake opens a fresh connection.
    m.engage(20.0, 64000)
    assert eg.OpenSession() in m.actions()


def test_a_fatal_error_while_idle_ends_the_connection_at_once() -> None:
    """invalid_api_key in the idle-close window: the session is gone now, and the next wake connects afresh."""
    m = Engagement(S)
    through_one_exchange(m)
    m.tick(10.0)
    m.actions()
    assert m.connected
    m.failed(12.0, "invalid_api_key")
    assert not m.connected
    assert not m.connecting
    assert m.next_deadline() is None
    m.engage(20.0, 64000)
    assert m.phase is Phase.CONNECTING
    assert eg.OpenSession() in m.actions()
