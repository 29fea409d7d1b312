"""G.711 µ-law and A-law (ITU-T G.711) encode/decode for 8 kHz telephony audio.

The segment algorithm is the classic one of Sun's reference ``g711.c`` (the same as the CCITT tables);
encoding goes through a 65536-entry table, decoding through a 256-entry table, each built on first use.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_ulaw_encode() -> NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int32)
    pcm = sample >> 2  # 14-bit magnitude domain
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    pcm = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, pcm, side="left")
    uval = (seg << 4) | ((pcm >> (seg + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> NDArray[np.int16]:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & 0x0F) << 3) + _ULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_encode() -> NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int32)
    pcm = sample >> 3  # 13-bit domain
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    pcm = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, pcm, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((pcm >> shift) & 0xF)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg >= 2, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


# Built on first use, not at import: the encoders' int32 working arrays (256 KB each) grew the heap of
# every daemon by about 2 MB, and the default format (pcm16) never uses them.
_ulaw_enc = functools.cache(_build_ulaw_encode)
_ulaw_dec = functools.cache(_build_ulaw_decode)
_alaw_enc = functools.cache(_build_alaw_encode)
_alaw_dec = functools.cache(_build_alaw_decode)


def _index(pcm: NDArray[np.int16]) -> NDArray[np.int32]:
    return np.asarray(pcm, dtype=np.int16).astype(np.int32) + 32768


def _codes(data: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.uint8]:
    if isinstance(data, np.ndarray):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def ulaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """Encode int16 samples as G.711 µ-law bytes (one byte per sample)."""
    return bytes(_ulaw_enc()[_index(pcm)].tobytes())


def ulaw_decode(data: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode G.711 µ-law bytes to int16 samples."""
    return _ulaw_dec()[_codes(data)]


def alaw_encode(pcm: NDArray[np.int16]) -> bytes:
    """Encode int16 samples as G.711 A-law bytes (one byte per sample)."""
    return bytes(_alaw_enc()[_index(pcm)].tobytes())


def alaw_decode(data: bytes | bytearray | memoryview | NDArray[np.uint8]) -> NDArray[np.int16]:
    """Decode G.711 A-law bytes to int16 samples."""
    return _alaw_dec()[_codes(data)]
