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

from earshot.emulator import tts
from tests.support.schema import check_client_event

RATE_HZ = 24000


@dataclass(frozen=True)
class Played:
    """One reply in the output: where it started, how much of it was played, where playing stopped.

    Attributes:
        start: output sample where the reply's first sample was played.
        played: reply samples played (a fade at a barge-in counts: it was heard).
        length: the reply's full length in samples.
        end: output sample just after the last one of the reply played (underrun gaps included).
        gaps: output samples of silence inserted inside the reply (device underruns).
    """

    start: int
    played: int
    length: int
    end: int
    gaps: int = 0

    @property
    def played_ms(self) -> float:
        """Played duration in ms."""
        return 1000.0 * self.played / RATE_HZ


async def reply_pcm(text: str) -> NDArray[np.int16]:
    """The emulator's spoken reply for ``text`` (24 kHz), exactly as it streams it."""
    return await tts.speak(text)


_PROBE = RATE_HZ // 500  # 2 ms of exact agreement resynchronises after a gap
_MAX_GAP = RATE_HZ // 2  # a longer silence in the output is not an underrun inside the reply
_FADE = RATE_HZ * 12 // 1000 + 1


def locate(output: NDArray[np.int16], reply: NDArray[np.int16], *, after: int = 0) -> Played | None:
    """Find ``reply`` in ``output`` at or after sample ``after``; None when it was not played.

    The start is where the reply's first 50 ms of non-zero audio are played, exactly but for underrun
    gaps (a busy machine can starve the device right after a reply's first write). From there output
    and reply are walked sample for sample; silence inserted by an underrun (a run of zeros in the
    output after which the reply resumes exactly) is skipped; the walk ends where they part for good,
    after a fade of at most 12 ms (same sign, never louder) that counts as played.
    """
    nz = np.flatnonzero(reply)
    if nz.size == 0:
        return None
    k0 = int(nz[0])
    out = output.astype(np.int32)
    ref = reply.astype(np.int32)
    for candidate in (np.flatnonzero(output[after:] == reply[k0]) + after).tolist():
        first = int(candidate)
        walked = _walk(out, ref, first, k0)
        # 50 ms of the reply (or all of it) from here, underrun gaps allowed: it really started here.
        if walked[1] - k0 >= min(RATE_HZ // 20, ref.size - k0):
            i, j, gaps = walked
            return _with_fade(out, ref, first - k0, i, j, gaps, reply.size)
    return None


def _walk(out: NDArray[np.int32], ref: NDArray[np.int32], i: int, j: int) -> tuple[int, int, int]:
    """Walk output and reply from (i, j) while they agree, across underrun gaps: the (i, j, gaps) where they part."""
    gaps = 0
    zeros_matched = 0  # reply zeros just matched by output zeros (a gap may hide among them)
    while i < out.size and j < ref.size:
        if out[i] == ref[j]:
            zeros_matched = zeros_matched + 1 if ref[j] == 0 else 0
            i += 1
            j += 1
            continue
        resumed = _resync(out, ref, i, j, zeros_matched)
        if resumed is None:
            break
        gaps += resumed[0] - i + (j - resumed[1])
        i, j = resumed
        zeros_matched = 0
    return i, j, gaps


def _with_fade(
    out: NDArray[np.int32], ref: NDArray[np.int32], start: int, i: int, j: int, gaps: int, length: int
) -> Played:
    """The reply played from ``start`` to (i, j), and then a fade (the output following it scaled down)."""
    limit = min(out.size - i, ref.size - j, _FADE)
    fade = 0
    k = 0
    while k < limit and abs(out[i + k]) <= abs(ref[j + k]) and out[i + k] * ref[j + k] >= 0:
        k += 1
        if out[i + k - 1] != 0:
            fade = k  # a faded sample can round to 0: the fade ends at its last non-zero sample
    return Played(start=start, played=j + fade, length=length, end=i + fade, gaps=gaps)


def _resync(out: NDArray[np.int32], ref: NDArray[np.int32], i: int, j: int, back: int) -> tuple[int, int] | None:
    """After a mismatch at (i, j): the (i, j) where the reply resumes after inserted silence, or None."""
    k = i
    while k < out.size and out[k] == 0 and k - i <= _MAX_GAP:
        k += 1
    if k - i > _MAX_GAP or k + _PROBE > out.size:
        return None
    probe = out[k : k + _PROBE]
    for jj in range(j, j - back - 1, -1):
        if jj + _PROBE <= ref.size and np.array_equal(ref[jj : jj + _PROBE], probe):
            return k, jj
    return None


def check_events(emu: Any) -> None:
    """No schema violations, and every client event the emulator received conforms to the GA schema."""
    assert emu.violations == [], [str(v) for v in emu.violations]
    for record in emu.sessions:
        for event in record.client_events:
            check_client_event(event)


def client_types(emu: Any) -> list[str]:
    """Types of every client event received, over all sessions, in order."""
    return [e.get("type", "") for r in emu.sessions for e in r.client_events]
