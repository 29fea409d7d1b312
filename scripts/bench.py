"""scripts/bench: measure earshot on this machine; print a Markdown table; --json FILE writes the figures.

Two ways of measuring CPU: (a) minutes of audio pushed as fast as possible through the daemon's own
code (benchlib.components), and (b) the daemon itself (`earshot run`, file backend) against the
emulator on loopback in real time: process CPU over wall time, peak RSS, and the end-to-end timings
(benchlib.daemon). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "daemon"), str(REPO)]

from benchlib import components  # noqa: E402
from benchlib.report import Report, machine_info  # noqa: E402

from earshot.config import default_config  # noqa: E402

SECTIONS = ("gate", "stream", "devices", "daemon", "pulse", "pi")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def guarded(report: Report, keys: tuple[str, ...], what: str, run: Callable[[], None]) -> None:
    """Run one measurement; on an exception the keys stay null with the reason (never a made-up figure)."""
    t0 = time.monotonic()
    log(f"{what} …")
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - one failed measurement must not lose the others
        reason = f"{what} failed: {type(exc).__name__}: {exc}"
        log(reason)
        report.details.setdefault("errors", {})[what] = traceback.format_exc(limit=6)
        for key in keys:
            report.unmeasured(key, reason)
    else:
        log(f"{what} done in {time.monotonic() - t0:.1f} s")


def measure_gate(report: Report, seconds: float, state: Path) -> None:
    def idle() -> None:
        figure, extra = components.gate_idle(seconds, state)
        report.set("gate_cpu_pct_idle", round(figure.pct, 4))
        report.details["gate_idle"] = {**figure.as_dict(), **extra}

    def speech() -> None:
        values, details, problems = components.gate_speech(seconds, state)
        report.set("gate_cpu_pct_speech", values)
        report.details["gate_speech"] = details
        if problems:
            report.notes["gate_cpu_pct_speech"] = "; ".join(f"{k}: {v}" for k, v in problems.items())

    guarded(report, ("gate_cpu_pct_idle",), f"gate, silent room ({seconds:g} s of audio)", idle)
    guarded(report, ("gate_cpu_pct_speech",), f"gate, continuous speech ({seconds:g} s per engine)", speech)


def measure_stream(report: Report, seconds: float, state: Path) -> None:
    def run() -> None:
        from benchlib import engaged

        results = {fmt: engaged.stream(seconds, state, fmt) for fmt in ("pcm16", "g711_ulaw")}
        report.set("stream_cpu_pct", results["pcm16"]["pct"])
        report.details["stream"] = results

    guarded(report, ("stream_cpu_pct",), f"engaged path ({seconds:g} s of audio, pcm16 and g711)", run)


def measure_devices(report: Report, seconds: float) -> None:
    def run() -> None:
        from benchlib import devices

        figure = devices.measure(seconds)
        note = None if figure.real_time else f"not real time: {figure.devices}"
        report.set("capture_cpu_pct", round(figure.capture_pct, 4), note=note)
        report.set("playback_cpu_pct", round(figure.playback_pct, 4), note=note)
        report.details["devices"] = figure.as_dict()

    guarded(report, ("capture_cpu_pct", "playback_cpu_pct"), f"ALSA device threads ({seconds:g} s of audio)", run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON here")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test; figures are noisier)")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only these sections (repeat)")
    parser.add_argument("--cpu-seconds", type=float, help="audio seconds per CPU measurement (default 120; quick 10)")
    parser.add_argument(
        "--echo-minutes", type=float, help="minutes of echo-only playback for false_bargeins (default 10; quick 0.25)"
    )
    parser.add_argument(
        "--pulse-minutes", type=float, help="minutes of echo-only playback, PulseAudio tier (default 2; quick 0.5)"
    )
    parser.add_argument(
        "--device-seconds", type=float, help="seconds of real-time audio for the ALSA thread CPU (default 60; quick 5)"
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the daemon runs' WAVs, configs and logs here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sections = set(args.only or SECTIONS)
    cpu_s = args.cpu_seconds or (10.0 if args.quick else 120.0)
    echo_min = args.echo_minutes or (0.25 if args.quick else 10.0)

    report = Report(quick=args.quick)
    report.prebuffer_ms = default_config().audio.output.prebuffer_ms
    report.machine = machine_info(REPO)
    with components.temp_state() as tmp:
        state = Path(tmp)
        if "gate" in sections:
            measure_gate(report, cpu_s, state)
        if "stream" in sections:
            measure_stream(report, cpu_s, state)
        if "devices" in sections:
            measure_devices(report, args.device_seconds or (5.0 if args.quick else 60.0))
        if "daemon" in sections:
            from benchlib import daemon

            daemon.measure_all(report, quick=args.quick, echo_minutes=echo_min, keep=args.keep, log=log)
        if "pulse" in sections:
            from benchlib import pulse

            minutes = args.pulse_minutes or (0.5 if args.quick else 2.0)
            pulse.measure_all(report, quick=args.quick, echo_minutes=minutes, keep=args.keep, log=log)
        if "pi" in sections:
            from benchlib import pi

            pi.measure_all(report, quick=args.quick, keep=args.keep, log=log)
    for key in report.values:
        if report.values[key] is None and key not in report.notes:
            report.notes[key] = "not run (section skipped)"
    print(report.table())
    if report.notes:
        print()
        print(report.notes_text())
    if args.json:
        report.write_json(args.json)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
