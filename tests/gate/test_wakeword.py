"""Wake-word engines: hits on the phrase, misses on other speech, and their configuration errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.config import WakewordConfig
from earshot.errors import ConfigError
from earshot.gate.wakeword import (
    MicroWakeWordEngine,
    OpenWakeWordEngine,
    PocketsphinxEngine,
    TemplateEngine,
    WakeWordEngine,
    build_wakeword,
    trim_silence,
)
from tests.gate.corpus import human_negatives, say
from tests.support.speech import FLITE_VOICES, concat, silence, write_wav

VARIANTS: list[tuple[str, ...]] = [(), ("tempo", "0.85"), ("tempo", "1.15"), ("pitch", "150"), ("pitch", "-150")]
OTHER_SENTENCES = ("what time is it", "turn on the lights", "hello there how are you", "play some jazz music")


def fires(engine: WakeWordEngine, pcm: NDArray[np.int16], chunk: int = 160) -> bool:
    """Feed a clip padded with silence (the engine's lead-in before it) in capture chunks; did it fire?"""
    engine.reset()
    x = concat(silence(getattr(engine, "lead_in_ms", 300) / 1000), pcm, silence(0.8))
    return any(engine.process(x[i : i + chunk]) is not None for i in range(0, len(x), chunk))


@pytest.fixture(scope="module")
def oww() -> OpenWakeWordEngine:
    return OpenWakeWordEngine("hey_jarvis")


def test_openwakeword_hears_hey_jarvis_from_every_voice(oww: OpenWakeWordEngine) -> None:
    """hey_jarvis at the default threshold: at least 90 % of clean flite takes."""
    takes = [say("hey jarvis", v, *fx) for v in FLITE_VOICES for fx in VARIANTS]
    hits = sum(fires(oww, t) for t in takes)
    assert hits >= 0.9 * len(takes), f"{hits}/{len(takes)}"


def test_openwakeword_ignores_human_speech(oww: OpenWakeWordEngine) -> None:
    """No false wake on real human prompts (asterisk, alsa-utils) nor on other flite sentences."""
    false = [name for name, pcm in human_negatives(limit=60) if fires(oww, pcm, chunk=1280)]
    false += [s for s in OTHER_SENTENCES for v in ("slt", "rms") if fires(oww, say(s, v))]
    assert false == []


def test_openwakeword_trigger_level_needs_consecutive_windows() -> None:
    """A trigger level beyond the phrase's windows over threshold never fires."""
    strict = OpenWakeWordEngine("hey_jarvis", trigger_level=50)
    assert not fires(strict, say("hey jarvis", "kal16"))
    assert fires(OpenWakeWordEngine("hey_jarvis", trigger_level=2), say("hey jarvis", "kal16"))


def test_openwakeword_reset_forgets_a_half_heard_phrase(oww: OpenWakeWordEngine) -> None:
    """After reset the engine scores a fresh stream, the same as a new engine."""
    take = concat(silence(0.3), say("hey jarvis", "rms"), silence(0.8))
    oww.reset()
    first = [oww.process(take[i : i + 160]) for i in range(0, len(take), 160)]
    oww.reset()
    second = [oww.process(take[i : i + 160]) for i in range(0, len(take), 160)]
    assert first == second
    assert any(s is not None for s in first)


def test_openwakeword_bad_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a bundled model"):
        OpenWakeWordEngine(str(tmp_path / "nope.tflite"))


@pytest.fixture(scope="module")
def mww() -> MicroWakeWordEngine:
    return MicroWakeWordEngine("hey_jarvis")


def test_microwakeword_is_the_default_engine(tmp_path: Path) -> None:
    engine = build_wakeword(WakewordConfig(), tmp_path)
    assert isinstance(engine, MicroWakeWordEngine)
    assert engine.name == "microwakeword:hey_jarvis"
    assert engine.threshold == pytest.approx(0.85)


def test_microwakeword_hears_hey_jarvis_from_every_voice(mww: MicroWakeWordEngine) -> None:
    """hey_jarvis at the default threshold: at least 90 % of clean flite takes, tempo and pitch varied."""
    takes = [say("hey jarvis", v, *fx) for v in FLITE_VOICES for fx in VARIANTS]
    hits = sum(fires(mww, t) for t in takes)
    assert hits >= 0.9 * len(takes), f"{hits}/{len(takes)}"


def test_microwakeword_ignores_human_speech(mww: MicroWakeWordEngine) -> None:
    """No false wake on real human prompts (asterisk, alsa-utils) nor on other flite sentences."""
    false = [name for name, pcm in human_negatives(limit=60) if fires(mww, pcm, chunk=1280)]
    false += [s for s in OTHER_SENTENCES for v in ("slt", "rms") if fires(mww, say(s, v))]
    assert false == []


def test_microwakeword_reset_forgets_a_half_heard_phrase(mww: MicroWakeWordEngine) -> None:
    """After reset the engine scores a fresh stream, the same as a new engine; any chunk size works."""
    take = concat(silence(1.0), say("hey jarvis", "rms"), silence(0.8))
    half = take[: take.size // 2]
    mww.reset()
    for i in range(0, half.size, 160):
        mww.process(half[i : i + 160])
    mww.reset()
    first = [mww.process(take[i : i + 160]) for i in range(0, len(take), 160)]
    fresh = MicroWakeWordEngine("hey_jarvis")
    second = [fresh.process(take[i : i + 160]) for i in range(0, len(take), 160)]
    assert first == second
    assert any(s is not None for s in first)
    mww.reset()
    assert any(mww.process(take[i : i + 1000]) is not None for i in range(0, len(take), 1000))


def test_microwakeword_threshold_and_trigger_level_are_honoured() -> None:
    take = say("hey jarvis", "kal16")
    assert not fires(MicroWakeWordEngine("hey_jarvis", threshold=1.0), take)  # a mean never exceeds 1
    assert fires(MicroWakeWordEngine("hey_jarvis", threshold=0.5), take)
    # The windowed mean crosses the cutoff for about one inference: a long trigger level never fires.
    assert not fires(MicroWakeWordEngine("hey_jarvis", trigger_level=50), take)


def test_microwakeword_bad_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a bundled microWakeWord model"):
        MicroWakeWordEngine(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "micro"}')
    with pytest.raises(ConfigError, match="cannot load"):
        MicroWakeWordEngine(str(broken))


def test_pocketsphinx_spots_the_keyphrase() -> None:
    """The keyphrase spotter hears hey jarvis from most voices and not other sentences."""
    ps = PocketsphinxEngine("hey jarvis")
    takes = [say("hey jarvis", v) for v in ("rms", "awb", "kal16")]
    assert sum(fires(ps, t) for t in takes) >= 2
    assert not any(fires(ps, say(s, "rms")) for s in OTHER_SENTENCES[:2])


def test_pocketsphinx_unknown_word_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not in the dictionary"):
        PocketsphinxEngine("hey zxqwv")


def enrolled_slt() -> list[NDArray[np.int16]]:
    """Three takes of one voice, as a user would record them: slightly different each time."""
    return [
        trim_silence(say("hey jarvis", "slt")),
        trim_silence(say("hey jarvis", "slt", "tempo", "0.95", "pitch", "50")),
        trim_silence(say("hey jarvis", "slt", "tempo", "1.05", "pitch", "-50")),
    ]


def test_template_hears_the_enrolled_voice() -> None:
    """MFCC+DTW templates: at least 90 % of other takes of the enrolled voice (tempo/pitch varied)."""
    engine = TemplateEngine(enrolled_slt())
    tests = [
        ("tempo", "0.85"),
        ("tempo", "1.15"),
        ("pitch", "150"),
        ("pitch", "-150"),
        ("tempo", "0.9", "pitch", "100"),
    ]
    tests += [("tempo", "1.1", "pitch", "-100"), ("tempo", "0.8"), ("pitch", "100", "reverb", "20")]
    hits = sum(fires(engine, say("hey jarvis", "slt", *fx)) for fx in tests)
    assert hits >= 0.9 * len(tests), f"{hits}/{len(tests)}"


def test_template_rejects_other_voices_and_sentences() -> None:
    """Other voices saying the phrase, and the enrolled voice saying other things, do not fire."""
    engine = TemplateEngine(enrolled_slt())
    others = [say("hey jarvis", v) for v in ("rms", "awb", "kal16")]
    others += [say(s, "slt") for s in OTHER_SENTENCES]
    assert [fires(engine, x) for x in others] == [False] * len(others)


def test_template_needs_three_takes(tmp_path: Path) -> None:
    """build_wakeword without an enrolment says how to enrol."""
    with pytest.raises(ConfigError, match="earshot enroll"):
        build_wakeword(WakewordConfig(engine="template"), tmp_path)


def test_build_wakeword_loads_enrolled_takes(tmp_path: Path) -> None:
    """Takes in <state_dir>/wakeword are what the template engine matches."""
    (tmp_path / "wakeword").mkdir()
    for i, take in enumerate(enrolled_slt()):
        write_wav(tmp_path / "wakeword" / f"take-{i}.wav", concat(silence(0.5), take, silence(0.5)), 16000)
    engine = build_wakeword(WakewordConfig(engine="template"), tmp_path)
    assert engine.name == "template"
    assert fires(engine, say("hey jarvis", "slt", "tempo", "0.9"))
    assert not fires(engine, say("play some jazz music", "slt"))
