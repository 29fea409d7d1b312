"""What every wake-word engine shares: the sample rate and the trigger (threshold plus trigger level)."""

from __future__ import annotations

__all__ = ["RATE_HZ", "Trigger"]

RATE_HZ = 16000


class Trigger:
    """Threshold plus trigger level: fire on the ``level``-th consecutive score over the threshold."""

    def __init__(self, level: int) -> None:
        self.level = max(1, level)
        self.run = 0
        self.best = 0.0

    def update(self, hit: bool, score: float) -> float | None:
        """One score (``hit``: over the threshold); the best of the run when it completes the trigger, else None."""
        if not hit:
            self.run = 0
            self.best = 0.0
            return None
        self.run += 1
        self.best = max(self.best, score)
        if self.run >= self.level:
            best = self.best
            self.run = 0
            self.best = 0.0
            return best
        return None
