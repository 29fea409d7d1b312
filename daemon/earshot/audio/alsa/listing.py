"""``earshot devices``: every PCM alsa-lib knows, whether it opens for capture/playback, and its rates."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import alsaaudio

__all__ = ["DeviceInfo", "list_devices"]

_PROBE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One ALSA PCM as ``earshot devices`` shows it."""

    name: str
    description: str
    can_capture: bool
    can_play: bool
    capture_rates: tuple[int, ...]
    playback_rates: tuple[int, ...]


def _probe(name: str, kind: int) -> tuple[bool, tuple[int, ...]]:
    try:
        pcm = alsaaudio.PCM(kind, alsaaudio.PCM_NONBLOCK, device=name)
    except alsaaudio.ALSAAudioError:
        return False, ()
    try:
        rates = pcm.getrates()
        if isinstance(rates, tuple) and len(rates) == 2 and isinstance(rates[0], int):
            lo, hi = rates
            found = tuple(r for r in _PROBE_RATES if lo <= r <= hi)
        elif isinstance(rates, (list, tuple)):
            found = tuple(int(r) for r in rates)
        else:
            found = (int(rates),)
    except (alsaaudio.ALSAAudioError, ValueError, TypeError):
        found = ()
    finally:
        pcm.close()
    return True, found


def list_devices() -> list[DeviceInfo]:
    """Every PCM alsa-lib knows (hints), with whether it opens for capture/playback and its rates.

    Devices busy or absent show as unable to capture/play; nothing here raises on a bad device.
    """
    names: dict[str, str] = {}
    for kind in (alsaaudio.PCM_CAPTURE, alsaaudio.PCM_PLAYBACK):
        with contextlib.suppress(alsaaudio.ALSAAudioError):
            for name in alsaaudio.pcms(kind):
                names.setdefault(name, "")
    with contextlib.suppress(alsaaudio.ALSAAudioError, AttributeError):
        for card_index in alsaaudio.card_indexes():
            long_name = alsaaudio.card_name(card_index)[1]
            for key in names:
                if f"CARD={alsaaudio.card_name(card_index)[0]}" in key:
                    names[key] = long_name
    out = []
    for name, desc in names.items():
        can_capture, capture_rates = _probe(name, alsaaudio.PCM_CAPTURE)
        can_play, playback_rates = _probe(name, alsaaudio.PCM_PLAYBACK)
        out.append(DeviceInfo(name, desc, can_capture, can_play, capture_rates, playback_rates))
    return out
