"""A device around the conversation core, without an event loop: a speaker in a room, a microphone, a clock.

:class:`Device` carries out the core's effects the way the daemon's executor does, but synchronously:
what the core (or anyone) plays goes through a loudspeaker and a room (:class:`EchoPath`: soft clip,
reflections, a reverberant tail) into the microphone, and into the echo canceller's reference, 10 ms at
a time. Everything the core sends upstream is kept, at the wire rate, with the capture position it
came from.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from earshot.audio.echo import EchoCanceller
from earshot.audio.ledger import PlaybackFinished, PlaybackStarted, is_earcon
from earshot.audio.resample import resample
from earshot.audio.room import EchoPath
from earshot.config import Config, parse_config
from earshot.conversation import effects as fx
from earshot.conversation.core import ConversationCore
from earshot.gate.bargein import BargeInDetector, WakeGuard
from earshot.gate.gate import Gate
from earshot.realtime import session as rs

CHUNK = 160
RATE = 16000


def config(turn_detection: str = "server_vad", *, mode: str = "vad", extra: str = "") -> Config:
    """A config for the core: ``gate.mode`` (vad: any speech engages) and the turn detection."""
    return parse_config(
        f"""
gate:
  mode: {mode}
realtime:
  turn_detection:
    type: {turn_detection}
{extra}
"""
    )


@dataclass
class Sent:
    """What went upstream: wire-rate audio, and the counts of the other link effects."""

    audio: list[NDArray[np.int16]] = field(default_factory=list)
    commits: int = 0
    interrupts: list[fx.Interrupt] = field(default_factory=list)
    opens: int = 0
    closes: int = 0

    def pcm(self) -> NDArray[np.int16]:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, dtype=np.int16)


class Device:
    """The core with a speaker, a room, a microphone and a clock. See the module docstring.

    Args:
        cfg: the configuration.
        canceller: run the echo canceller (as the default config does).
        room: the echo path from the speaker to the microphone.
        stop_word: the stop phrase's engine, or None.
    """

    def __init__(
        self, cfg: Config, *, canceller: bool = True, room: EchoPath | None = None, stop_word: Any = None
    ) -> None:
        self.config = cfg
        echo = EchoCanceller(filter_ms=cfg.bargein.echo_filter_ms) if canceller else None
        self.core = ConversationCore(
            cfg,
            gate=Gate(cfg.gate, wakeword=None, stop_word=stop_word),
            echo=echo,
            bargein=BargeInDetector(cfg.bargein),
            wake_guard=WakeGuard() if echo is not None else None,
        )
        self.room = room or EchoPath(rate_hz=RATE, delay_ms=20.0, gain_db=-6.0, rt60_ms=150.0, drive_db=6.0)
        self.position = 0
        self.now = 100.0
        self.sent = Sent()
        self.effects: list[fx.Effect] = []
        self._speaker: deque[tuple[str, NDArray[np.int16]]] = deque()  # (key, 16 kHz samples) to play
        self._reply_keys: list[str] = []
        self._heard: dict[str, int] = {}
        self._finishing = False
        self._started: set[str] = set()
        self.user: NDArray[np.int16] | None = None  # the user's voice, mixed in from ``user_at`` on
        self.user_at = 0
        self._replies = 0
        self.batches: list[bool] = []
        """Per period of :meth:`run_periods`: whether it went to the core whole."""

    # ------------------------------------------------------------------ the speaker

    @property
    def sounding(self) -> bool:
        """The speaker has something left to play."""
        return bool(self._speaker)

    def play(self, pcm16k: NDArray[np.int16], key: str = "earcon:sound") -> None:
        """Anything the device plays (an announcement, a tool's sound): the core is not told."""
        self._speaker.append((key, pcm16k.astype(np.int16)))

    def _next_played(self) -> NDArray[np.int16]:
        out = np.zeros(CHUNK, dtype=np.int16)
        filled = 0
        while filled < CHUNK and self._speaker:
            key, pcm = self._speaker[0]
            if key not in self._started:
                self._started.add(key)
                self._events.append(PlaybackStarted(key))
            take = min(CHUNK - filled, pcm.size)
            out[filled : filled + take] = pcm[:take]
            filled += take
            if not is_earcon(key):
                self._heard[key] = self._heard.get(key, 0) + take * 3 // 2  # in 24 kHz samples
            if take == pcm.size:
                self._speaker.popleft()
            else:
                self._speaker[0] = (key, pcm[take:])
        if self._finishing and not any(not is_earcon(k) for k, _ in self._speaker):
            self._finishing = False
            heard = {k: self._heard.get(k, 0) for k in self._reply_keys}
            self._reply_keys = []
            self._events.append(PlaybackFinished(heard))
        return out

    # ------------------------------------------------------------------ the clock

    def run(self, seconds: float) -> None:
        """Capture ``seconds``: 10 ms chunks through the room, the canceller and the core."""
        for _ in range(round(seconds * RATE / CHUNK)):
            self.step()

    def step(self) -> None:
        self._events: list[Any] = []
        pcm, played = self._sound()
        if self.core.echo is not None:
            self.core.echo.add_reference(played)
        active = self.sounding or bool(np.any(played))
        self.core.capture(pcm, self.position, self.now, playback_active=active)
        self._carry_out()
        for ev in self._events:
            self.core.playback_event(ev, self.now)
            self._carry_out()
        self.position += CHUNK
        self.now += CHUNK / RATE

    def _sound(self) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
        """The next 10 ms: what the speaker plays, and the microphone (room echo plus the user)."""
        played = self._next_played()
        mic = self.room.process(played)
        if self.user is not None:
            offset = self.position - self.user_at
            if 0 <= offset < self.user.size:
                part = self.user[offset : offset + CHUNK]
                mic[: part.size] += part
        return np.clip(np.round(mic), -32768, 32767).astype(np.int16), played

    def run_periods(self, seconds: float, period_chunks: int) -> None:
        """Capture ``seconds`` a period at a time, as the daemon's capture loop hands it over.

        The reference of the whole period is added first, then the period goes to the core whole if
        it is batchable, else chunk by chunk with each chunk's effects carried out (the executor's rule).
        """
        for _ in range(round(seconds * RATE / CHUNK / period_chunks)):
            self._events = []
            start, now = self.position, self.now
            mics, played = [], []
            sounded = False
            for _ in range(period_chunks):
                sounded = sounded or self.sounding
                mic, out = self._sound()
                mics.append(mic)
                played.append(out)
                self.position += CHUNK
            pcm = np.concatenate(mics)
            if self.core.echo is not None and sounded:
                # As both backends' sinks do: a reference for what played, nothing while idle.
                self.core.echo.add_reference(np.concatenate(played))
            active = self.sounding or any(bool(np.any(p)) for p in played)
            self.batches.append(self.core.batchable(playback_active=active))
            if self.batches[-1]:
                self.core.capture_period(pcm, start, now)
                self._carry_out()
            else:
                for i in range(period_chunks):
                    active = self.sounding or bool(np.any(played[i]))
                    self.core.capture(pcm[i * CHUNK : (i + 1) * CHUNK], start + i * CHUNK, now, playback_active=active)
                    self._carry_out()
            for ev in self._events:
                self.core.playback_event(ev, now)
                self._carry_out()
            self.now += period_chunks * CHUNK / RATE

    # ------------------------------------------------------------------ inputs

    def link(self, ev: Any) -> None:
        """A link event now."""
        self.core.link_event(ev, self.now, playback_active=self.sounding)
        self._carry_out()

    def command(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``engage``, ``cancel``, ``end_turn``, ``play_earcon``… on the core, effects carried out."""
        if name == "engage":
            kwargs.setdefault("source", "test")
            result = self.core.engage(self.now, *args, **kwargs)
        else:
            result = getattr(self.core, name)(*args if name == "play_earcon" else (self.now, *args), **kwargs)
        self._carry_out()
        return result

    def _carry_out(self) -> None:
        for effect in self.core.effects():
            self.effects.append(effect)
            match effect:
                case fx.SendAudio(pcm=pcm):
                    self.sent.audio.append(pcm)
                case fx.CommitAudio():
                    self.sent.commits += 1
                case fx.Interrupt():
                    self.sent.interrupts.append(effect)
                    self._speaker.clear()
                    self._finishing = False
                    self._reply_keys = []
                case fx.OpenLink():
                    self.sent.opens += 1
                case fx.CloseLink():
                    self.sent.closes += 1
                case fx.PlayCue(key=key, pcm=pcm):
                    self._started.discard(key)
                    self.play(resample(pcm, 24000, RATE), key)
                case fx.PlayReply(item_id=item, pcm=pcm, rate_hz=rate):
                    if item not in self._reply_keys:
                        self._reply_keys.append(item)
                    self.play(resample(pcm, rate, RATE), item)
                case fx.FinishPlayback():
                    self._finishing = True
                case fx.StopPlayback():
                    self._speaker = deque((k, p) for k, p in self._speaker if is_earcon(k))
                case _:
                    pass

    # ------------------------------------------------------------------ scripted exchange

    def session_ready(self) -> None:
        self.link(rs.SessionReady("sess"))

    def reply(self, pcm24k: NDArray[np.int16]) -> None:
        """The server's next reply: started, its audio in one delta, done."""
        self._replies += 1
        item, response = f"item_{self._replies}", f"resp_{self._replies}"
        self.link(rs.ResponseStarted(response))
        self.link(rs.PlayAudio(item, 0, response, pcm24k))
        self.link(rs.ResponseDone(response, "completed", None))
