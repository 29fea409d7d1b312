"""Find the emulator's reply audio in the daemon's speaker timeline (the output WAV).

The output WAV holds, on the input's clock at 24 kHz, exactly the samples the sink played (silence
elsewhere). With ``pcm16`` nothing resamples a reply on its way, so a reply's samples appear in it
verbatim (but for the fade at a barge-in): :func:`locate` finds where a reply started and how much of
it was played.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.emulator import voice
from tests.support.schema import check_client_event

RATE_HZ = 24000


@dataclass(frozen=True)
class Played:
    """Where one reply is in the output: start sample, samples played, and its full length."""

    start: int
    played: int
    length: int

    @property
    def end(self) -> int:
        """Output sample just after the last one played."""
        return self.start + self.played

    @property
    def played_ms(self) -> float:
        """Played duration in ms."""
        return 1000.0 * self.played / RATE_HZ


async def reply_pcm(text: str) -> NDArray[np.int16]:
    """The emulator's spoken reply for ``text`` (24 kHz), exactly as it streams it."""
    return await voice.speak(text)


def locate(output: NDArray[np.int16], reply: NDArray[np.int16], *, after: int = 0) -> Played | None:
    """Find ``reply`` in ``output`` at or after sample ``after``; None when it was not played.

    The start is the output position where the reply's first 50 ms of non-zero audio match exactly;
    the played length runs while output and reply agree sample for sample (a fade of at most 12 ms
    at the end is allowed: same sign, never louder).
    """
    nz = np.flatnonzero(reply)
    if nz.size == 0:
        return None
    k0 = int(nz[0])
    probe = reply[k0 : k0 + RATE_HZ // 20]
    candidates = np.flatnonzero(output[after:] == probe[0]) + after
    start: int | None = None
    for candidate in candidates.tolist():
        c = int(candidate)
        if c + probe.size <= output.size and np.array_equal(output[c : c + probe.size], probe):
            start = c - k0
            break
    if start is None:
        return None
    n = int(min(reply.size, output.size - start))
    seg = output[start : start + n].astype(np.int32)
    ref = reply[:n].astype(np.int32)
    exact = seg == ref
    mismatch = np.flatnonzero(~exact)
    if mismatch.size == 0:
        return Played(start, n, reply.size)
    first_bad = int(mismatch[0])
    # A fade: the output follows the reply scaled down, then silence.
    fade_end = first_bad
    limit = int(min(n, first_bad + RATE_HZ * 12 // 1000 + 1))
    while fade_end < limit and abs(seg[fade_end]) <= abs(ref[fade_end]) and seg[fade_end] * ref[fade_end] >= 0:
        if seg[fade_end] == 0 and ref[fade_end] != 0 and not seg[fade_end:limit].any():
            break
        fade_end += 1
    return Played(start, fade_end, reply.size)


def check_events(emu: Any) -> None:
    """No schema violations, and every client event the emulator received conforms to the GA schema."""
    assert emu.violations == [], [str(v) for v in emu.violations]
    for record in emu.sessions:
        for event in record.client_events:
            check_client_event(event)


def client_types(emu: Any) -> list[str]:
    """Types of every client event received, over all sessions, in order."""
    return [e.get("type", "") for r in emu.sessions for e in r.client_events]
