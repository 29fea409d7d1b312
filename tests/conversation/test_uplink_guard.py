"""The uplink guard: what of the capture may go upstream while the device's own sound can be in it."""

from __future__ import annotations

import numpy as np

from earshot.uplink import UplinkGuard

N = 160  # one 10 ms chunk at 16 kHz
LEAD = 3 * N


def feed(guard: UplinkGuard, audible: list[bool], start: int = 0) -> int:
    pos = start
    for a in audible:
        guard.chunk(pos, N, audible=a)
        pos += N
    return pos


def test_a_stretch_of_the_device_sound_is_held_then_silenced() -> None:
    """Nothing of a stretch the device's sound can be in is decided until it ends; then it is silence."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N)
    feed(guard, [False] * 5)
    assert guard.decided_upto() == 5 * N
    end = feed(guard, [True] * 10, start=5 * N)
    assert guard.holding
    assert guard.decided_upto() == 5 * N  # held: the uplink waits
    feed(guard, [False], start=end)
    assert guard.decided_upto() == end + N
    pcm = np.full(end + N, 1000, dtype=np.int16)
    out = guard.apply(pcm, 0)
    assert (out[: 5 * N] == 1000).all()
    assert (out[5 * N : end] == 0).all()  # the device's sound: digital silence upstream
    assert (out[end:] == 1000).all()
    assert (pcm == 1000).all()  # the caller's copy is untouched
    assert guard.silenced_samples == 10 * N


def test_confirmed_user_speech_opens_the_stretch_from_its_lead() -> None:
    """Local detection of the user over the device's sound lets the cleaned signal through from the onset's lead."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N)
    feed(guard, [True] * 20)
    onset = 12 * N
    guard.user_speech(onset)
    assert guard.released() == [onset]
    assert not guard.holding
    end = feed(guard, [True] * 5, start=20 * N)
    assert guard.decided_upto() == end  # open: everything flows while the user talks over it
    out = guard.apply(np.full(end, 7, dtype=np.int16), 0)
    assert (out[: onset - LEAD] == 0).all()
    assert (out[onset - LEAD :] == 7).all()


def test_a_vad_start_inside_the_device_sound_is_held_and_dropped_with_its_end() -> None:
    """The device's own sound never starts a turn: a VAD start and end inside a held stretch both vanish."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N)
    feed(guard, [True] * 3)
    assert guard.speech_started(2 * N) is False
    assert guard.speech_ended(5 * N) is False
    feed(guard, [True] * 3 + [False], start=3 * N)
    assert guard.released() == []


def test_speech_still_heard_past_the_hangover_after_the_sound_ends_is_the_users() -> None:
    """A VAD start held in the stretch is released once the VAD still hears speech ``confirm_samples`` on."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    feed(guard, [True] * 4)
    assert guard.speech_started(3 * N) is False
    feed(guard, [True, False, False], start=4 * N)  # the stretch ends at 5 N
    assert guard.released() == [], "released inside the VAD's hangover"
    feed(guard, [False], start=7 * N)
    assert guard.released() == [3 * N]
    # Outside any stretch the VAD's events pass as they are.
    assert guard.speech_ended(9 * N) is True
    assert guard.speech_started(10 * N) is True


def test_a_start_the_echo_caused_ends_in_the_hangover_and_is_never_released() -> None:
    """The VAD fired on the device's residual and ends within the window: nobody's turn starts."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=5 * N)
    feed(guard, [True] * 4)
    assert guard.speech_started(2 * N) is False
    pos = feed(guard, [True, False, False], start=4 * N)
    assert guard.speech_ended(pos) is False, "the end of a start nobody saw must not pass either"
    feed(guard, [False] * 10, start=pos)
    assert guard.released() == []


def test_the_device_sounding_again_holds_a_start_waiting_for_confirmation() -> None:
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    feed(guard, [True] * 2)
    guard.speech_started(N)
    pos = feed(guard, [False, True, True, False, False], start=2 * N)
    assert guard.released() == []
    assert guard.speech_ended(pos) is False
    feed(guard, [False] * 6, start=pos)
    assert guard.released() == []


def test_silenced_spans_stay_bounded() -> None:
    """Spans older than the ring are forgotten, and never more than a fixed number are kept."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=10 * N)
    pos = 0
    for _ in range(1000):
        pos = feed(guard, [True, False], start=pos)
    assert len(guard._spans) <= 10
    assert guard.silenced_samples == 1000 * N


def _talking_into(guard: UplinkGuard, *, user_turn: bool = True) -> int:
    """The user's speech starts (released) at 2 N; the device sounds from 5 N to 15 N. Returns the stretch's end."""
    feed(guard, [False] * 2)
    assert guard.speech_started(2 * N) is True
    feed(guard, [False] * 3, start=2 * N)
    pos = 5 * N
    for _ in range(10):
        guard.chunk(pos, N, audible=True, user_turn=user_turn)
        pos += N
    return pos


def test_a_stretch_the_user_talks_into_is_theirs_when_they_go_on_past_it() -> None:
    """The engagement earcon over the user's first words: none of their words become silence."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    end = _talking_into(guard)
    assert guard.decided_upto() == 5 * N  # held while the device sounds
    pos = feed(guard, [False] * 2, start=end)
    assert guard.decided_upto() == 5 * N, "decided before the VAD's hangover could tell"
    pos = feed(guard, [False] * 2, start=pos)
    assert guard.decided_upto() == pos
    out = guard.apply(np.full(pos, 9, dtype=np.int16), 0)
    assert (out == 9).all()
    assert guard.silenced_samples == 0


def test_a_stretch_the_user_talks_into_is_theirs_up_to_where_their_speech_ends() -> None:
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    feed(guard, [False] * 2)
    guard.speech_started(2 * N)
    pos = feed(guard, [False] * 3, start=2 * N)
    for _ in range(4):
        guard.chunk(pos, N, audible=True, user_turn=True)
        pos += N
    assert guard.speech_ended(7 * N) is True  # the user's end: their turn may end on it
    for _ in range(6):
        guard.chunk(pos, N, audible=True, user_turn=True)
        pos += N
    assert guard.decided_upto() == 7 * N
    pos = feed(guard, [False], start=pos)
    out = guard.apply(np.full(pos, 9, dtype=np.int16), 0)
    assert (out[: 7 * N] == 9).all()
    assert (out[7 * N : 15 * N] == 0).all()  # after the user stopped, the device's sound is held and silenced
    assert (out[15 * N :] == 9).all()


def test_speech_heard_after_the_stretch_makes_all_of_it_the_users() -> None:
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=5 * N)
    end = _talking_into(guard)
    pos = feed(guard, [False] * 2, start=end)
    assert guard.speech_ended(end + N) is True  # speech frames after the stretch: no echo can be there
    assert guard.decided_upto() == pos
    assert (guard.apply(np.full(pos, 9, dtype=np.int16), 0) == 9).all()


def test_outside_the_users_turn_speech_in_its_hangover_never_carries_the_device_upstream() -> None:
    """The end-of-turn earcon plays in THINKING while the VAD is still in its hangover: it is held and silenced."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    end = _talking_into(guard, user_turn=False)
    pos = feed(guard, [False] * 6, start=end)
    out = guard.apply(np.full(pos, 9, dtype=np.int16), 0)
    assert (out[5 * N : end] == 0).all()
    assert (out[: 5 * N] == 9).all()


def test_the_device_sounding_again_keeps_a_talked_into_stretch_undecided() -> None:
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=5 * N)
    end = _talking_into(guard)
    pos = feed(guard, [False], start=end)
    guard.chunk(pos, N, audible=True, user_turn=True)
    assert guard.decided_upto() == 5 * N
    pos = feed(guard, [False] * 6, start=pos + N)  # the user goes on past the hangover
    assert guard.decided_upto() == pos
    assert (guard.apply(np.full(pos, 9, dtype=np.int16), 0) == 9).all(), "the resumed stretch lost their words"


def test_local_detection_in_a_stretch_the_user_talks_into_keeps_all_of_it() -> None:
    """The barge-in detector confirming the user late in the stretch must not silence their earlier words."""
    guard = UplinkGuard(lead_samples=LEAD, keep_samples=100 * N, confirm_samples=3 * N)
    end = _talking_into(guard)
    guard.user_speech(12 * N)
    assert guard.released() == [12 * N]
    assert guard.decided_upto() == end
    assert (guard.apply(np.full(end, 9, dtype=np.int16), 0) == 9).all()
