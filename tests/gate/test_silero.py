"""The numpy Silero runtime computes the ONNX model's graph on the shipped weights."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.gate.silero import WINDOW_SAMPLES, NumpySilero, load_weights
from earshot.gate.vad import Silero, default_silero_model
from tests.gate.corpus import mix_at_snr, pink_noise, say
from tests.support.speech import concat, silence

needs_onnx = pytest.mark.skipif(not default_silero_model().is_file(), reason="scripts/setup installs the ONNX file")


def _stream() -> np.ndarray:
    """Silence, a user's question, a question in pink noise at 5 dB SNR, silence: int16 at 16 kHz."""
    question = say("hey jarvis, what is the weather like tomorrow", "rms")
    noisy = mix_at_snr(say("set a timer for ten minutes", "slt"), pink_noise(4.0, seed=2), 5.0)
    return concat(silence(0.5), question, silence(0.4), noisy, silence(0.5))


@needs_onnx
def test_numpy_runtime_matches_onnxruntime_on_the_same_model() -> None:
    """Window by window, through a reset, the probabilities agree with onnxruntime's to 1e-5.

    Both read the same weights (scripts/silero-weights extracted them from that ONNX file); any
    mistake in the graph (padding, gate order, the context carried between calls) shows up here
    as differences of 0.01 and more."""
    pytest.importorskip("onnxruntime")
    pcm = _stream()
    ours, theirs = NumpySilero(), Silero(default_silero_model())
    a, b = [], []
    n = WINDOW_SAMPLES
    for k, i in enumerate(range(0, len(pcm) - n + 1, n)):
        if k == 40:
            ours.reset()
            theirs.reset()
        a.append(ours.probability(pcm[i : i + n]))
        b.append(theirs.probability(pcm[i : i + n]))
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5
    assert max(a) > 0.9
    assert min(a) < 0.1  # it separates speech from silence at all


def test_speech_is_speech_and_silence_is_not() -> None:
    """Without the ONNX file too: a plain install's second stage hears the question, not the quiet."""
    silero = NumpySilero()
    n = WINDOW_SAMPLES
    quiet = silence(1.0)
    question = say("what time is it in tokyo", "rms")
    probs_quiet = [silero.probability(quiet[i : i + n]) for i in range(0, len(quiet) - n + 1, n)]
    probs_speech = [silero.probability(question[i : i + n]) for i in range(0, len(question) - n + 1, n)]
    assert max(probs_quiet) < 0.1
    assert sum(p > 0.5 for p in probs_speech) > 0.5 * len(probs_speech)
    assert silero.calls == len(probs_quiet) + len(probs_speech)


def test_reset_starts_the_stream_afresh_and_floats_equal_int16() -> None:
    pcm = _stream()[: 20 * WINDOW_SAMPLES]
    n = WINDOW_SAMPLES
    silero = NumpySilero()
    first = [silero.probability(pcm[i : i + n]) for i in range(0, len(pcm), n)]
    silero.reset()
    floats = pcm.astype(np.float32) / 32768.0
    again = [silero.probability(floats[i : i + n]) for i in range(0, len(floats), n)]
    assert again == pytest.approx(first, abs=1e-6)


def test_wrong_sizes_and_wrong_weights_are_refused() -> None:
    silero = NumpySilero()
    with pytest.raises(ValueError, match="512"):
        silero.probability(np.zeros(100, dtype=np.int16))
    weights = load_weights()
    weights["stft.forward_basis_buffer"] = weights["stft.forward_basis_buffer"][:10]
    with pytest.raises(ValueError, match="STFT basis"):
        NumpySilero(weights)
    with pytest.raises(ValueError, match="decoder"):
        NumpySilero(load_weights() | {"decoder.rnn.weight_ih": np.zeros((3, 3), np.float32)})
    partial = load_weights()
    del partial["decoder.rnn.weight_ih"]
    with pytest.raises(KeyError):
        NumpySilero(partial)


def test_silero_starts_no_blas_threads_in_the_daemons_process() -> None:
    """numpy's OpenBLAS threads a product this size across every core and its workers spin after it:
    in the daemon that was 18 % of a core for a minute of talk. Importing earshot keeps BLAS to one
    thread (before numpy loads), unless the operator set it."""
    import os
    import subprocess
    import sys

    code = (
        "import os, earshot.gate.silero as s, numpy as np; m = s.NumpySilero(); "
        "[m.probability(np.full(512, 3000, np.int16)) for _ in range(20)]; print(len(os.listdir('/proc/self/task')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "1"
