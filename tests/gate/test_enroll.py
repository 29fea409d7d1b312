"""earshot enroll: takes from WAV files, agreement check, storage the template engine reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.config import WakewordConfig
from earshot.gate.enroll import Take, check_takes, main
from earshot.gate.wakeword import build_wakeword
from tests.gate.corpus import say
from tests.support.speech import concat, silence, write_wav


def wav(tmp_path: Path, name: str, pcm: NDArray[np.int16]) -> str:
    return str(write_wav(tmp_path / name, concat(silence(0.6), pcm, silence(0.6)), 16000))


def takes(tmp_path: Path) -> list[str]:
    return [
        wav(tmp_path, "a.wav", say("hey jarvis", "slt")),
        wav(tmp_path, "b.wav", say("hey jarvis", "slt", "tempo", "0.95", "pitch", "50")),
        wav(tmp_path, "c.wav", say("hey jarvis", "slt", "tempo", "1.05", "pitch", "-50")),
    ]


def test_enrol_from_wavs_then_the_engine_hears_the_phrase(tmp_path: Path, capsys: object) -> None:
    """Three agreeing takes are trimmed and stored; the template engine built from them fires."""
    state = tmp_path / "state"
    assert main(["--from-wav", *takes(tmp_path), "--dir", str(state / "wakeword")]) == 0
    stored = sorted((state / "wakeword").glob("*.wav"))
    assert len(stored) == 3
    engine = build_wakeword(WakewordConfig(engine="template"), state)
    x = concat(silence(0.5), say("hey jarvis", "slt", "tempo", "0.9"), silence(1))
    assert any(engine.process(x[i : i + 160]) is not None for i in range(0, len(x), 160))


def test_a_take_of_another_phrase_is_rejected_and_nothing_changes(tmp_path: Path, capsys: object) -> None:
    """Two good takes plus one of a different sentence: the odd one is named, exit 1, no files."""
    good = takes(tmp_path)[:2]
    odd = wav(tmp_path, "odd.wav", say("turn on the lights", "slt"))
    out = tmp_path / "wakeword"
    assert main(["--from-wav", *good, odd, "--dir", str(out)]) == 1
    assert not out.exists() or list(out.glob("*.wav")) == []
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "odd.wav: REJECTED: does not match the other takes" in printed


def test_agreement_check_accepts_four_and_rejects_the_outlier(tmp_path: Path) -> None:
    """check_takes flags only the take far from the others."""
    pcms = [say("hey jarvis", "slt", *fx) for fx in [(), ("tempo", "0.9"), ("tempo", "1.1"), ("pitch", "80")]]
    pcms.append(say("play some jazz music", "slt"))
    verdicts = check_takes([Take(str(i), p) for i, p in enumerate(pcms)])
    assert [v.reason is None for v in verdicts] == [True, True, True, True, False]


def test_reenrolling_keeps_the_previous_set(tmp_path: Path) -> None:
    """A new enrolment moves the old takes to previous/."""
    out = tmp_path / "wakeword"
    assert main(["--from-wav", *takes(tmp_path), "--dir", str(out)]) == 0
    assert main(["--from-wav", *takes(tmp_path), "--dir", str(out)]) == 0
    assert len(list(out.glob("*.wav"))) == 3
    assert len(list((out / "previous").glob("*.wav"))) == 3


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    """Too few takes or an unreadable file exit 78."""
    assert main(["--takes", "2", "--from-wav", *takes(tmp_path), "--dir", str(tmp_path / "w")]) == 78
    assert main(["--from-wav", str(tmp_path / "missing.wav"), "--dir", str(tmp_path / "w")]) == 78


def test_enrol_the_stop_phrase_into_the_state_dir_where_auto_finds_it(tmp_path: Path, capsys: object) -> None:
    """``--stop`` stores the takes in <state_dir>/stopword (from the config), where gate.stop_word's
    auto finds them."""
    from earshot.config import StopWordConfig
    from earshot.gate.wakeword import build_stop_word

    state = tmp_path / "state"
    config = tmp_path / "earshot.yaml"
    config.write_text(f"state_dir: {state}\n")
    stops = [
        wav(tmp_path, f"s{i}.wav", say("stop", "rms", *fx))
        for i, fx in enumerate([(), ("tempo", "0.95", "pitch", "50"), ("tempo", "1.05", "pitch", "-50")])
    ]
    assert main(["--stop", "--config", str(config), "--from-wav", *stops]) == 0
    assert len(sorted((state / "stopword").glob("*.wav"))) == 3
    assert not (state / "wakeword").exists()
    engine = build_stop_word(StopWordConfig(), state)
    assert engine is not None
    assert engine.name == "template:stopword"
    x = concat(silence(0.5), say("stop", "rms", "tempo", "0.9"), silence(1))
    assert any(engine.process(x[i : i + 160]) is not None for i in range(0, len(x), 160))
