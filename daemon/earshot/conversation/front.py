"""The conversation's audio front: what every capture chunk goes through before the core decides on it.

:class:`AudioFront` owns the capture-side parts the core feeds in order: the echo canceller (and the
wake guard's view of it), the pre-roll ring, the uplink guard (:mod:`earshot.uplink`: the device's own
sound never goes upstream), the detector of the user over the device's sound outside a reply, and the
uplink pump (ring → guard → resampler → wire rate, in ``append_ms`` batches). It decides nothing that
depends on the phase: the core passes what it knows (the user's turn, the playback) as arguments, and
gets back what happened (speech the guard released, the user heard over the device's sound).

Pure: no asyncio, threads, processes or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio.backend import CAPTURE_RATE_HZ
from earshot.audio.resample import StreamResampler
from earshot.audio.ring import AudioRing
from earshot.config import Config
from earshot.gate.bargein import BargeIn, BargeInDetector
from earshot.uplink import UplinkGuard

__all__ = ["RING_S", "AudioFront", "Guarded"]

RING_S = 30.0
# Without a canceller nothing measures the echo tail: the device's sound is taken to linger this long.
_NO_CANCELLER_TAIL_S = 0.3


@dataclass(frozen=True, slots=True)
class Guarded:
    """What the uplink guard made of a chunk.

    Attributes:
        released: onsets (capture positions) of the user's speech the guard has just let through.
        over_sound: the user heard talking over the device's sound (outside a reply), or None.
    """

    released: list[int]
    over_sound: BargeIn | None


class AudioFront:
    """The capture-side parts of the conversation (see the module docstring).

    Args:
        config: the whole configuration.
        echo: the echo canceller, or None.
        wake_guard: rejects wakes explained by the device's own voice, or None.
        detect_over_sound: run a detector of the user over the device's sound (when barge-in is on).
    """

    def __init__(self, config: Config, *, echo: Any | None, wake_guard: Any | None, detect_over_sound: bool) -> None:
        rt = config.realtime
        self.echo = echo
        self.wake_guard = wake_guard
        self.ring = AudioRing(int(RING_S * CAPTURE_RATE_HZ))
        vad = config.gate.vad
        self.uplink_guard = UplinkGuard(
            lead_samples=config.gate.preroll_ms * CAPTURE_RATE_HZ // 1000,
            keep_samples=self.ring.capacity_samples,
            confirm_samples=(vad.end_ms + vad.start_ms) * CAPTURE_RATE_HZ // 1000,
        )
        """What of the capture may go upstream: never the device's own sound (:mod:`earshot.uplink`)."""
        self.over_sound = BargeInDetector(config.bargein) if detect_over_sound else None
        """Local detection of the user over the device's sound outside a reply (earcons, the reply's tail)."""
        self.wire_rate_hz = 24000 if rt.format == "pcm16" else 8000
        self._up = StreamResampler(CAPTURE_RATE_HZ, self.wire_rate_hz)
        self._pump_samples = rt.append_ms * CAPTURE_RATE_HZ // 1000
        self._cursor: int | None = None  # capture position the uplink has sent up to
        self._audible_until = -1  # without a canceller: capture position the device's sound may last to

    def quiet(self, position: int, *, playback_active: bool) -> bool:
        """Nothing sounds or echoes at ``position`` and the guard holds nothing: a period may go in one call."""
        if playback_active or position < self._audible_until:
            return False
        if self.echo is not None and not self.echo.bypassing:
            return False
        return self.uplink_guard.settled and (self.over_sound is None or not self.over_sound.armed)

    def echo_figures(self) -> dict[str, Any]:
        """The canceller's measurements a barge-in detector starts from."""
        echo = self.echo
        return {
            "erle_db": echo.erle_db if echo is not None else None,
            "erl_db": echo.erl_db if echo is not None else None,
            "canceller": echo is not None,
        }

    # ------------------------------------------------------------------ a chunk

    def clean(
        self, pcm: NDArray[np.int16], position: int, *, near_end: bool, sounding: bool = False
    ) -> tuple[NDArray[np.int16], Any]:
        """Cancel the echo from one chunk and keep it in the ring: ``(cleaned, the canceller's frame or None)``.

        ``sounding``: the device plays a sound now (a chunk whose reference runs short is then echo unknown).
        """
        frame = None
        cleaned = pcm
        if self.echo is not None:
            cleaned = self.echo.process(pcm, near_end=near_end, sounding=sounding)
            frame = self.echo.frame
            if self.wake_guard is not None:
                self.wake_guard.observe(frame, position)
        self.ring.append(cleaned, position)
        return cleaned, frame

    def guard(
        self,
        raw: NDArray[np.int16],
        cleaned: NDArray[np.int16],
        frame: Any,
        position: int,
        *,
        playback_active: bool,
        user_turn: bool,
        speaking: bool,
    ) -> Guarded:
        """Tell the uplink guard whether the device's own sound can be in this chunk, and judge it.

        Args:
            raw: the microphone chunk.
            cleaned: the chunk after the canceller.
            frame: the canceller's frame for it, or None without a canceller.
            position: its capture position.
            playback_active: the device is sounding.
            user_turn: the user's own turn (CONNECTING or LISTENING): speech already under way is theirs.
            speaking: a reply is playing (its own detector judges the user then).
        """
        guard = self.uplink_guard
        if frame is not None:
            # Some reference above the floor is within the canceller's filter span (the longest echo
            # path it models), or a new pairing is still being aligned: the echo can be in this chunk.
            audible = bool(frame.echo_possible or frame.settling)
        else:
            if playback_active:
                self._audible_until = position + len(raw) + int(_NO_CANCELLER_TAIL_S * CAPTURE_RATE_HZ)
            audible = position < self._audible_until
        was = guard.audible
        guard.chunk(position, len(raw), audible=audible, user_turn=user_turn)
        over = self.over_sound
        hit = None
        if over is not None:
            if guard.holding and not was:
                over.start(position, **self.echo_figures())
            elif not guard.audible and over.armed:
                over.stop()
            if guard.holding and over.armed and not speaking:
                hit = over.process(cleaned, raw, frame, position)
                if hit is not None:
                    guard.user_speech(hit.position)
        return Guarded(list(guard.released()), hit)

    def pass_period(self, pcm: NDArray[np.int16], position: int) -> None:
        """A quiet period in one call: the canceller counts it (it bypasses), the ring keeps it, nothing is held."""
        if self.echo is not None:
            self.echo.pass_through(pcm)
        self.ring.append(pcm, position)
        self.uplink_guard.chunk(position, len(pcm), audible=False)

    # ------------------------------------------------------------------ the uplink

    def start_uplink(self, from_position: int) -> None:
        """The uplink starts (again) at ``from_position``, or the oldest audio the ring still holds."""
        start = self.ring.start_position
        self._cursor = from_position if start is None else max(from_position, start)
        self._up.reset()

    def pump(self, upto_position: int, *, force: bool) -> NDArray[np.int16] | None:
        """The audio decided since the last pump, at the wire rate; None while not started or not a batch yet.

        Only what the guard has decided goes up: a stretch the device's sound may be in waits until it is
        known to be silence (it was all echo) or the user's (local detection confirmed them). Per capture
        chunk audio goes up in ``append_ms`` batches (the session sends no smaller message anyway, and
        one resampler call per batch is a quarter of the per-call cost); ``force`` sends what is left.
        """
        if self._cursor is None:
            return None
        upto = min(upto_position, self.uplink_guard.decided_upto())
        start = max(self._cursor, self.ring.start_position or 0)
        if upto <= start or (not force and upto - start < self._pump_samples):
            return None
        pcm = self.uplink_guard.apply(self.ring.since(start)[: upto - start], start)
        self._cursor = upto
        wire = self._up.process(pcm)
        return wire if len(wire) else None
