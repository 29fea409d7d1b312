"""What every wake-word engine shares.

The sample rate, the trigger (threshold plus trigger level), and finding the model a config names (a
bundled one, or a file).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TypeVar

from earshot.errors import ConfigError

__all__ = ["RATE_HZ", "Trigger", "bundled_or_file"]

_Model = TypeVar("_Model", bound=enum.Enum)

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


def bundled_or_file(model: str, bundled: type[_Model], *, kind: str, suffix: str = "") -> _Model | Path:
    """The bundled model ``model`` names (a member of ``bundled``), else the existing file it names.

    Raises:
        ConfigError: naming ``gate.wakeword.model``, when it is neither (``suffix``: the file's required
            extension, e.g. ``.json``).
    """
    try:
        return bundled(model)
    except ValueError:
        pass
    path = Path(model).expanduser()
    if not path.is_file() or (suffix and path.suffix != suffix):
        raise ConfigError(
            f"gate.wakeword.model: {model!r} is neither a bundled {kind}model "
            f"({', '.join(str(m.value) for m in bundled)}) nor an existing {suffix + ' ' if suffix else ''}file"
        )
    return path
