"""``earshot enroll``: record the user's own takes of the wake phrase (or, ``--stop``, the stop phrase).

Takes come from the microphone (``arecord`` on the configured ALSA device, one take per prompt) or
from WAV files (``--from-wav``). Each is resampled to 16 kHz mono, trimmed to its speech with the
VAD, and the takes are compared with each other by DTW: a take far from the others (a different
phrase, a cough, a door) is rejected with its distance, and enrolment needs at least three that
agree. The accepted takes replace the previous set in ``<state_dir>/wakeword/`` (the old set is kept
in ``previous/``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from earshot.config import Config, default_config, load_config
from earshot.errors import EX_CONFIG, ConfigError
from earshot.gate.mfcc import dtw_distance, mfcc
from earshot.gate.wakeword import MIN_TEMPLATES, RATE_HZ, trim_silence

AGREEMENT_MAX_DISTANCE = 0.22
"""Largest median DTW distance from a take to the others for it to count as the same phrase."""
MIN_SPEECH_S = 0.3
MAX_SPEECH_S = 3.0


@dataclass(frozen=True, slots=True)
class Take:
    """One candidate recording of the wake phrase."""

    label: str
    pcm: NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The agreement check of one take: ``reason`` is None when accepted."""

    take: Take
    distance: float
    reason: str | None


def resolve_state_dir(config: Config) -> Path:
    """``state_dir`` from the config, else ``$STATE_DIRECTORY`` (systemd), else ``~/.local/state/earshot``."""
    if config.state_dir is not None:
        return config.state_dir
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "earshot"


def read_any_wav(path: Path) -> NDArray[np.int16]:
    """A 16-bit WAV of any rate and channel count as 16 kHz mono int16.

    Raises:
        ConfigError: unreadable or not 16-bit.
    """
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if width != 2:
        raise ConfigError(f"{path}: {width * 8}-bit WAV, want 16-bit")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.float32)
    if channels > 1:
        pcm = pcm[: len(pcm) // channels * channels].reshape(-1, channels).mean(axis=1)
    if rate != RATE_HZ:
        import soxr

        pcm = soxr.resample(pcm, rate, RATE_HZ)
    return np.clip(np.round(pcm), -32768, 32767).astype(np.int16)


def check_takes(takes: list[Take], *, max_distance: float = AGREEMENT_MAX_DISTANCE) -> list[Verdict]:
    """Trim-checked takes against each other: each take's median DTW distance to the others.

    A take with too little or too much speech, or far from the others, gets a ``reason``. With
    fewer than two takes nothing can be compared and each is judged on its length only.
    """
    feats = [mfcc(t.pcm) for t in takes]
    verdicts: list[Verdict] = []
    for i, take in enumerate(takes):
        seconds = len(take.pcm) / RATE_HZ
        others = [dtw_distance(feats[i], feats[j]) for j in range(len(takes)) if j != i]
        median = float(np.median(others)) if others else 0.0
        reason: str | None = None
        if seconds < MIN_SPEECH_S:
            reason = f"only {seconds:.2f} s of speech (say the whole phrase)"
        elif seconds > MAX_SPEECH_S:
            reason = f"{seconds:.1f} s of speech (say only the wake phrase, in a quiet moment)"
        elif median > max_distance:
            reason = f"does not match the other takes (distance {median:.3f} > {max_distance:.3f})"
        verdicts.append(Verdict(take, median, reason))
    return verdicts


def save_takes(takes: list[Take], directory: Path) -> list[Path]:
    """Replace the enrolled set in ``directory`` (the previous set moves to ``directory/previous``)."""
    directory.mkdir(parents=True, exist_ok=True)
    old = sorted(directory.glob("*.wav"))
    if old:
        previous = directory / "previous"
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for p in old:
            p.replace(previous / p.name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for i, take in enumerate(takes, 1):
        path = directory / f"take-{stamp}-{i}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE_HZ)
            w.writeframes(take.pcm.astype("<i2").tobytes())
        paths.append(path)
    return paths


def record_take(device: str, seconds: float) -> NDArray[np.int16]:
    """Record ``seconds`` from ALSA ``device`` at 16 kHz mono with ``arecord``.

    Raises:
        ConfigError: arecord is missing or the device cannot be opened.
    """
    if shutil.which("arecord") is None:
        raise ConfigError("arecord (alsa-utils) is needed to record from the microphone; or use --from-wav")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "take.wav"
        cmd = ["arecord", "-q", "-D", device, "-f", "S16_LE", "-r", str(RATE_HZ), "-c", "1"]
        cmd += ["-d", str(max(1, round(seconds))), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ConfigError(f"cannot record from {device!r}: {proc.stderr.strip() or proc.returncode}")
        return read_any_wav(out)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="earshot enroll", description="Record wake-word templates of your own voice.")
    p.add_argument("--config", type=Path, help="daemon config (state_dir, audio.input.device, templates_dir)")
    p.add_argument("--takes", type=int, default=MIN_TEMPLATES, help="takes to keep (at least 3)")
    p.add_argument("--from-wav", nargs="+", type=Path, metavar="FILE", help="use these recordings, not the mic")
    p.add_argument("--device", help="ALSA capture device (default: audio.input.device)")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each microphone take")
    p.add_argument("--max-distance", type=float, default=AGREEMENT_MAX_DISTANCE, help="agreement bound")
    p.add_argument("--dir", type=Path, help="where to store the takes (default: gate.wakeword.templates_dir)")
    p.add_argument(
        "--stop",
        action="store_true",
        help="enrol the stop phrase (say 'stop'; default dir: gate.stop_word.templates_dir or <state_dir>/stopword)",
    )
    return p


def main(argv: list[str]) -> int:
    """Run ``earshot enroll``; returns the exit status (0 enrolled, 1 takes rejected, 78 config)."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config) if args.config else default_config()
        if args.stop:
            directory = args.dir or config.gate.stop_word.templates_dir or resolve_state_dir(config) / "stopword"
        else:
            directory = args.dir or config.gate.wakeword.templates_dir or resolve_state_dir(config) / "wakeword"
        if args.takes < MIN_TEMPLATES:
            raise ConfigError(f"--takes: at least {MIN_TEMPLATES}")
        if args.from_wav:
            takes = [Take(str(p), trim_silence(read_any_wav(p))) for p in args.from_wav]
            verdicts = check_takes(takes, max_distance=args.max_distance)
        else:
            verdicts = _record(args.device or config.audio.input.device, args)
    except ConfigError as exc:
        _say(f"earshot enroll: {exc}")
        return EX_CONFIG
    for v in verdicts:
        _say(
            f"  {v.take.label}: " + (f"ok (distance {v.distance:.3f})" if v.reason is None else f"REJECTED: {v.reason}")
        )
    good = [v.take for v in verdicts if v.reason is None]
    if len(good) < MIN_TEMPLATES:
        _say(f"earshot enroll: only {len(good)} takes agree; {MIN_TEMPLATES} are needed. Nothing was changed.")
        return 1
    good.sort(key=lambda t: next(v.distance for v in verdicts if v.take is t))
    paths = save_takes(good[: max(args.takes, MIN_TEMPLATES)], directory)
    _say(f"enrolled {len(paths)} takes in {directory}")
    return 0


def _record(device: str, args: argparse.Namespace) -> list[Verdict]:
    takes: list[Take] = []
    verdicts: list[Verdict] = []
    attempts = 0
    while attempts < 3 * args.takes:
        attempts += 1
        phrase = "'stop'" if args.stop else "the wake phrase"
        _say(f"take {len(takes) + 1} of {args.takes}: say {phrase} after the beep…")
        sys.stdout.write("\a")
        pcm = trim_silence(record_take(device, args.seconds))
        takes.append(Take(f"take {attempts}", pcm))
        verdicts = check_takes(takes, max_distance=args.max_distance)
        bad = [v for v in verdicts if v.reason is not None]
        if len(takes) >= 2 and bad:
            worst = max(bad, key=lambda v: v.distance)
            _say(f"  {worst.take.label} rejected: {worst.reason}; again please")
            takes.remove(worst.take)
            continue
        if len(takes) >= args.takes:
            break
    return check_takes(takes, max_distance=args.max_distance)
