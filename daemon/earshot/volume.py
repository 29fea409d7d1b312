"""The speaker's volume from outside (issue 19): one state, kept across restarts.

``earshot volume [N|up|down|mute|unmute]``, the control socket's ``volume`` command and the model's
``get_volume`` / ``set_volume`` all move the same :class:`Volume`, which applies it to one control
(``audio.output.volume_control``):

- ``software`` (the default, on every device): a digital gain in the sink, ``audio.output.volume_db``
  plus :func:`gain_db` of the percent (40·log10(p/100): 50 % is −12 dB), silence while muted. The
  sink applies it before it keeps the echo reference, so the canceller hears what sounds;
- ``mixer``: the ALSA mixer control (``mixer_card`` / ``mixer_control``) through ``amixer``.

:class:`VolumeState` and :func:`parse_command` are the pure part; :class:`Volume` applies a state and
writes ``<state_dir>/volume.json`` (atomically; a full disk is logged, never raised).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from earshot.errors import DaemonError, ToolError
from earshot.usage import read_json_state, write_json_state

__all__ = ["STEP_PERCENT", "VOLUME_FILE", "Volume", "VolumeState", "gain_db", "parse_command"]

logger = logging.getLogger(__name__)

VOLUME_FILE = "volume.json"
STEP_PERCENT = 10
"""``up`` and ``down`` move this many points."""


@dataclass(frozen=True, slots=True)
class VolumeState:
    """A volume: ``percent`` (0-100) and ``muted`` (the percent is kept for unmute)."""

    percent: int = 100
    muted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The persisted and reported form."""
        return {"volume": self.percent, "muted": self.muted}

    @classmethod
    def from_json(cls, data: Any) -> VolumeState:
        """A state from its persisted form; anything malformed gives the default (100 %, not muted)."""
        if not isinstance(data, dict):
            return cls()
        percent, muted = data.get("volume"), data.get("muted")
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            return cls()
        return cls(percent, muted is True)


def parse_command(state: VolumeState, command: str) -> VolumeState:
    """The state after ``command``: ``N`` (0-100), ``+N`` / ``-N``, ``up``, ``down``, ``mute``, ``unmute``.

    ``up`` and ``down`` unmute. Raises :class:`DaemonError` (said to the user) for anything else.
    """
    word = command.strip().lower().removesuffix("%")
    if word == "mute":
        return VolumeState(state.percent, True)
    if word == "unmute":
        return VolumeState(state.percent, False)
    if word in ("up", "down"):
        step = STEP_PERCENT if word == "up" else -STEP_PERCENT
        return VolumeState(max(0, min(100, state.percent + step)), False)
    try:
        value = int(word, 10)
    except ValueError:
        raise DaemonError(f"volume {command[:20]!r}: give 0-100, +N, -N, up, down, mute or unmute") from None
    if word.startswith(("+", "-")):
        return VolumeState(max(0, min(100, state.percent + value)), False)
    if not 0 <= value <= 100:
        raise DaemonError(f"volume {value}: give 0-100")
    return VolumeState(value, False)


def gain_db(state: VolumeState) -> float:
    """The software control's gain for ``state`` (−inf: silence)."""
    if state.muted or state.percent <= 0:
        return -math.inf
    return 40.0 * math.log10(state.percent / 100.0)


class _Mixer(Protocol):
    async def get_percent(self) -> int: ...

    async def set_percent(self, percent: int) -> int: ...


class Volume:
    """The volume, applied and kept (see the module docstring).

    Args:
        sink: the speaker (its ``gain_db`` is set: the software control), or None.
        base_db: ``audio.output.volume_db``, the fixed gain under the volume.
        mixer: the ALSA mixer (the ``mixer`` control), or None for the software control.
        path: the state file, or None (not kept).
    """

    def __init__(self, sink: Any, *, base_db: float, mixer: _Mixer | None = None, path: Path | None = None) -> None:
        self._sink = sink
        self._base_db = base_db
        self._mixer = mixer
        self._path = path
        self.state = self._load()

    @property
    def control(self) -> str:
        """``software`` or ``mixer``."""
        return "software" if self._mixer is None else "mixer"

    async def restore(self) -> None:
        """Apply the kept state (at start); a mixer that fails is logged, the sound goes on."""
        try:
            await self._apply(self.state)
        except ToolError as exc:
            logger.warning("volume not restored: %s", exc)

    async def command(self, command: str) -> dict[str, Any]:
        """Carry out ``earshot volume COMMAND``; the new state (``volume``, ``muted``, ``control``).

        Raises:
            DaemonError: not a volume command. ToolError: the mixer failed (nothing changed).
        """
        new = parse_command(self.state, command)
        await self._apply(new)
        self.state = new
        self._save()
        logger.info("volume %d%%%s (%s)", new.percent, ", muted" if new.muted else "", self.control)
        return self.report()

    def report(self) -> dict[str, Any]:
        """What status and the volume command show."""
        return {**self.state.to_json(), "control": self.control}

    # The model's get_volume / set_volume (earshot.realtime.tools.Mixer).

    async def get_percent(self) -> int:
        """The volume in percent (0 while muted)."""
        return 0 if self.state.muted else self.state.percent

    async def set_percent(self, percent: int) -> int:
        """Set the volume (unmutes); the percent in force after."""
        await self.command(str(max(0, min(100, int(percent)))))
        return self.state.percent

    async def _apply(self, state: VolumeState) -> None:
        if self._mixer is not None:
            await self._mixer.set_percent(0 if state.muted else state.percent)
        elif self._sink is not None:
            self._sink.gain_db = self._base_db + gain_db(state)

    def _load(self) -> VolumeState:
        data = read_json_state(self._path, "volume", max_bytes=4096)
        return VolumeState() if data is None else VolumeState.from_json(data)

    def _save(self) -> None:
        write_json_state(self._path, self.state.to_json(), "volume")
