"""Earcons are generated, click-free and at the configured level."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.audio.earcons import EARCON_KINDS, earcon


@pytest.mark.parametrize("kind", EARCON_KINDS)
def test_earcon_is_short_quiet_and_starts_and_ends_at_zero(kind: str) -> None:
    pcm = earcon(kind, level_dbfs=-20.0)
    assert pcm.dtype == np.int16
    assert 0.1 < len(pcm) / 24000 < 0.5
    peak = np.abs(pcm.astype(np.int32)).max()
    assert 0.8 * 32767 * 10 ** (-20 / 20) < peak <= 32767 * 10 ** (-20 / 20) + 1
    assert abs(int(pcm[0])) < 50
    assert abs(int(pcm[-1])) < 50


def test_earcons_differ() -> None:
    sounds = {k: earcon(k).tobytes() for k in EARCON_KINDS}
    assert len(set(sounds.values())) == len(EARCON_KINDS)


def test_unknown_earcon() -> None:
    with pytest.raises(KeyError):
        earcon("fanfare")
