"""Several wake words at once, and the stop phrase: the engines, the gate's runs of them, their config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.config import StopWordConfig, default_config, parse_config
from earshot.errors import ConfigError
from earshot.gate import gate as gt
from earshot.gate import wakeword
from earshot.gate.wakeword import (
    STOP_TEMPLATE_THRESHOLD,
    MicroWakeWordEngine,
    WakeWords,
    build_stop_word,
    build_wakeword,
    trim_silence,
)
from tests.gate.corpus import say
from tests.support.speech import concat, silence, write_wav

STOP_TAKES = [(), ("tempo", "0.95", "pitch", "50"), ("tempo", "1.05", "pitch", "-50")]


def enrol_stop(state_dir: Path, voice: str = "rms") -> Path:
    """Three takes of "stop" in <state_dir>/stopword, as `earshot enroll --stop` stores them."""
    directory = state_dir / "stopword"
    directory.mkdir(parents=True, exist_ok=True)
    for i, fx in enumerate(STOP_TAKES):
        write_wav(directory / f"take-{i}.wav", concat(silence(0.3), say("stop", voice, *fx), silence(0.3)), 16000)
    return directory


def feed(gate: gt.Gate, pcm: NDArray[np.int16], start: int = 0, *, user: bool = False) -> list[gt.GateEvent]:
    """Capture chunks through the gate; ``user``: the detectors hear the user in every loud chunk (as the
    barge-in detector says of a voice over the reply)."""
    events: list[gt.GateEvent] = []
    for i in range(0, len(pcm) - 159, 160):
        chunk = pcm[i : i + 160]
        if user and np.abs(chunk.astype(np.int32)).max() > 1000:
            gate.stop_user_heard(start + i)
        events += gate.process(_Chunk(chunk, start + i))
    return events


class _Chunk:
    def __init__(self, pcm: NDArray[np.int16], position: int) -> None:
        self.pcm = pcm
        self.position = position


ENGINES = ["pocketsphinx", "template"]


def _gate(yaml: str, state_dir: Path) -> gt.Gate:
    cfg = parse_config(yaml)
    wake = build_wakeword(cfg.gate.wakeword, state_dir) if cfg.gate.mode == "wakeword" else None
    return gt.Gate(cfg.gate, wakeword=wake, stop_word=build_stop_word(cfg.gate.stop_word, state_dir))


# ------------------------------------------------------------------------------ several wake words


def test_each_wake_word_is_heard_and_named_by_its_place() -> None:
    """hey_jarvis and okay_nabu at once: each phrase fires its own word (0: the first, 1: also[0])."""
    cfg = parse_config("gate:\n  wakeword:\n    also:\n      - model: okay_nabu\n")
    engine = build_wakeword(cfg.gate.wakeword, Path("/nonexistent"))
    assert isinstance(engine, WakeWords)
    assert engine.names == ["microwakeword:hey_jarvis", "microwakeword:okay_nabu"]
    gate = gt.Gate(cfg.gate, wakeword=engine)
    for phrase, word, name in (("okay nabu", 1, "okay_nabu"), ("hey jarvis", 0, "hey_jarvis")):
        gate.reset()
        wakes = [
            e for e in feed(gate, concat(silence(1.2), say(phrase, "slt"), silence(1.0))) if isinstance(e, gt.Wake)
        ]
        assert len(wakes) == 1, (phrase, wakes)
        assert wakes[0].word == word
        assert wakes[0].engine == f"microwakeword:{name}"
    gate.reset()
    assert not [e for e in feed(gate, concat(silence(1.2), say("what time is it", "slt"))) if isinstance(e, gt.Wake)]


def test_one_wake_word_stays_a_single_engine() -> None:
    engine = build_wakeword(default_config().gate.wakeword, Path("/nonexistent"))
    assert isinstance(engine, MicroWakeWordEngine)


def test_a_word_that_cannot_be_built_is_named_by_its_key(tmp_path: Path) -> None:
    cfg = parse_config("gate:\n  wakeword:\n    also:\n      - model: no_such_word\n")
    with pytest.raises(ConfigError, match=r"gate\.wakeword\.also\[0\]"):
        build_wakeword(cfg.gate.wakeword, tmp_path)


@pytest.mark.parametrize(
    ("yaml", "key", "problem"),
    [
        ("gate:\n  wakeword:\n    profile: kids\n", "gate.wakeword.profile", "no realtime.profiles entry"),
        ("gate:\n  wakeword:\n    also:\n      - profile: kids\n", "gate.wakeword.also[0].model", "required"),
        ("gate:\n  wakeword:\n    also:\n      - model: hey_jarvis\n", "gate.wakeword.also[0]", "same wake word twice"),
        (
            "realtime:\n  profiles:\n    - name: a\n    - name: a\n",
            "realtime.profiles[1].name",
            "duplicate profile name",
        ),
        ("realtime:\n  profiles:\n    - name: 'a b'\n", "realtime.profiles[0].name", "must be 1-64"),
        (
            "realtime:\n  builtin_tools: [datetime]\n  profiles:\n"
            "    - name: kids\n      tools: [get_datetime, set_timer]\n",
            "realtime.profiles[0].tools",
            "'set_timer' is no tool the config offers",
        ),
        ("gate:\n  stop_word:\n    engine: microwakeword\n", "gate.stop_word.model", "no stop model is bundled"),
    ],
)
def test_config_errors_name_the_key_and_line(yaml: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(yaml)
    text = str(err.value)
    assert key in text, text
    assert problem in text, text
    assert "(line " in text, text


def test_profiles_and_words_load() -> None:
    cfg = parse_config(
        """
gate:
  wakeword:
    profile: grown-ups
    also:
      - model: okay_nabu
        profile: kids
realtime:
  profiles:
    - name: kids
      instructions: Speak simply, for a child.
      voice: alloy
      tools: [get_datetime]
    - name: grown-ups
"""
    )
    assert cfg.gate.wakeword.also[0].profile == "kids"
    assert cfg.realtime.profiles[0].tools == ("get_datetime",)
    assert cfg.realtime.profiles[1].instructions is None


# ------------------------------------------------------------------------------ the stop phrase


def test_auto_takes_the_enrolled_takes_and_never_pocketsphinx(tmp_path: Path) -> None:
    """pocketsphinx is installed here, yet auto does not take it (too slow for a Pi 3 core): without
    takes there is no stop phrase; with them, the template engine at its stop threshold."""
    assert build_stop_word(StopWordConfig(), tmp_path) is None
    enrol_stop(tmp_path)
    engine = build_stop_word(StopWordConfig(), tmp_path)
    assert engine is not None
    assert engine.name == "template:stopword"
    assert getattr(engine, "threshold", None) == STOP_TEMPLATE_THRESHOLD
    assert build_stop_word(StopWordConfig(engine="off"), tmp_path) is None
    explicit = build_stop_word(StopWordConfig(engine="pocketsphinx"), tmp_path)
    assert explicit is not None
    assert explicit.name == "pocketsphinx"


def test_an_explicit_stop_engine_without_takes_says_how_to_enrol(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gate\.stop_word.*earshot enroll"):
        build_stop_word(StopWordConfig(engine="template"), tmp_path)


def test_pocketsphinx_listens_for_stop_from_text_and_names_its_key() -> None:
    engine = build_stop_word(StopWordConfig(engine="pocketsphinx"), Path("/nonexistent"))
    assert engine is not None
    assert engine.name == "pocketsphinx"
    with pytest.raises(ConfigError, match=r"gate\.stop_word\.keyphrase: not in the dictionary: zzxq"):
        build_stop_word(StopWordConfig(engine="pocketsphinx", keyphrase="stop zzxq"), Path("/nonexistent"))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_gate_listens_for_stop_only_when_told(tmp_path: Path, engine: str) -> None:
    """In vad mode too: not listening, the engine never runs; listening, "stop" is a StopWord, and a
    question is not."""
    enrol_stop(tmp_path)
    gate = _gate(f"gate:\n  mode: vad\n  stop_word:\n    engine: {engine}\n", tmp_path)
    assert gate.stop_engine is not None
    stop = concat(silence(1.0), say("stop", "rms", "tempo", "0.9"), silence(1.0))
    assert not [e for e in feed(gate, stop) if isinstance(e, gt.StopWord)]
    assert gate.stop_engine_calls == 0
    gate.set_stop_listening(True)
    # Listening, but nobody heard over the device's sound (the canceller's residual): the engine stays off.
    assert not [e for e in feed(gate, stop, 50_000) if isinstance(e, gt.StopWord)]
    assert gate.stop_engine_calls == 0
    heard = [e for e in feed(gate, stop, 100_000, user=True) if isinstance(e, gt.StopWord)]
    assert len(heard) == 1, heard
    assert heard[0].engine == ("template:stopword" if engine == "template" else "pocketsphinx")
    assert 100_000 + 16000 * 0.8 <= heard[0].start_position <= 100_000 + 16000 * 1.3
    question = concat(silence(0.5), say("what about the weekend then", "rms"), silence(1.0))
    assert not [e for e in feed(gate, question, 300_000, user=True) if isinstance(e, gt.StopWord)]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stop_run_under_way_finishes_its_word_and_never_outlasts_its_cap(tmp_path: Path, engine: str) -> None:
    """Told to stop listening mid-word (a barge-in ends the reply), the run still hears the word out;
    a long stretch of speech keeps it no longer than STOP_RUN_MAX_MS, so "stop" late in a sentence
    is not the stop phrase."""
    enrol_stop(tmp_path)
    gate = _gate(f"gate:\n  mode: vad\n  stop_word:\n    engine: {engine}\n", tmp_path)
    gate.set_stop_listening(True)
    word = trim_silence(say("stop", "rms", "pitch", "100"))
    pcm = concat(silence(1.0), word, silence(1.0))
    cut = 0
    gate.stop_user_heard(16000)  # the detector hears the user from the word's onset
    while not any(isinstance(e, gt.SpeechStarted) for e in gate.process(_Chunk(pcm[cut : cut + 160], cut))):
        cut += 160
    cut += 160
    assert cut < 16000 + len(word) - 3200, "the VAD took most of the word to start"
    gate.set_stop_listening(False)  # just after the speech start: the run has begun
    events = feed(gate, pcm[cut:], cut)
    assert [e for e in events if isinstance(e, gt.StopWord)], "the run under way did not finish the word"
    # A long question while listening: the engine's calls stop at the cap.
    gate.reset()
    gate.set_stop_listening(True)
    talk = concat(*(say(s, "rms") for s in ("tell me about the weather", "and then the news", "and the traffic")))
    before = gate.stop_engine_calls
    feed(gate, concat(silence(0.5), talk), 500_000, user=True)
    cap_chunks = gt.STOP_RUN_MAX_MS // 10 + 40  # the run, plus the lead-in fed in one call
    assert 0 < gate.stop_engine_calls - before <= cap_chunks, (gate.stop_engine_calls - before, len(talk) / 16000)
    gate.reset()
    late = concat(silence(0.5), say("please go on and then do not stop the music", "rms"), silence(1.0))
    assert not [e for e in feed(gate, late, 900_000, user=True) if isinstance(e, gt.StopWord)]


class _Sizes:
    """The real engine, with the size of every piece of audio it is given recorded."""

    def __init__(self, engine: wakeword.WakeWordEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.sizes: list[int] = []

    def process(self, pcm16k: NDArray[np.int16]) -> float | None:
        self.sizes.append(len(pcm16k))
        return self.engine.process(pcm16k)

    def reset(self) -> None:
        self.engine.reset()


def test_the_stop_engine_catches_up_on_its_lead_in_a_pace_at_a_time() -> None:
    """pocketsphinx costs 20 ms here (12x on a Pi 3 core) for a 0.7 s lead-in in one call: the gate gives
    it at most STOP_PACE_MS a chunk, and it still hears the word, in order, nothing skipped."""
    engine = build_stop_word(StopWordConfig(engine="pocketsphinx"), Path("/nonexistent"))
    assert engine is not None
    sizes = _Sizes(engine)
    cfg = parse_config("gate:\n  mode: vad\n")
    gate = gt.Gate(cfg.gate, wakeword=None, stop_word=sizes)
    gate.set_stop_listening(True)
    word = say("stop", "rms", "tempo", "0.9")
    pcm = concat(silence(1.0), word, silence(1.2))
    heard = [e for e in feed(gate, pcm, user=True) if isinstance(e, gt.StopWord)]
    assert len(heard) == 1
    pace = 16000 * gt.STOP_PACE_MS // 1000
    assert max(sizes.sizes) <= pace
    assert sizes.sizes[0] == pace  # the lead-in did not go in one call
    # Everything from the lead-in's start to the run's end, once each: 300 ms before the speech start on.
    assert sum(sizes.sizes) >= len(word) + 16000 * gt.LEAD_IN_MS // 1000
