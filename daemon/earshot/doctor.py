"""``earshot doctor``: what works on this machine, each native part tried in a child process first.

A native engine that crashes (a segfault in TFLite's CPU probe, an illegal instruction in a wheel
built for another ARM) kills the process that loads it, and nothing in Python can catch that. So the
doctor loads each configured native part in its own child (``earshot doctor --probe NAME``), runs a
second of silence through it, and reads back one JSON line, the exit status or the timeout:

==========  =================================================================================
probe       what the child does
==========  =================================================================================
wakeword    builds ``gate.wakeword``'s engine and feeds it 1 s of silence
vad         webrtcvad, then the Silero stage ``gate.vad.silero`` asks for, on one window each
canceller   the echo canceller (``bargein.echo_cancel``), one reference and one microphone frame
capture     opens the microphone PCM (alsa backend) or reads the input WAV's header (file)
playback    opens the loudspeaker PCM (alsa backend)
==========  =================================================================================

In the doctor's own process, without loading anything native: whether an API key is there (never
read out), whether the clock is synchronised (TLS fails on a Pi that booted in 1970), whether the state
directory is writable.

The findings are recorded in ``<state dir>/doctor.json``. The daemon reads that record at start and
does not load a part that crashed or hung in a probe of the same earshot version and the same subject
(engine and model): it runs without it, says so in ``status`` (``disabled``) and in the log, and a new
``earshot doctor`` run clears it. :func:`interpret`, :func:`refusals` and the record format are pure
and tested without children.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from earshot import __version__
from earshot.config import Config

__all__ = [
    "PROBES",
    "RECORD_NAME",
    "Finding",
    "failed",
    "host_checks",
    "interpret",
    "load_record",
    "probe",
    "refusals",
    "run_doctor",
    "run_probe",
    "save_record",
    "subject",
]

PROBES = ("wakeword", "vad", "canceller", "capture", "playback")
RECORD_NAME = "doctor.json"
PROBE_TIMEOUT_S = 60.0
"""A probe that has not answered by then is taken as hung (a Pi Zero loads a model in a few seconds)."""
_MAX_ANSWER_BYTES = 64 * 1024
_BAD = ("failed", "crashed", "hung")
_REFUSE = ("crashed", "hung")
"""Only a native failure the daemon could not survive is refused; a Python error is its own message."""
_UNIT_KEY_FILE = Path("/etc/earshot/openai-api-key")
"""Where the unit's ``LoadCredential=`` takes the key from (scripts/install writes it)."""
_SECRET_ENV = ("OPENAI_API_KEY", "CREDENTIALS_DIRECTORY")
_CLOCK_FLOOR = 1_735_689_600
"""2025-01-01: a clock before this has not been set since boot."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: ``status`` is ok, failed, crashed, hung, busy, missing, off or warning."""

    name: str
    subject: str
    status: str
    detail: str


# ------------------------------------------------------------------------------ pure: subjects


def subject(name: str, config: Config) -> str | None:
    """What probe ``name`` tries under ``config`` (engine and model), or None if the config uses no such part."""
    if name == "wakeword":
        ww = config.gate.wakeword
        if config.gate.mode != "wakeword":
            return None
        detail = {"template": "templates", "pocketsphinx": ww.keyphrase}.get(ww.engine, ww.model)
        return f"{ww.engine} {detail}"
    if name == "vad":
        silero = config.gate.vad.silero
        return "webrtcvad" if silero.enabled == "off" else f"webrtcvad + silero {silero.runtime}"
    if name == "canceller":
        return "echo canceller" if config.bargein.echo_cancel else None
    if name in ("capture", "playback"):
        audio = config.audio
        end = audio.input if name == "capture" else audio.output
        if audio.backend == "file":
            return f"file {end.file}" if end.file is not None else None
        return f"alsa {end.device}"
    raise ValueError(f"unknown probe {name!r}")


def interpret(
    name: str, subj: str, *, returncode: int | None, stdout: bytes, stderr: bytes, timeout_s: float
) -> Finding:
    """Turn a probe child's exit into a finding. ``returncode`` None means it did not exit in time."""
    if returncode is None:
        return Finding(name, subj, "hung", f"no answer in {timeout_s:.0f} s (killed)")
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        return Finding(name, subj, "crashed", f"the process died of {sig} while loading it")
    answer: Any = None
    for line in reversed(stdout[:_MAX_ANSWER_BYTES].decode("utf-8", "replace").splitlines()):
        try:
            answer = json.loads(line)
            break
        except ValueError:
            continue
    if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
        last = next((ln for ln in reversed(stderr.decode("utf-8", "replace").splitlines()) if ln.strip()), "")
        return Finding(name, subj, "failed", f"exit {returncode}, no answer{': ' + last[:200] if last else ''}")
    status = answer["status"] if answer["status"] in ("ok", "failed", "busy", "missing") else "failed"
    return Finding(name, subj, status, str(answer.get("detail", ""))[:300])


def refusals(record: Mapping[str, Any] | None, config: Config) -> dict[str, str]:
    """The parts the daemon must not load: probe name -> why (the record of this version says it crashed)."""
    if not record or record.get("earshot") != __version__ or record.get("machine") != platform.machine():
        return {}
    out: dict[str, str] = {}
    findings = record.get("findings")
    if not isinstance(findings, list):
        return {}
    for f in findings:
        if not isinstance(f, dict) or f.get("status") not in _REFUSE or f.get("name") not in PROBES:
            continue
        if f.get("subject") == subject(f["name"], config):
            when = record.get("time", "")
            out[f["name"]] = f"{f['subject']} {f['status']} in earshot doctor at {when}: {f.get('detail', '')}"
    return out


def record_of(findings: Sequence[Finding], now_wall: float) -> dict[str, Any]:
    """The JSON record of a doctor run."""
    return {
        "earshot": __version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_wall)),
        "findings": [asdict(f) for f in findings],
    }


def load_record(directory: Path) -> dict[str, Any] | None:
    """The last doctor record in ``directory``, or None (missing or unreadable is no record)."""
    try:
        data = json.loads((directory / RECORD_NAME).read_bytes()[: _MAX_ANSWER_BYTES * 4])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_record(directory: Path, record: Mapping[str, Any]) -> Path:
    """Write a record (:func:`record_of`) atomically; returns its path."""
    from earshot.usage import atomic_write

    path = directory / RECORD_NAME
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=1), mode=0o644)
    return path


# ----------------------------------------------------------------------------- the child's side


def run_probe(name: str, config: Config, state_dir: Path) -> dict[str, Any]:
    """Do probe ``name`` in this process (the child): ``{"status": ..., "detail": ...}``.

    A Python error is an answer (``failed`` with its message); only a native crash or a hang goes
    unanswered, and the parent sees that from the outside.
    """
    import numpy as np

    from earshot.errors import ConfigError

    t0 = time.perf_counter()

    def ms() -> str:
        return f"{(time.perf_counter() - t0) * 1000:.0f} ms"

    silence = np.zeros(160, dtype=np.int16)
    try:
        if name == "wakeword":
            from earshot.gate.wakeword import build_stop_word, build_wakeword

            engine = build_wakeword(config.gate.wakeword, state_dir)
            stop = build_stop_word(config.gate.stop_word, state_dir)
            for _ in range(100):
                engine.process(silence)
                if stop is not None:
                    stop.process(silence)
            words = ", ".join(getattr(engine, "names", [engine.name]))
            stopping = stop.name if stop is not None else "none (earshot enroll --stop)"
            return {"status": "ok", "detail": f"{words}; stop word: {stopping}; 1 s of silence in {ms()}"}
        if name == "vad":
            import webrtcvad

            from earshot.gate.vad import SILERO_WINDOW_SAMPLES, build_silero

            webrtcvad.Vad(config.gate.vad.aggressiveness).is_speech(silence.tobytes(), 16000)
            silero = build_silero(config.gate.vad.silero)
            if silero is None:
                return {"status": "ok", "detail": f"webrtcvad only (Silero off or not loadable), {ms()}"}
            p = silero.probability(np.zeros(SILERO_WINDOW_SAMPLES, dtype=np.int16))
            return {"status": "ok", "detail": f"webrtcvad + {type(silero).__name__} (p={p:.2f}), {ms()}"}
        if name == "canceller":
            from earshot.audio.echo import EchoCanceller

            echo = EchoCanceller(filter_ms=config.bargein.echo_filter_ms)
            echo.add_reference(silence)
            echo.process(silence)
            echo.close()
            lib = "pyaec (speexdsp)" if echo.library == "pyaec" else "the system's libspeexdsp"
            return {"status": "ok", "detail": f"{lib}, one frame in {ms()}"}
        if name in ("capture", "playback"):
            return _probe_device(name, config)
    except ConfigError as exc:
        return {"status": "missing", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the answer names any Python error; only a crash is unanswered
        return {"status": "failed", "detail": f"{type(exc).__name__}: {exc}"}
    return {"status": "failed", "detail": f"unknown probe {name!r}"}


def _probe_device(name: str, config: Config) -> dict[str, Any]:
    from earshot.errors import AudioDeviceError

    audio = config.audio
    end = audio.input if name == "capture" else audio.output
    try:
        if audio.backend == "file":
            if end.file is None:
                return {"status": "ok", "detail": "file backend: none configured"}
            if name == "playback":
                ok = os.access(end.file.parent, os.W_OK)
                return {"status": "ok" if ok else "failed", "detail": "writable" if ok else "not writable"}
            from earshot.audio.wavfile import read_input_wav

            pcm = read_input_wav(end.file, channel=config.audio.input.channel)
            return {"status": "ok", "detail": f"{pcm.size / 16000:.1f} s at 16 kHz mono"}
        from earshot.audio.alsa import probe_device

        granted = probe_device(
            end.device,
            capture=name == "capture",
            rate=end.sample_rate_hz,
            channels=end.channels,
            period_ms=end.period_ms,
        )
    except AudioDeviceError as exc:
        return {"status": "busy" if "busy" in str(exc).lower() else "failed", "detail": str(exc)}
    return {"status": "ok", "detail": f"opened: {granted}"}


# ---------------------------------------------------------------------------- the parent's side


def probe(name: str, subj: str, config_path: Path, state_dir: Path, *, timeout_s: float = PROBE_TIMEOUT_S) -> Finding:
    """Run probe ``name`` in a child process (which never sees the key) and interpret its exit."""
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    argv = [sys.executable, "-m", "earshot", "doctor", "--probe", name, "--config", str(config_path)]
    argv += ["--state-dir", str(state_dir)]
    try:
        done = subprocess.run(argv, env=env, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        return interpret(name, subj, returncode=None, stdout=out, stderr=exc.stderr or b"", timeout_s=timeout_s)
    return interpret(
        name, subj, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr, timeout_s=timeout_s
    )


def host_checks(config: Config, environ: Mapping[str, str], state_dir: Path, now_wall: float) -> list[Finding]:
    """The key's presence, the clock and the state directory, without loading anything native."""
    checks = [_key_check(config, environ), _clock_check(now_wall), _state_check(state_dir)]
    if config.mqtt.url is not None:
        checks.append(_mqtt_check(config))
    return checks


def _mqtt_check(config: Config) -> Finding:
    """The MQTT client is installed (the broker itself is the bridge's to reach, and retry)."""
    import importlib.util

    from earshot.config import device_id

    where = f"{config.mqtt.url} as {config.mqtt.prefix}/{device_id(config.device)}"
    if importlib.util.find_spec("aiomqtt") is None:
        return Finding("mqtt", where, "missing", "aiomqtt is not installed: pip install 'earshot[fleet]'")
    return Finding("mqtt", where, "ok", "aiomqtt installed")


def _key_check(config: Config, environ: Mapping[str, str]) -> Finding:
    from earshot.errors import AuthenticationError
    from earshot.realtime.auth import resolve_key

    auth = config.realtime.auth
    if auth.token_url:
        return Finding("key", "token service", "ok", f"ephemeral secrets from {auth.token_url}: no key on the device")
    try:
        resolve_key(auth, environ)  # the value stays in a Secret and goes nowhere
    except AuthenticationError as exc:
        if _UNIT_KEY_FILE.is_file() and _UNIT_KEY_FILE.stat().st_size > 0:
            return Finding("key", str(_UNIT_KEY_FILE), "ok", "present (the unit loads it as a credential)")
        return Finding("key", "", "missing", str(exc))
    return Finding("key", "", "ok", "present (not read out)")


def _clock_check(now_wall: float) -> Finding:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now_wall))
    if now_wall < _CLOCK_FLOOR:
        return Finding("clock", stamp, "failed", "not set (no RTC, no time sync yet): TLS to the API will fail")
    synced = _kernel_clock_synced()
    if synced is False:
        return Finding("clock", stamp, "warning", "the kernel says not synchronised (is NTP running?)")
    return Finding("clock", stamp, "ok", "synchronised" if synced else "plausible (sync state unknown)")


def _kernel_clock_synced() -> bool | None:
    """adjtimex(2) in read-only mode: TIME_ERROR (5) means unsynchronised. None if it cannot be asked."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(1024)  # struct timex is ~210 bytes; modes=0 only reads
        state = int(libc.adjtimex(buf))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5


def _state_check(state_dir: Path) -> Finding:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Finding("state", str(state_dir), "failed", f"cannot be made: {exc.strerror or exc}")
    ok = os.access(state_dir, os.W_OK)
    return Finding("state", str(state_dir), "ok" if ok else "failed", "writable" if ok else "not writable")


def run_doctor(
    config: Config,
    config_path: Path,
    environ: Mapping[str, str],
    state_dir: Path,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> list[Finding]:
    """Every probe the config needs (each in a child), then the host checks."""
    findings: list[Finding] = []
    for name in PROBES:
        subj = subject(name, config)
        if subj is None:
            findings.append(Finding(name, "", "off", "not used by this config"))
            continue
        findings.append(probe(name, subj, config_path, state_dir, timeout_s=timeout_s))
    findings += host_checks(config, environ, state_dir, time.time())
    return findings


def failed(findings: Sequence[Finding]) -> bool:
    """Whether any finding is a failure (a missing key or a busy device is not)."""
    return any(f.status in _BAD for f in findings)
