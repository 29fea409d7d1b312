"""The capture thread's quiet-room rule (:class:`earshot.audio.quiet.QuietHold`): pure, no device."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from earshot.audio.quiet import QuietHold

PERIOD_S = 0.25
RATE = 16000


def _noise(dbfs: float, seed: int = 1, seconds: float = PERIOD_S) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    rms = 32768.0 * 10.0 ** (dbfs / 20.0)
    return np.clip(np.rint(rng.normal(0.0, rms, round(seconds * RATE))), -32768, 32767).astype(np.int16)


def _wakes(hold: QuietHold, periods: list[NDArray[np.int16]]) -> list[bool]:
    return [hold.period(p, PERIOD_S) for p in periods]


def test_a_quiet_room_wakes_the_loop_once_a_second() -> None:
    hold = QuietHold(hold_s=1.0)
    wakes = _wakes(hold, [_noise(-60.0, seed=k) for k in range(13)])
    # The first period sets the floor (and goes); then three are held and the fourth wakes the loop
    # for all four: a wake per second of audio, never more than a second late.
    assert wakes == [True, False, False, False, True, False, False, False, True, False, False, False, True]


def test_speech_goes_at_once_with_what_was_held() -> None:
    hold = QuietHold(hold_s=1.0)
    assert _wakes(hold, [_noise(-60.0, seed=k) for k in range(3)]) == [True, False, False]
    assert hold.held_s == 2 * PERIOD_S
    assert hold.period(_noise(-30.0, seed=9), PERIOD_S)  # a voice: no waiting
    assert hold.held_s == 0.0
    # Quiet again: held again, counted from the speech on.
    assert _wakes(hold, [_noise(-60.0, seed=20 + k) for k in range(4)]) == [False, False, False, True]


def test_a_period_a_little_over_the_floor_is_not_quiet() -> None:
    hold = QuietHold(margin_db=6.0)
    hold.period(_noise(-60.0), PERIOD_S)
    assert not hold.period(_noise(-57.0, seed=2), PERIOD_S)  # 3 dB over: the room's own variation
    assert hold.period(_noise(-50.0, seed=3), PERIOD_S)  # 10 dB over: someone is there


def test_a_loud_steady_room_is_never_held() -> None:
    """A TV at −40 dBFS is steady, so it becomes the floor, but it is over the ceiling: every period goes."""
    hold = QuietHold(ceiling_dbfs=-45.0)
    assert all(_wakes(hold, [_noise(-40.0, seed=k) for k in range(12)]))


def test_the_floor_drops_at_once_and_rises_slowly() -> None:
    hold = QuietHold(rise_db_per_s=1.0)
    hold.period(_noise(-50.0), PERIOD_S)
    assert hold.floor_dbfs is not None
    assert abs(hold.floor_dbfs + 50.0) < 0.5
    hold.period(_noise(-70.0, seed=2), PERIOD_S)
    assert abs(hold.floor_dbfs + 70.0) < 0.5  # quieter: followed at once
    for k in range(8):  # two seconds of a louder room
        hold.period(_noise(-40.0, seed=3 + k), PERIOD_S)
    assert abs(hold.floor_dbfs - (-70.0 + 2.0)) < 0.5  # 1 dB a second: speech never becomes the floor


def test_digital_silence_is_quiet() -> None:
    hold = QuietHold(hold_s=1.0)
    zeros = np.zeros(round(PERIOD_S * RATE), dtype=np.int16)
    assert _wakes(hold, [zeros] * 5) == [True, False, False, False, True]


def test_the_level_is_the_rms_level_of_the_period() -> None:
    """The thread's cheap level is :func:`rms_dbfs` (within a hundredth of a dB), silence included."""
    from earshot.audio.dsp import SILENCE_DBFS, rms_dbfs

    square = np.where(np.arange(4000) % 40 < 20, 32767, -32768).astype(np.int16)
    for pcm in (_noise(-60.0), _noise(-20.0, seed=3), square, np.zeros(4000, dtype=np.int16)):
        hold = QuietHold()
        hold.period(pcm, PERIOD_S)
        assert hold.floor_dbfs is not None
        assert abs(hold.floor_dbfs - rms_dbfs(pcm)) < 0.01
    hold = QuietHold()
    hold.period(np.zeros(0, dtype=np.int16), PERIOD_S)
    assert hold.floor_dbfs == SILENCE_DBFS
