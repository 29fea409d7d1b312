"""The figures, their goals, the Markdown table and the JSON written by ``scripts/bench --json``.

Every key exists in the JSON whatever happened: a figure that could not be measured is ``null`` and
its reason is under ``notes`` (never a made-up number).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

Value = float | int | dict[str, float | int | None] | None

KEYS = (
    "gate_cpu_pct_idle",
    "gate_cpu_pct_speech",
    "stream_cpu_pct",
    "wake_to_ready_ms",
    "wake_to_ready_ms_rtt50",
    "reply_start_ms",
    "bargein_ms",
    "truncate_error_ms",
    "false_bargeins",
    "bargein_ms_rt",
    "truncate_error_ms_rt",
    "false_bargeins_rt",
    "bandwidth_kbps",
    "rss_mb_file",
    "daemon_cpu_pct_idle",
    "daemon_cpu_pct_engaged",
    "capture_cpu_pct",
    "playback_cpu_pct",
    "idle_cpu_pct",
    "talk_cpu_pct",
    "engaged_cpu_pct",
    "rss_mb",
    "pi_wake_to_ready_ms",
    "pi_wake_to_ready_excess_ms",
    "pi_bargein_ms",
    "pi_truncate_error_ms",
    "pi_false_bargeins",
    "pi_loop_block_max_ms",
    "pi_turns_delivered",
)
"""Every figure key of the JSON, in table order (``machine``, ``notes``, ``details`` come besides)."""

DESCRIPTIONS = {
    "gate_cpu_pct_idle": "gate CPU, silent room (% of one core)",
    "gate_cpu_pct_speech": "gate CPU, continuous speech, per wake-word engine (%)",
    "stream_cpu_pct": "engaged exchange CPU through the product's parts: capture, core, uplink, playback (%)",
    "wake_to_ready_ms": "wake → session ready, emulator on loopback (ms)",
    "wake_to_ready_ms_rtt50": "wake → session ready, 50 ms injected RTT (ms)",
    "reply_start_ms": "first reply delta received → first sample to the device (ms)",
    "bargein_ms": "user speech onset → assistant audio stops in the output (ms)",
    "truncate_error_ms": "|truncate audio_end_ms − assistant audio in the output| (ms)",
    "false_bargeins": "barge-ins while the device plays speech, echo −6 dB, no user",
    "bargein_ms_rt": "PulseAudio real-time tier: user speech onset → assistant audio stops at the speaker (ms)",
    "truncate_error_ms_rt": "PulseAudio tier: |truncate audio_end_ms − assistant audio at the speaker| (ms)",
    "false_bargeins_rt": "PulseAudio tier: barge-ins while replies play, echo −6 dB via a loudspeaker + room, no user",
    "bandwidth_kbps": "uplink WebSocket bytes per second of streamed audio (kbit/s)",
    "rss_mb_file": "daemon peak RSS, file-backend runs (VmHWM, MB)",
    "daemon_cpu_pct_idle": "daemon process CPU in real time, idle listening (%)",
    "daemon_cpu_pct_engaged": "daemon process CPU in real time, engaged (streaming, playing) (%)",
    "capture_cpu_pct": "ALSA capture thread CPU, real-time device (% of one core)",
    "playback_cpu_pct": "ALSA playback thread CPU, real-time device, playing speech (% of one core)",
    "idle_cpu_pct": "Pi tier: default install on real-time devices, quiet room (% of one core here)",
    "talk_cpu_pct": "Pi tier: people talking, no wake word (%)",
    "engaged_cpu_pct": "Pi tier: wake word → question streamed → reply playing → interrupted (%)",
    "rss_mb": "Pi tier: peak RSS of the default install, Silero on (VmHWM, MB)",
    "pi_wake_to_ready_ms": "one Pi core (1/12 of a core): wake → session ready (ms)",
    "pi_wake_to_ready_excess_ms": "one Pi core: wake → ready minus the unconfined handshake (ms)",
    "pi_bargein_ms": "one Pi core: user speech onset → assistant audio stops at the speaker (ms)",
    "pi_truncate_error_ms": "one Pi core: |truncate audio_end_ms − assistant audio at the speaker| (ms)",
    "pi_false_bargeins": "one Pi core: barge-ins before the user interrupted",
    "pi_loop_block_max_ms": "one Pi core: most the event loop was late taking captured audio (ms)",
    "pi_turns_delivered": "one Pi core: share of the user's utterances that reached the server",
}


@dataclass(frozen=True, slots=True)
class Goal:
    """A goal: ``text`` for the table, ``check`` on the value (a dict value checks every entry)."""

    text: str
    check: Callable[[float], bool]


def goals(prebuffer_ms: int) -> dict[str, Goal]:
    """The goals of issue 8 (``reply_start_ms`` depends on the configured jitter prebuffer)."""
    return {
        "gate_cpu_pct_idle": Goal("≤ 0.5", lambda v: v <= 0.5),
        "stream_cpu_pct": Goal("≤ 3.0", lambda v: v <= 3.0),
        "bargein_ms": Goal("≤ 150", lambda v: v <= 150),
        "truncate_error_ms": Goal("≤ 20", lambda v: v <= 20),
        "reply_start_ms": Goal(f"≤ {prebuffer_ms + 10} (prebuffer + 10)", lambda v: v <= prebuffer_ms + 10),
        "rss_mb_file": Goal("≤ 80", lambda v: v <= 80),
        "false_bargeins": Goal("0", lambda v: v == 0),
        "bargein_ms_rt": Goal("≤ 150", lambda v: v <= 150),
        "truncate_error_ms_rt": Goal("≤ 20", lambda v: v <= 20),
        "false_bargeins_rt": Goal("0", lambda v: v == 0),
        "idle_cpu_pct": Goal("≤ 0.25", lambda v: v <= 0.25),
        "talk_cpu_pct": Goal("≤ 2", lambda v: v <= 2.0),
        "engaged_cpu_pct": Goal("≤ 3", lambda v: v <= 3.0),
        "rss_mb": Goal("≤ 60", lambda v: v <= 60),
        "pi_wake_to_ready_excess_ms": Goal("≤ 100", lambda v: v <= 100),
        "pi_bargein_ms": Goal("≤ 150", lambda v: v <= 150),
        "pi_truncate_error_ms": Goal("≤ 20", lambda v: v <= 20),
        "pi_false_bargeins": Goal("0", lambda v: v == 0),
        "pi_loop_block_max_ms": Goal("≤ 100", lambda v: v <= 100),
        "pi_turns_delivered": Goal("1 (all)", lambda v: v == 1),
    }


@dataclass
class Report:
    """Figures as they are measured; :meth:`to_json` and :meth:`table` render them."""

    prebuffer_ms: int = 40
    values: dict[str, Value] = field(default_factory=lambda: dict.fromkeys(KEYS))
    notes: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def set(self, key: str, value: Value, *, note: str | None = None) -> None:
        """Record a measured figure (a dict for per-engine / per-format figures)."""
        if key not in self.values:
            raise KeyError(key)
        self.values[key] = value
        if note:
            self.notes[key] = note
        else:
            self.notes.pop(key, None)

    def attempt(self, keys: tuple[str, ...], what: str, body: Callable[[], None], log: Callable[[str], None]) -> None:
        """Run one measurement; if it raises, ``keys`` stay null with the reason (a failed run never stops the rest)."""
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - a failed run leaves its figures null with the reason
            reason = f"{what}: {type(exc).__name__}: {exc}"
            log(reason)
            for key in keys:
                self.unmeasured(key, reason)

    def unmeasured(self, key: str, reason: str) -> None:
        """Record why a figure is null (keeps a value measured earlier, noting the new problem)."""
        if self.values.get(key) is None:
            self.notes[key] = reason
        else:
            self.notes.setdefault(key, reason)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: every key of :data:`KEYS`, then ``machine``, ``goals``, ``notes``, ``details``."""
        out: dict[str, Any] = {key: self.values[key] for key in KEYS}
        out["machine"] = self.machine
        out["quick"] = self.quick
        out["goals"] = {key: goal.text for key, goal in goals(self.prebuffer_ms).items()}
        out["notes"] = dict(self.notes)
        out["details"] = self.details
        return out

    def write_json(self, path: Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def table(self) -> str:
        """The Markdown table: figure, value, goal, pass/fail."""
        table_goals = goals(self.prebuffer_ms)
        rows = ["| figure | value | goal | result |", "|---|---|---|---|"]
        for key in KEYS:
            value = self.values[key]
            goal = table_goals.get(key)
            rows.append(f"| `{key}` | {format_value(value)} | {goal.text if goal else '—'} | {verdict(value, goal)} |")
        return "\n".join(rows)

    def notes_text(self) -> str:
        """The notes as a Markdown list (why a figure is null, how it was measured)."""
        return "\n".join(f"- `{key}`: {text}" for key, text in self.notes.items())


def format_value(value: Value) -> str:
    """A value for the table (``null`` for unmeasured, ``a: x, b: y`` for dicts)."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {format_value(v)}" for k, v in value.items())
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def verdict(value: Value, goal: Goal | None) -> str:
    """``pass``, ``FAIL``, ``—`` (no goal) or ``not measured``."""
    if goal is None:
        return "—"
    if value is None:
        return "not measured"
    items = list(value.values()) if isinstance(value, Mapping) else [value]
    numbers = [v for v in items if isinstance(v, (int, float))]
    if not numbers:
        return "not measured"
    return "pass" if all(goal.check(float(v)) for v in numbers) else "FAIL"


def machine_info(repo: Path) -> dict[str, Any]:
    """CPU model, cores, OS, Python and library versions, the commit measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "arch": platform.machine(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": version("numpy"),
        "soxr": version("soxr"),
        "webrtcvad": version("webrtcvad-wheels") or version("webrtcvad"),
        "onnxruntime": version("onnxruntime"),
        "websockets": version("websockets"),
        "earshot": version("earshot"),
        "commit": commit or None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
