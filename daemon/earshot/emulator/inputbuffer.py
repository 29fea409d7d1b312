"""The emulator's input audio buffer: what the client appended since the last commit, and the server VAD over it.

The server side of ``input_audio_buffer.*`` (PROTOCOL.md): appended audio in the session's input format
is kept at its wire rate until committed or cleared; with turn detection configured (``server_vad`` or
``semantic_vad``), an energy VAD over it reports where speech starts and stops. The protocol core
(:class:`~earshot.emulator.protocol.ServerSession`) turns those into server events. Pure numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.emulator.vad import EnergyVad, VadEvent
from earshot.emulator.wire import SEMANTIC_SILENCE_MS

__all__ = ["InputBuffer"]


class InputBuffer:
    """Appended input audio since the last commit or clear, with the server VAD over all of it."""

    def __init__(self) -> None:
        self.samples = 0
        """Input samples appended this session (wire rate)."""
        self.rate_hz = 24000
        self._chunks: list[NDArray[np.int16]] = []
        self._vad: EnergyVad | None = None
        self.speech_item_id: str | None = None
        """The item the speech in progress will be committed as (named at its start)."""

    def configure(self) -> None:
        """The session's turn detection changed: the VAD is rebuilt from it on the next append."""
        self._vad = None

    def append(self, pcm: NDArray[np.int16], rate_hz: int, turn_detection: dict[str, Any] | None) -> list[VadEvent]:
        """Keep ``pcm`` (at ``rate_hz``); the VAD's events over it, if turn detection is on."""
        if rate_hz != self.rate_hz:
            self._chunks = []
            self.rate_hz = rate_hz
        self._chunks.append(pcm)
        self.samples += pcm.size
        vad = self._ensure_vad(rate_hz, turn_detection)
        if vad is None:
            return []
        return vad.process(pcm)

    @property
    def ms(self) -> int:
        """Audio held, in milliseconds."""
        return sum(chunk.size for chunk in self._chunks) * 1000 // self.rate_hz

    def take(self) -> NDArray[np.int16]:
        """Everything held (committed now); the buffer and the speech in progress start afresh."""
        pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        self.clear()
        return pcm

    def clear(self) -> None:
        """Drop what is held; the VAD starts afresh from here."""
        self._chunks = []
        self.speech_item_id = None
        if self._vad is not None:
            self._vad.reset(self.samples)

    def _ensure_vad(self, rate_hz: int, td: dict[str, Any] | None) -> EnergyVad | None:
        if td is None:
            self._vad = None
            return None
        if self._vad is None or self._vad.rate_hz != rate_hz:
            if td.get("type") == "semantic_vad":
                silence = SEMANTIC_SILENCE_MS.get(str(td.get("eagerness", "auto")), 700)
                self._vad = EnergyVad(rate_hz, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=silence)
            else:
                self._vad = EnergyVad(
                    rate_hz,
                    threshold=float(td.get("threshold") or 0.5),
                    prefix_padding_ms=int(td.get("prefix_padding_ms") or 0),
                    silence_duration_ms=int(td.get("silence_duration_ms") or 0),
                )
            self._vad.reset(self.samples)
        return self._vad
