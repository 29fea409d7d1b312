"""A small private G.711 codec (μ-law and A-law), so the emulator checks the daemon's codec independently.

Scalar reference algorithms (ITU-T G.711, as in the classic Sun ``g711.c``) are turned into lookup
tables once; encoding a buffer is then one numpy indexing operation.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _ulaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode_one(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent = (byte >> 4) & 0x07
    magnitude = (((byte & 0x0F) << 3) + _ULAW_BIAS) << exponent
    magnitude -= _ULAW_BIAS
    return -magnitude if byte & 0x80 else magnitude


def _alaw_encode_one(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    seg = next((i for i, end in enumerate(_ALAW_SEG_END) if value <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (value >> 1) & 0x0F if seg < 2 else (value >> seg) & 0x0F
    return aval ^ mask


def _alaw_decode_one(byte: int) -> int:
    byte ^= 0x55
    magnitude = (byte & 0x0F) << 4
    seg = (byte & 0x70) >> 4
    if seg == 0:
        magnitude += 8
    elif seg == 1:
        magnitude += 0x108
    else:
        magnitude = (magnitude + 0x108) << (seg - 1)
    return magnitude if byte & 0x80 else -magnitude


@functools.cache
def _tables(law: str) -> tuple[NDArray[np.uint8], NDArray[np.int16]]:
    encode_one, decode_one = (
        (_ulaw_encode_one, _ulaw_decode_one) if law == "ulaw" else (_alaw_encode_one, _alaw_decode_one)
    )
    encode = np.array([encode_one(s) for s in range(-32768, 32768)], dtype=np.uint8)
    decode = np.array([decode_one(b) for b in range(256)], dtype=np.int16)
    return encode, decode


def encode(pcm: NDArray[np.int16], law: str) -> bytes:
    """Encode int16 samples as G.711 bytes (``law`` is ``"ulaw"`` or ``"alaw"``)."""
    table, _ = _tables(law)
    return table[pcm.astype(np.int32) + 32768].tobytes()


def decode(data: bytes, law: str) -> NDArray[np.int16]:
    """Decode G.711 bytes to int16 samples (``law`` is ``"ulaw"`` or ``"alaw"``)."""
    _, table = _tables(law)
    return table[np.frombuffer(data, dtype=np.uint8)]
