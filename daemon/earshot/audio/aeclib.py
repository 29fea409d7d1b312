"""The echo canceller's native library: pyaec's bundled speexdsp, or the system's libspeexdsp.

Both are reached through the same three entry points, pyaec's: ``AecNew(frame, filter_length, rate,
preprocess)``, ``AecCancelEcho(handle, mic, reference, out, n)`` and ``AecDestroy(handle)``. pyaec's
own Python wrapper marshals every frame through Python lists, which was most of its cost; the
canceller (:mod:`earshot.audio.echo`) calls these C entry points directly on numpy buffers.
"""

from __future__ import annotations

import ctypes
from typing import Any

from earshot.errors import AudioDeviceError

__all__ = ["C_INT16_P", "SpeexDsp", "SpeexHandle", "library_name", "load_library"]

C_INT16_P = ctypes.POINTER(ctypes.c_int16)
"""``int16_t *``: what the entry points take (``ndarray.ctypes.data_as(C_INT16_P)``)."""


def load_library(library: str = "auto") -> Any:
    """The canceller's C entry points (``AecNew``, ``AecCancelEcho``, ``AecDestroy``).

    ``pyaec``: its bundled speexdsp (wheels for x86_64 and aarch64). ``speexdsp``: the system's
    ``libspeexdsp`` (Debian's ``libspeexdsp1``, on every architecture) through :class:`SpeexDsp`.
    ``auto``: pyaec, else the system library: on Raspberry Pi OS armhf pyaec has no wheel.

    Raises:
        AudioDeviceError: no canceller library could be loaded.
    """
    problems = []
    if library in ("auto", "pyaec"):
        try:
            import pyaec  # imported lazily: its import loads a shared library

            lib = getattr(pyaec, "lib", None)
            if lib is None:
                raise OSError("pyaec could not load libaec")
            lib.AecCancelEcho.argtypes = [ctypes.c_void_p, C_INT16_P, C_INT16_P, C_INT16_P, ctypes.c_size_t]
            lib.AecCancelEcho.restype = None
            return lib
        except (ImportError, OSError, AttributeError) as exc:  # pyaec sets up lib at import; None when it failed
            problems.append(f"pyaec unavailable: {exc}")
    if library in ("auto", "speexdsp"):
        try:
            return SpeexDsp()
        except OSError as exc:
            problems.append(f"libspeexdsp unavailable: {exc}")
    raise AudioDeviceError("echo canceller", "; ".join(problems) or f"unknown library {library!r}")


def library_name(lib: Any) -> str:
    """``speexdsp`` (the system's library) or ``pyaec``, for what :func:`load_library` returned."""
    return "speexdsp" if isinstance(lib, SpeexDsp) else "pyaec"


_SPEEX_ECHO_SET_SAMPLING_RATE = 24
_SPEEX_PREPROCESS_SET_ECHO_STATE = 24


class SpeexHandle:
    """The two native states of one canceller (the preprocessor's may be absent)."""

    __slots__ = ("echo", "pre")

    def __init__(self, echo: int, pre: int | None) -> None:
        self.echo = echo
        self.pre = pre


class SpeexDsp:
    """The system's libspeexdsp behind pyaec's three entry points.

    The MDF filter, then (optionally) the preprocessor with the echo state attached (its residual
    echo and noise suppressor), as pyaec does. Debian ships ``libspeexdsp1`` on every architecture,
    so this serves where pyaec has no wheel (armhf). It is speexdsp 1.2.1, pyaec bundles a newer
    tree: through this canceller (alignment, preprocessor) on the test rooms the echo reduction was
    40.4 / 27.8 / 24.0 dB against pyaec's 39.6 / 26.9 / 29.0 (20, 40, 60 ms noisy), in 52 µs a
    frame against 64; its running ERLE estimate read up to 10 dB high. pyaec stays first.

    Raises:
        OSError: libspeexdsp is not installed.
    """

    def __init__(self) -> None:
        # By its soname: ctypes.util.find_library would run ldconfig (a child process, and an edge
        # import of subprocess in this pure module).
        lib = ctypes.CDLL("libspeexdsp.so.1")
        vp, i16 = ctypes.c_void_p, C_INT16_P
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_state_init.restype = vp
        lib.speex_echo_state_destroy.argtypes = [vp]
        lib.speex_echo_state_destroy.restype = None
        lib.speex_echo_ctl.argtypes = [vp, ctypes.c_int, vp]
        lib.speex_echo_ctl.restype = ctypes.c_int
        lib.speex_echo_cancellation.argtypes = [vp, i16, i16, i16]
        lib.speex_echo_cancellation.restype = None
        lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_preprocess_state_init.restype = vp
        lib.speex_preprocess_state_destroy.argtypes = [vp]
        lib.speex_preprocess_state_destroy.restype = None
        lib.speex_preprocess_ctl.argtypes = [vp, ctypes.c_int, vp]
        lib.speex_preprocess_ctl.restype = ctypes.c_int
        lib.speex_preprocess_run.argtypes = [vp, i16]
        lib.speex_preprocess_run.restype = ctypes.c_int
        self._lib = lib

    def AecNew(self, frame: int, filter_length: int, rate: int, preprocess: bool) -> SpeexHandle | None:
        """Create the filter (and the preprocessor): pyaec's ``AecNew``."""
        lib = self._lib
        echo = lib.speex_echo_state_init(frame, filter_length)
        if not echo:
            return None
        value = ctypes.c_int(rate)
        lib.speex_echo_ctl(echo, _SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(value))
        pre = None
        if preprocess:
            pre = lib.speex_preprocess_state_init(frame, rate)
            if not pre:
                lib.speex_echo_state_destroy(echo)
                return None
            lib.speex_preprocess_ctl(pre, _SPEEX_PREPROCESS_SET_ECHO_STATE, echo)
        return SpeexHandle(echo, pre)

    def AecCancelEcho(self, handle: SpeexHandle, mic: Any, ref: Any, out: Any, n: int) -> None:
        """Cancel one frame: pyaec's ``AecCancelEcho``."""
        self._lib.speex_echo_cancellation(handle.echo, mic, ref, out)
        if handle.pre is not None:
            self._lib.speex_preprocess_run(handle.pre, out)

    def AecDestroy(self, handle: SpeexHandle) -> None:
        """Free both states: pyaec's ``AecDestroy``."""
        if handle.pre is not None:
            self._lib.speex_preprocess_state_destroy(handle.pre)
        self._lib.speex_echo_state_destroy(handle.echo)
