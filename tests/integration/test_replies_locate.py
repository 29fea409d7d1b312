"""The test helper that finds a reply in the speaker timeline, on timelines built by hand.

Every integration test that says "the reply played whole" or "nothing else played" rests on
:func:`tests.integration.replies.locate`; a busy machine inserts underrun silence anywhere, the first
write of a reply included, and the helper must still find the reply rather than call it foreign audio.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from tests.integration.replies import RATE_HZ, locate


def _reply(seconds: float, seed: int = 1) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    pcm = (rng.standard_normal(round(seconds * RATE_HZ)) * 3000).astype(np.int16)
    pcm[: RATE_HZ // 100] = 0  # a reply starts with a little digital silence
    pcm[RATE_HZ // 2 : RATE_HZ // 2 + RATE_HZ // 50] = 0  # and has some between words
    return pcm


def _timeline(*parts: NDArray[np.int16]) -> NDArray[np.int16]:
    return np.concatenate(parts)


def _zeros(ms: float) -> NDArray[np.int16]:
    return np.zeros(round(ms * RATE_HZ / 1000), dtype=np.int16)


def test_a_reply_played_whole_is_found_whole() -> None:
    reply = _reply(1.0)
    played = locate(_timeline(_zeros(300), reply, _zeros(300)), reply)
    assert played is not None
    assert (played.start, played.played, played.gaps) == (7200, reply.size, 0)
    assert played.end == 7200 + reply.size


@pytest.mark.parametrize("gap_at_ms", [10.1, 10.5, 12, 20, 30, 45, 200, 505, 900])
def test_an_underrun_anywhere_in_the_reply_is_skipped(gap_at_ms: float) -> None:
    """Even within the first 50 ms, where the start used to be matched in one piece."""
    reply = _reply(1.0)
    cut = round(gap_at_ms * RATE_HZ / 1000)
    played = locate(_timeline(_zeros(300), reply[:cut], _zeros(40), reply[cut:], _zeros(300)), reply)
    assert played is not None, gap_at_ms
    assert played.start == 7200
    assert played.played == reply.size
    assert played.gaps == 960


def test_a_cut_reply_reports_what_played_and_its_fade() -> None:
    reply = _reply(1.0)
    cut = RATE_HZ // 2 + 1000
    fade = (reply[cut : cut + 240].astype(np.float64) * np.linspace(1.0, 0.0, 240)).astype(np.int16)
    played = locate(_timeline(_zeros(100), reply[:cut], fade, _zeros(500)), reply)
    assert played is not None
    assert played.played < played.length
    assert cut <= played.played <= cut + 240
    assert played.end == 2400 + played.played


def test_other_audio_is_not_the_reply() -> None:
    reply = _reply(1.0)
    assert locate(_timeline(_zeros(100), _reply(1.0, seed=2), _zeros(100)), reply) is None
    assert locate(_timeline(_zeros(100), reply[: RATE_HZ // 50]), reply) is None  # 10 ms of it is not it
    assert locate(_timeline(reply, _zeros(100)), reply, after=300) is None  # it started before `after`
