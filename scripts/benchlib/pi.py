"""The Pi tier (``scripts/bench --only pi``): the default install on real-time devices, unconfined and in one Pi core.

The daemon runs as a user runs it: ``earshot run`` with the default config (only the devices, the
URL, the state directory and the control socket set: the default wake word, earcons on, Silero when
installed) on the PulseAudio room of :mod:`benchlib.pulse`, against the emulator on loopback.

Unconfined, CPU comes from ``/proc/PID/stat`` (the whole process) and ``/proc/PID/task/*/stat``
(per thread, by the names the daemon gives its threads), RSS from VmHWM:

- ``idle_cpu_pct``: a quiet room (noise at −60 dBFS);
- ``talk_cpu_pct``: people talking, never the wake word;
- ``engaged_cpu_pct``: "hey jarvis, <question>", the reply playing, until the user interrupts it;
- ``rss_mb``: the largest VmHWM of those runs.

Before them, the rig's floor (``details.pi.floor``): a Python process that only reads the same ``mic``
PCM at 100 and 250 ms periods, the part of the idle figure no daemon on this capture path can avoid.
The idle and talk runs (and that floor) run with the room's echo relay stopped: nothing sounds from
the speaker in them, and the relay's 10 ms streams make the room's null sink deliver every recording
in 10 ms blocks whatever its period (a bare reader at 250 ms periods: about 0.35 % of a core with the
relay, 0.10 % without), which no sound card does. ``details.pi.floor_with_echo_relay`` keeps the
other figure.

Then the same exchange with the daemon's CPU confined to one Pi core: a CPU cgroup with a quota of
1/12 of a core here (cgroup v1 ``cpu.cfs_quota_us`` 1000 per ``cpu.cfs_period_us`` 12000, or v2
``cpu.max "1000 12000"``). A Pi Zero 2 W or Pi 3 core is about 11–14× slower than one core of this
machine. Figures: ``pi_wake_to_ready_ms`` (and its excess over the unconfined handshake),
``pi_bargein_ms``, ``pi_truncate_error_ms``, ``pi_false_bargeins``, ``pi_loop_block_max_ms`` (the
daemon's own measure: how late its event loop took captured audio) and ``pi_turns_delivered`` (the
share of the user's utterances whose audio reached the emulator).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from benchlib import audio, daemon, pulse
from benchlib.report import KEYS as REPORT_KEYS
from benchlib.report import Report

QUOTA_US = 1000
PERIOD_US = 12000
"""One Pi core: 1/12 of a core here."""
LARGER_CORES = (("Pi 4 core (1/6)", 2000), ("Pi 5 core (1/3)", 4000))
"""The same exchange inside one core of the faster boards (quota per ``PERIOD_US``)."""
_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
_CGROUP_V2 = Path("/sys/fs/cgroup")


class _Figures:
    """Where a confined run's figures go: the report (the Pi Zero 2 W core) or a details entry (faster cores)."""

    def __init__(self, report: Report | None, entry: dict[str, Any]) -> None:
        self.report = report
        self.entry = entry

    def set(self, key: str, value: float, note: str | None = None) -> None:
        if self.report is not None:
            self.report.set(key, value, note=note)
            return
        self.entry[key] = value
        if note:
            self.entry.setdefault("notes", {})[key] = note

    def unmeasured(self, key: str, why: str) -> None:
        if self.report is not None:
            self.report.unmeasured(key, why)
            return
        self.entry[key] = None
        self.entry.setdefault("notes", {})[key] = why


class CgroupUnavailable(RuntimeError):
    """No writable CPU cgroup controller (not root, or no cgroup filesystem)."""


@contextlib.contextmanager
def cpu_quota(quota_us: int = QUOTA_US, period_us: int = PERIOD_US) -> Iterator[Path]:
    """A fresh CPU cgroup limited to ``quota_us`` per ``period_us``; yields the file a PID is written to."""
    name = f"earshot-bench-pi-{os.getpid()}"
    if (_CGROUP_V1 / "cpu.cfs_quota_us").exists():
        group = _CGROUP_V1 / name
        try:
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        except OSError as exc:
            raise CgroupUnavailable(f"cgroup v1 cpu controller: {exc}") from exc
    elif (_CGROUP_V2 / "cgroup.controllers").exists():
        group = _CGROUP_V2 / name
        try:
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota_us} {period_us}")
        except OSError as exc:
            raise CgroupUnavailable(f"cgroup v2 cpu.max: {exc}") from exc
    else:
        raise CgroupUnavailable("no cgroup cpu controller mounted")
    try:
        yield group / "cgroup.procs"
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


def join_cgroup(procs: Path) -> Callable[[], None]:
    """A ``preexec_fn`` moving the child into the cgroup before it executes the daemon."""
    target = str(procs)

    def join() -> None:
        fd = os.open(target, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    return join


def write_default_config(path: Path, spec: daemon.RunSpec, workdir: Path, url: str) -> None:
    """The default config: only the devices, the URL and where the daemon keeps its files."""
    cfg: dict[str, Any] = {
        "audio": {"backend": "alsa", "input": {"device": "mic"}, "output": {"device": "speaker"}},
        "realtime": {"url": url},
        "control": {"socket": str(workdir / "control.sock")},
        "logging": {"journald": "off", "format": "json"},
        "state_dir": str(workdir / "state"),
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _envelope(pcm: NDArray[np.int16], rate_hz: int) -> NDArray[np.float64]:
    frame = rate_hz // 100
    n = pcm.size // frame
    blocks = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    out: NDArray[np.float64] = np.log10(np.mean(blocks**2, axis=1) + 1.0)
    return out


def delivered(utterance: NDArray[np.int16], received: NDArray[np.int16]) -> float:
    """How well ``utterance`` (16 kHz) is found in the emulator's ``received`` audio (24 kHz): 0..1.

    The 10 ms log-energy envelopes are correlated at every lag (the canceller and the resampler change
    the samples, not the envelope); a delivered utterance correlates above 0.8.
    """
    a = _envelope(utterance, audio.RATE_HZ)
    b = _envelope(received, daemon.REPLY_RATE_HZ)
    if a.size < 10 or b.size < a.size:
        return 0.0
    a = a - a.mean()
    best = 0.0
    norm_a = float(np.sqrt(np.dot(a, a))) + 1e-9
    for lag in range(b.size - a.size + 1):
        seg = b[lag : lag + a.size]
        seg = seg - seg.mean()
        score = float(np.dot(a, seg)) / (norm_a * (float(np.sqrt(np.dot(seg, seg))) + 1e-9))
        best = max(best, score)
    return best


def delivery_scores(run: pulse.RoomRun, ex: daemon.Exchange) -> list[float]:
    """:func:`delivered` for the user's two utterances: the question and the interruption (2 s of each).

    The question's last 2 s: its start is spoken while the wake earcon plays, where the uplink guard
    lets through only what local detection confirms (the device never hears itself), so a lower
    score there would not mean a slow CPU lost it.
    """
    received = np.concatenate([s.received_audio() for s in run.sessions] or [np.zeros(0, np.int16)])
    question = ex.pcm[ex.question_end - 2 * audio.RATE_HZ : ex.question_end]
    interruption = ex.pcm[ex.interruption_onset : ex.interruption_onset + 2 * audio.RATE_HZ]
    return [round(delivered(question, received), 3), round(delivered(interruption, received), 3)]


def interruption_at(run: pulse.RoomRun, ex: daemon.Exchange) -> float:
    """``time.monotonic`` when the user's interruption began playing: barge-ins before it are false ones."""
    return run.play_started + ex.interruption_onset / audio.RATE_HZ


STOPPED_QUIET_S = 1.0
"""A barge-in stops the reply for good: the speaker stays quiet this long at least (the user is still
talking, and no new reply comes before their turn ends). A playback gap (an underrun) is shorter."""


def speaker_stop_after_onset_ms(run: pulse.RoomRun, ex: daemon.Exchange) -> float:
    """The interruption's onset (user channel) → where the speaker went quiet for good after it (ms).

    Needs no match with the reply's samples, so it holds when playback was too broken to follow. Only a
    run whose daemon barged in has a barge-in time, and the stop is the start of the first silence that
    lasts :data:`STOPPED_QUIET_S`: an underrunning reply plays in pieces, and at 4217fc7 the first 30 ms
    of silence after the onset (a gap in the reply) stood for a barge-in the daemon never made (20 ms).
    """
    if not any(t >= interruption_at(run, ex) for t in run.barge_ins()):
        raise daemon.DaemonUnavailable(f"{run.name}: the daemon did not barge in on the user's interruption")
    rec = run.recording
    user = rec[:, pulse.USER]
    scale = pulse.RATE_HZ // audio.RATE_HZ
    wake_rec = audio.onset(user, frame=pulse.BLOCK)
    if wake_rec == 0:
        raise daemon.DaemonUnavailable(f"{run.name}: the user's input is not in the recording")
    offset = wake_rec - scale * audio.onset(ex.pcm)
    after = offset + scale * ex.question_end + pulse.RATE_HZ // 2
    onset = after + audio.onset(user[after:], frame=pulse.BLOCK)
    before = rec[max(0, onset - 10 * pulse.BLOCK) : onset, pulse.SPEAKER].astype(np.float64)
    if before.size == 0 or float(np.sqrt(np.mean(before**2))) < pulse.QUIET_RMS:
        raise daemon.DaemonUnavailable(
            f"{run.name}: the reply was not playing when the user interrupted (nothing to barge in on)"
        )
    spk = rec[onset:, pulse.SPEAKER].astype(np.float64)
    n = spk.size // pulse.BLOCK
    quiet = np.sqrt(np.mean(spk[: n * pulse.BLOCK].reshape(n, pulse.BLOCK) ** 2, axis=1)) < pulse.QUIET_RMS
    span = max(1, round(STOPPED_QUIET_S * pulse.RATE_HZ / pulse.BLOCK))
    runs = np.flatnonzero(np.convolve(quiet.astype(int), np.ones(span, dtype=int), mode="valid") == span)
    if runs.size == 0:
        raise daemon.DaemonUnavailable(f"{run.name}: the speaker never went quiet after the interruption")
    return 1000.0 * int(runs[0]) * pulse.BLOCK / pulse.RATE_HZ


def loop_lateness_ms(run: pulse.RoomRun) -> float:
    """The largest event-loop lateness the daemon logged (its exit line holds the maximum)."""
    values = [float(e.data["ms"]) for e in run.events if e.name == "loop_late" and "ms" in e.data]
    if not values:
        raise daemon.DaemonUnavailable(f"{run.name}: the daemon did not log its event-loop lateness{run.why()}")
    return max(values)


def split_pct(run: pulse.RoomRun, seconds: float, *, kernel_only: bool = False) -> dict[str, float]:
    """The per-thread CPU of a run as % of one core, largest first (``kernel_only``: system time)."""
    split = run.threads_sys_s if kernel_only else run.threads_cpu_s
    return {
        name: round(100.0 * cpu / seconds, 3) for name, cpu in sorted(split.items(), key=lambda kv: -kv[1]) if cpu > 0
    }


def _cpu_between(run: pulse.RoomRun, t0: float, t1: float) -> float:
    return daemon.cpu_pct_between(run.cpu_samples, t0, t1, run.name)


# ---------------------------------------------------------------------------------------- measure

MAY_BE_UNMEASURED = ("pi_bargein_ms", "pi_truncate_error_ms")
"""Figures a confined run can leave null, with the reason in the notes: both are read off the speaker
recording, which a Pi core too slow to play the reply cleanly (or in time) leaves without a reply to
follow or to interrupt. That is a finding of the tier, not a gap in the harness."""

KEYS = REPORT_KEYS[REPORT_KEYS.index("idle_cpu_pct") :]
"""This tier's figures: the tail of :data:`benchlib.report.KEYS`."""


LISTEN_PLAY_LATENCY_MS = 250
"""What the user's player asks of the room in the listening runs (see :data:`pulse.PLAY_LATENCY_MS`): the
daemon's idle capture period, as a microphone would deliver it."""

_READER = """
import sys, time, alsaaudio
period_ms, seconds = int(sys.argv[1]), float(sys.argv[2])
pcm = alsaaudio.PCM(type=alsaaudio.PCM_CAPTURE, mode=alsaaudio.PCM_NORMAL, device="mic", rate=16000, channels=1,
                    format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=16 * period_ms, periods=1000 // period_ms)
end = time.monotonic() + seconds
while time.monotonic() < end:
    pcm.read()
"""


def reader_floor(
    room: pulse.PulseRoom,
    seconds: float,
    log: Callable[[str], None],
    periods_ms: tuple[int, ...] = (100, 250),
    *,
    play_latency_ms: int | None = None,
    workdir: Path | None = None,
) -> dict[str, float | None]:
    """The rig's floor: the CPU of a Python process that only reads the room's ``mic`` PCM, per period.

    What no daemon on this capture path can go under (alsa-lib's pulse plugin and libpulse's client
    thread do most of it), measured on the same room each run: the idle goal is read against it.
    ``play_latency_ms``: a quiet room plays into ``user`` meanwhile, as in the listening runs, with the
    player asking this latency (it sets how often the reader is woken: :data:`pulse.PLAY_LATENCY_MS`).
    """
    out: dict[str, float | None] = {}
    for period_ms in periods_ms:
        player: subprocess.Popen[bytes] | None = None
        if play_latency_ms is not None and workdir is not None:
            raw = workdir / "floor-user.raw"
            pulse.write_user_raw(audio.room_noise(seconds + 8), raw)
            player = subprocess.Popen(
                room.play_command(raw, play_latency_ms),
                env=room.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        proc = subprocess.Popen(
            [sys.executable, "-c", _READER, str(period_ms), str(seconds + 4)], env=room.env, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(3.0)  # opened and streaming
            c0, t0 = daemon._proc_cpu_s(proc.pid), time.monotonic()
            time.sleep(seconds)
            c1, t1 = daemon._proc_cpu_s(proc.pid), time.monotonic()
        finally:
            proc.wait(timeout=30)
            if player is not None:
                player.kill()
                player.wait(timeout=10)
        pct = None if c0 is None or c1 is None else round(100.0 * (c1 - c0) / (t1 - t0), 3)
        suffix = "" if play_latency_ms is None else f"_player_{play_latency_ms}ms"
        out[f"reader_{period_ms}ms{suffix}_cpu_pct"] = pct
        with_player = "" if play_latency_ms is None else f", a quiet room playing at {play_latency_ms} ms latency"
        log(f"pi floor: a bare reader of the mic PCM at {period_ms} ms periods{with_player}: {pct} % of a core")
    return out


def measure_all(report: Report, *, quick: bool, keep: Path | None, log: Callable[[str], None]) -> None:
    """The Pi tier's figures into ``report`` (null with the reason for any that fail)."""
    root = (keep / "pi") if keep else Path(tempfile.mkdtemp(prefix="earshot-bench-pi-"))
    root.mkdir(parents=True, exist_ok=True)
    details: dict[str, Any] = report.details.setdefault("pi", {})
    details["quota"] = {"cfs_quota_us": QUOTA_US, "cfs_period_us": PERIOD_US, "share_of_core": QUOTA_US / PERIOD_US}
    try:
        with pulse.pulse_room(root / "server") as room:
            _measure(report, details, room, root, quick=quick, log=log)
    except pulse.PulseUnavailable as exc:
        for key in KEYS:
            report.unmeasured(key, f"Pi tier: {exc}")
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _run(
    room: pulse.PulseRoom,
    spec: daemon.RunSpec,
    root: Path,
    log: Callable[[str], None],
    *,
    confined: Path | None = None,
    play_latency_ms: int = pulse.PLAY_LATENCY_MS,
) -> pulse.RoomRun:
    where = "inside one Pi core" if confined else "unconfined"
    log(f"pi run '{spec.name}' ({spec.input_pcm.size / audio.RATE_HZ:.0f} s of input, real time, {where})")
    pulse.prepare(spec, root / spec.name)
    return asyncio.run(
        pulse.run_in_room(
            room,
            spec,
            root / spec.name,
            log,
            config_writer=write_default_config,
            preexec_fn=join_cgroup(confined) if confined else None,
            start_timeout_s=180.0,
            play_latency_ms=play_latency_ms,
        )
    )


def _measure(
    report: Report,
    details: dict[str, Any],
    room: pulse.PulseRoom,
    root: Path,
    *,
    quick: bool,
    log: Callable[[str], None],
) -> None:
    seconds = 15.0 if quick else 60.0
    rss: list[float] = []

    def keep_rss(run: pulse.RoomRun) -> None:
        if run.vmhwm_kb:
            rss.append(round(run.vmhwm_kb / 1024.0, 1))

    def listening(
        name: str, pcm: NDArray[np.int16], key: str | None, play_latency_ms: int = LISTEN_PLAY_LATENCY_MS
    ) -> None:
        spec = daemon.RunSpec(name, pcm, echo=False, timeout_s=pcm.size / audio.RATE_HZ + 30)
        run = _run(room, spec, root, log, play_latency_ms=play_latency_ms)
        keep_rss(run)
        if run.cpu_pct is None:
            raise daemon.DaemonUnavailable(f"{name}: no CPU reading{run.why()}")
        if run.times("engaged"):
            raise daemon.DaemonUnavailable(f"{name}: the daemon engaged on audio without the wake word")
        if key is not None:
            report.set(key, round(run.cpu_pct, 3))
        details[name] = {
            "seconds": seconds,
            "player_latency_ms": play_latency_ms,
            "watchdog_pings": run.watchdog_pings,
            "cpu_pct": round(run.cpu_pct, 3),
            "threads_cpu_pct": split_pct(run, pcm.size / audio.RATE_HZ),
            "threads_sys_pct": split_pct(run, pcm.size / audio.RATE_HZ, kernel_only=True),
        }

    # The listening runs play nothing from the speaker, so they run without the echo relay: its 10 ms
    # streams drive the room's null sink in 10 ms blocks, and every recording of that sink (the
    # daemon's capture among them) then wakes 100 times a second whatever period it asked for, which
    # no sound card does. Both floors are measured, so the difference stays on record.
    details["floor_with_echo_relay"] = reader_floor(room, seconds, log, periods_ms=(250,))
    relay = room.relay
    if relay is not None:
        relay.close()
    try:
        details["floor"] = reader_floor(room, seconds, log)
        floor_s = 5.0 if quick else seconds
        for latency in (pulse.PLAY_LATENCY_MS, LISTEN_PLAY_LATENCY_MS):
            details["floor"].update(
                reader_floor(room, floor_s, log, (250,), play_latency_ms=latency, workdir=root / "floor")
            )
        report.attempt(
            ("idle_cpu_pct",),
            "pi idle run",
            lambda: listening("pi_idle", audio.room_noise(seconds), "idle_cpu_pct"),
            log,
        )
        # The same quiet room with the player at the room's usual latency: what the rig's 10 Hz blocks cost.
        report.attempt(
            (),
            "pi idle run, player at 100 ms",
            lambda: listening("pi_idle_player_100ms", audio.room_noise(floor_s), None, pulse.PLAY_LATENCY_MS),
            log,
        )
        report.attempt(
            ("talk_cpu_pct",),
            "pi talk run",
            lambda: listening("pi_talk", audio.with_noise(audio.continuous_speech(seconds)), "talk_cpu_pct"),
            log,
        )
    finally:
        if relay is not None:
            relay.start()

    story = daemon.reply_audio(audio.LONG_REPLY)
    reply_s = story.size / daemon.REPLY_RATE_HZ
    ex = daemon.exchange_input(reply_s)
    handshake: dict[str, float] = {}

    def engaged() -> None:
        spec = daemon.RunSpec("pi_exchange", ex.pcm, echo=False, replies=(audio.LONG_REPLY,), timeout_s=90.0)
        run = _run(room, spec, root, log)
        keep_rss(run)
        # Engaged: from the wake word to the user's interruption (or, if no barge-in was heard, to the
        # end of the input: the reply then played on, which is engaged time too).
        t0 = run.first("engaged")
        barge = run.times("bargein")
        t1 = barge[0] if barge else run.cpu_samples[-1][0] if run.cpu_samples else t0
        report.set("engaged_cpu_pct", round(_cpu_between(run, t0, t1), 3))
        handshake["ms"] = 1000.0 * (run.first("session_ready") - t0)
        details["exchange"] = {
            "engaged_s": round(t1 - t0, 2),
            "barge_ins_logged": len(barge),
            "wake_to_ready_ms": round(handshake["ms"], 1),
            "threads_cpu_pct_whole_run": split_pct(run, ex.pcm.size / audio.RATE_HZ),
            "threads_sys_pct_whole_run": split_pct(run, ex.pcm.size / audio.RATE_HZ, kernel_only=True),
            "delivery_scores": delivery_scores(run, ex),
        }

    report.attempt(("engaged_cpu_pct",), "pi engaged run", engaged, log)
    if rss:
        report.set("rss_mb", max(rss))
        details["rss_mb_per_run"] = rss

    def confined(figures: _Figures, quota_us: int, name: str) -> None:
        with cpu_quota(quota_us) as procs:
            spec = daemon.RunSpec(name, ex.pcm, echo=False, replies=(audio.LONG_REPLY,), timeout_s=120.0)
            run = _run(room, spec, root, log, confined=procs)
        entry = figures.entry
        entry.update({"exit": run.returncode, "cpu_pct": run.cpu_pct})
        entry["threads_cpu_pct"] = split_pct(run, ex.pcm.size / audio.RATE_HZ)
        wake = run.first("engaged")
        ready = run.first("session_ready")
        figures.set("pi_wake_to_ready_ms", round(1000.0 * (ready - wake), 1))
        if "ms" in handshake:
            figures.set("pi_wake_to_ready_excess_ms", round(1000.0 * (ready - wake) - handshake["ms"], 1))
        else:
            figures.unmeasured("pi_wake_to_ready_excess_ms", "no unconfined handshake to compare with")
        figures.set("pi_loop_block_max_ms", round(loop_lateness_ms(run), 1))
        scores = delivery_scores(run, ex)
        entry["delivery_scores"] = scores
        entry["drops"] = [m for _, m in run.log if "stalled" in m or "dropped" in m][:5]
        figures.set("pi_turns_delivered", sum(1 for s in scores if s >= 0.8) / len(scores))
        onset_at = interruption_at(run, ex)
        false = [round(t - run.play_started, 2) for t in run.barge_ins() if t < onset_at]
        entry["false_barge_ins_at_s"] = false
        figures.set("pi_false_bargeins", len(false))
        try:
            analysed = pulse.analyse_exchange(run, ex, story)
        except daemon.DaemonUnavailable as exc:
            # The speaker recording cannot be followed (the reply was too short or too broken to match):
            # the barge-in time comes from the daemon's own timeline instead, on its capture clock.
            entry["speaker_analysis"] = str(exc)
            figures.unmeasured("pi_truncate_error_ms", f"the speaker recording could not be followed: {exc}")
            try:
                bargein = speaker_stop_after_onset_ms(run, ex)
            except daemon.DaemonUnavailable as why:
                figures.unmeasured("pi_bargein_ms", str(why))
                return
            figures.set(
                "pi_bargein_ms",
                round(bargein, 1),
                note="the reply could not be followed sample by sample: the interruption's onset on the user "
                "channel to the speaker channel's first silence of 1 s after it (the daemon barged in)",
            )
            return
        entry.update(analysed.details)
        figures.set("pi_bargein_ms", round(analysed.bargein_ms, 1))
        figures.set("pi_truncate_error_ms", round(analysed.truncate_error_ms, 1))

    one_core = _Figures(report, details.setdefault("confined", {}))
    report.attempt(
        tuple(k for k in KEYS if k.startswith("pi_")),
        "pi confined run (one Pi core)",
        lambda: confined(one_core, QUOTA_US, "pi_confined"),
        log,
    )
    # The faster boards' cores, measured the same way (details only: the goals are the Pi Zero 2 W's).
    for label, quota_us in LARGER_CORES:
        figures = _Figures(None, details.setdefault("cores", {}).setdefault(label, {"quota_us": quota_us}))
        try:
            confined(figures, quota_us, f"pi_confined_{quota_us}")
        except Exception as exc:  # noqa: BLE001 - as Report.attempt: a failed run leaves its reason
            figures.entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"pi confined run at {label}: {exc}")
