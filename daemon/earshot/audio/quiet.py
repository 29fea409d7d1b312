"""Whether a captured period can wait: the capture thread holds a quiet room's audio, at most a second.

While nobody is engaged, every capture period the device delivers used to wake the event loop, which
then ran the gate over it. In a quiet room the gate finds nothing there, and each wake-up of a Python
event loop costs far more than the work it does on 250 ms of silence (measured on the Pi tier: about
0.7 ms a wake-up here, against 60 µs for the gate itself). So the capture thread asks
:class:`QuietHold` about each idle period: a quiet one joins the inbox without waking the loop; the
first one that is not quiet, or a second's worth of quiet, wakes it for everything held, in order.

Nothing is dropped and nothing is reordered: the loop sees every sample, with its own position, at
most :attr:`QuietHold.hold_s` later than it would have. Speech is never held: a period louder than the
room's floor by ``margin_db`` (or louder than ``ceiling_dbfs`` at all) goes at once, with what waited
before it, so the gate hears a wake word's start as soon as it is said.

Pure: levels in, a decision out; the caller gives each period's duration.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from earshot.audio.echometer import dbfs, power

__all__ = ["QuietHold"]


class QuietHold:
    """The quiet-room rule of the capture thread (see the module docstring).

    Args:
        hold_s: the loop is woken at least once per this much audio (held periods plus the one that
            wakes it).
        margin_db: a period this much louder than the floor is not quiet.
        ceiling_dbfs: a period louder than this is never quiet, whatever the floor (a room with a TV
            on is not held, however steady the TV).
        rise_db_per_s: how fast the floor follows a room that got louder (it drops at once).
    """

    def __init__(
        self,
        *,
        hold_s: float = 1.0,
        margin_db: float = 6.0,
        ceiling_dbfs: float = -45.0,
        rise_db_per_s: float = 1.0,
    ) -> None:
        self.hold_s = hold_s
        self._margin_db = margin_db
        self._ceiling_dbfs = ceiling_dbfs
        self._rise_db_per_s = rise_db_per_s
        self._floor_dbfs: float | None = None
        self._held_s = 0.0

    @property
    def floor_dbfs(self) -> float | None:
        """The room's level as tracked so far (None before the first period)."""
        return self._floor_dbfs

    @property
    def held_s(self) -> float:
        """Audio held since the loop was last woken."""
        return self._held_s

    def period(self, pcm: NDArray[np.int16], seconds: float) -> bool:
        """One captured period of ``seconds``: True when the loop must be woken for it (and all held)."""
        # The canceller's float32 dot product, not dsp.rms_dbfs: the capture thread runs this on every idle
        # period, woken after a quarter second asleep, and there the cost is per numpy call (tens of µs with
        # cold caches), not per sample. Measured on the PulseAudio room, a thread that only reads 250 ms
        # periods: 0.06 % of a core; reading and taking numpy's mean: 0.13 %; this: 0.10 %.
        level = dbfs(power(pcm))
        floor = self._floor_dbfs
        quiet = floor is not None and level <= min(floor + self._margin_db, self._ceiling_dbfs)
        if floor is None or level < floor:
            self._floor_dbfs = level
        else:
            self._floor_dbfs = floor + self._rise_db_per_s * seconds
        if quiet and self._held_s + seconds < self.hold_s - 1e-9:
            self._held_s += seconds
            return False
        self._held_s = 0.0
        return True
