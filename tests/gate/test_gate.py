"""The gate: VAD events, the engine only around speech, refractory, suppression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.config import GateConfig, SileroConfig, VadConfig, WakewordConfig
from earshot.gate.gate import WAKE_TAIL_MS, EndOfTurn, Gate, GateEvent, SpeechEnded, SpeechStarted, Wake
from earshot.gate.vad import Vad
from earshot.gate.wakeword import MicroWakeWordEngine, OpenWakeWordEngine, trim_silence
from tests.gate.corpus import human_negatives, pink_noise, say
from tests.support.speech import FLITE_VOICES, concat, silence

VARIANTS: list[tuple[str, ...]] = [(), ("tempo", "0.85"), ("tempo", "1.15"), ("pitch", "150"), ("pitch", "-150")]


@dataclass(frozen=True)
class Chunk:
    pcm: NDArray[np.int16]
    position: int


class CountingEngine:
    """A real engine wrapped to count the audio it is given."""

    def __init__(self, inner: OpenWakeWordEngine) -> None:
        self.inner = inner
        self.name = inner.name
        self.samples = 0
        self.first_call_sample: int | None = None

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        self.samples += len(pcm16k)
        return self.inner.process(pcm16k)

    def reset(self) -> None:
        self.inner.reset()


@pytest.fixture(scope="module")
def oww() -> OpenWakeWordEngine:
    return OpenWakeWordEngine("hey_jarvis")


def config(mode: str = "wakeword", refractory_s: float = 2.0, silero: str = "off") -> GateConfig:
    return GateConfig(
        mode=mode,  # type: ignore[arg-type]
        vad=VadConfig(silero=SileroConfig(enabled=silero)),  # type: ignore[arg-type]
        wakeword=WakewordConfig(engine="openwakeword", refractory_s=refractory_s),
    )


def feed(gate: Gate, pcm: NDArray[np.int16], start: int = 0) -> list[GateEvent]:
    events: list[GateEvent] = []
    for i in range(0, len(pcm) - 159, 160):
        events += gate.process(Chunk(pcm[i : i + 160], start + i))
    return events


def test_wake_on_the_phrase_with_its_start(oww: OpenWakeWordEngine) -> None:
    """hey jarvis between silences: SpeechStarted, Wake (start = speech start), SpeechEnded, EndOfTurn."""
    gate = Gate(config(), wakeword=oww)
    events = feed(gate, concat(silence(1), say("hey jarvis", "rms"), silence(2)), start=480_000)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, Wake, SpeechEnded, EndOfTurn]
    started, wake = events[0], events[1]
    assert isinstance(wake, Wake)
    assert wake.engine == "openwakeword:hey_jarvis"
    assert wake.score >= 0.5
    assert wake.start_position == started.position
    assert 480_000 + 16000 <= wake.start_position < wake.position


def test_engine_is_not_run_in_silence_or_steady_quiet(oww: OpenWakeWordEngine) -> None:
    """A quiet room costs only the VAD: the engine gets no audio at all."""
    engine = CountingEngine(oww)
    gate = Gate(config(silero="on"), wakeword=engine)
    quiet = (pink_noise(5.0) // 30).astype(np.int16)
    assert feed(gate, concat(silence(5), quiet)) == []
    assert engine.samples == 0
    assert gate.engine_calls == 0


def test_engine_sees_the_phrase_from_before_the_vad_start(oww: OpenWakeWordEngine) -> None:
    """The engine is fed from the ring: audio before the VAD's decision, not only after it."""
    engine = CountingEngine(oww)
    gate = Gate(config(), wakeword=engine)
    speech = say("what time is it", "slt")
    events = feed(gate, concat(silence(1), speech, silence(2)))
    started = next(e for e in events if isinstance(e, SpeechStarted))
    ended = next(e for e in events if isinstance(e, SpeechEnded))
    # from LEAD_IN before the start to the end decision (end_ms after the speech end)
    assert engine.samples >= ended.position - started.position + 4800


def test_refractory_suppresses_a_second_wake(oww: OpenWakeWordEngine) -> None:
    """Two phrases 1.5 s apart: one wake within a 5 s refractory period, two with 0.5 s."""
    phrase = say("hey jarvis", "kal16")
    audio = concat(silence(1), phrase, silence(1.5), phrase, silence(2))
    long_quiet = [e for e in feed(Gate(config(refractory_s=5.0), wakeword=oww), audio) if isinstance(e, Wake)]
    short_quiet = [e for e in feed(Gate(config(refractory_s=0.5), wakeword=oww), audio) if isinstance(e, Wake)]
    assert len(long_quiet) == 1
    assert len(short_quiet) == 2


def test_suppressed_gate_reports_speech_but_no_wake(oww: OpenWakeWordEngine) -> None:
    """While suppressed (engaged, or the device speaking) wakes are not computed; VAD events still flow."""
    engine = CountingEngine(oww)
    gate = Gate(config(), wakeword=engine)
    gate.set_suppressed(True)
    events = feed(gate, concat(silence(1), say("hey jarvis", "rms"), silence(2)))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, EndOfTurn]
    assert engine.samples == 0
    gate.set_suppressed(False)
    assert any(
        isinstance(e, Wake) for e in feed(gate, concat(silence(1), say("hey jarvis", "rms"), silence(2)), 200_000)
    )


def test_vad_mode_never_runs_the_engine(oww: OpenWakeWordEngine) -> None:
    """In gate.mode vad the speech events are the trigger; no engine runs."""
    engine = CountingEngine(oww)
    gate = Gate(config(mode="vad"), wakeword=engine)
    events = feed(gate, concat(silence(1), say("hey jarvis", "rms"), silence(2)))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, EndOfTurn]
    assert engine.samples == 0
    assert gate.engine is None


def test_odd_chunks_do_not_crash_the_gate(oww: OpenWakeWordEngine) -> None:
    """Empty chunks, position jumps and full-scale garbage are survived."""
    gate = Gate(config(), wakeword=oww)
    rng = np.random.default_rng(3)
    gate.process(Chunk(np.zeros(0, dtype=np.int16), 0))
    gate.process(Chunk(rng.integers(-32768, 32767, 160).astype(np.int16), 10**9))
    feed(gate, rng.integers(-32768, 32767, 16000).astype(np.int16), 10**9 + 5)
    gate.reset()
    assert feed(gate, silence(1)) == []


def wakes(gate: Gate, pcm: NDArray[np.int16], start: int = 0) -> int:
    gate.reset()
    return sum(isinstance(e, Wake) for e in feed(gate, pcm, start))


@pytest.mark.parametrize("silero", ["off", "on"])
def test_gate_hears_hey_jarvis_from_every_voice(oww: OpenWakeWordEngine, silero: str) -> None:
    """Through the whole Gate (engine only around VAD speech), default threshold: >= 90 % of clean takes.

    Each take is trimmed and placed after a different length of silence, so the engine's 80 ms hop
    falls at a different point of the phrase each time (the engine alone is only scored at one).
    """
    gate = Gate(config(silero=silero), wakeword=oww)
    takes = [trim_silence(say("hey jarvis", v, *fx)) for v in FLITE_VOICES for fx in VARIANTS]
    hits = [wakes(gate, concat(silence(1.0 + 0.013 * i), t, silence(1.5))) > 0 for i, t in enumerate(takes)]
    assert sum(hits) >= 0.9 * len(takes), f"{sum(hits)}/{len(takes)}"


def test_gate_never_wakes_on_human_speech_or_other_sentences(oww: OpenWakeWordEngine) -> None:
    """No false wake through the Gate on real human prompts nor on other flite sentences.

    Rhymes ("hey travis") are left out: the model itself scores them over 0.9 for some voices at any
    alignment; scripts/eval-gate reports such near misses apart.
    """
    gate = Gate(config(silero="on"), wakeword=oww)
    false = [name for name, pcm in human_negatives(limit=60) if wakes(gate, concat(silence(0.5), pcm, silence(1)))]
    sentences = ("what time is it", "jarvis is a name", "play some jazz music", "have you seen the keys")
    false += [
        f"{s}/{v}" for s in sentences for v in FLITE_VOICES if wakes(gate, concat(silence(1), say(s, v), silence(1.5)))
    ]
    assert false == []


def test_engine_keeps_listening_for_a_tail_after_a_short_end(oww: OpenWakeWordEngine) -> None:
    """With vad.end_ms far shorter than the model's delay, the engine hears a tail after the speech and wakes."""
    cfg = GateConfig(
        mode="wakeword",
        vad=VadConfig(end_ms=60, silero=SileroConfig(enabled="off")),
        wakeword=WakewordConfig(engine="openwakeword"),
    )
    engine = CountingEngine(oww)
    gate = Gate(cfg, wakeword=engine, vad=Vad(cfg.vad, silero=None))
    events = feed(gate, concat(silence(1), say("hey jarvis", "slt"), silence(2)))
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded, Wake, EndOfTurn]
    started, ended, wake = events[0], events[1], events[2]
    # the wake came after the VAD had already declared the end (end + end_ms)
    assert wake.position > ended.position + 60 * 16
    # fed from the lead-in before the start until the tail after the end, and not beyond
    until = ended.position + WAKE_TAIL_MS * 16
    first = started.position - 300 * 16
    assert until - first <= engine.samples < until - first + 160


@pytest.fixture(scope="module")
def mww() -> MicroWakeWordEngine:
    return MicroWakeWordEngine("hey_jarvis")


def default_config(silero: str = "on") -> GateConfig:
    return GateConfig(vad=VadConfig(silero=SileroConfig(enabled=silero)))  # type: ignore[arg-type]


@pytest.mark.parametrize("silero", ["off", "on"])
def test_default_gate_hears_hey_jarvis_from_every_voice(mww: MicroWakeWordEngine, silero: str) -> None:
    """The default engine (microWakeWord) through the whole Gate, default threshold: >= 90 % of clean takes.

    The gate resets the engine at each speech start and feeds it the ring from its lead-in (1 s), so
    the front end has settled on the room before the phrase.
    """
    gate = Gate(default_config(silero), wakeword=mww)
    takes = [trim_silence(say("hey jarvis", v, *fx)) for v in FLITE_VOICES for fx in VARIANTS]
    hits = [wakes(gate, concat(silence(1.0 + 0.013 * i), t, silence(1.5))) > 0 for i, t in enumerate(takes)]
    assert sum(hits) >= 0.9 * len(takes), f"{sum(hits)}/{len(takes)}"


def test_default_gate_never_wakes_on_human_speech_or_other_sentences(mww: MicroWakeWordEngine) -> None:
    """No false wake through the default gate on real human prompts, other flite sentences, or pink noise.

    Rhymes ("hey travis") are left out, as for openWakeWord: the model scores them like the phrase.
    """
    gate = Gate(default_config(), wakeword=mww)
    false = [name for name, pcm in human_negatives(limit=60) if wakes(gate, concat(silence(0.5), pcm, silence(1)))]
    sentences = ("what time is it", "jarvis is a name", "play some jazz music", "have you seen the keys")
    false += [
        f"{s}/{v}" for s in sentences for v in FLITE_VOICES if wakes(gate, concat(silence(1), say(s, v), silence(1.5)))
    ]
    if wakes(gate, pink_noise(10.0)):
        false.append("pink noise")
    assert false == []
