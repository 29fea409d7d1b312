"""``earshot status`` for people: the status snapshot rendered as aligned lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

__all__ = ["format_status"]


def format_status(status: Mapping[str, Any]) -> str:
    """Render a ``status`` answer (a :meth:`earshot.stats.Stats.snapshot`) for people.

    Tolerates missing keys (an older or newer daemon): absent things are not shown.
    """
    lines: list[str] = []

    def add(label: str, value: object) -> None:
        lines.append(f"{label + ':':<16}{value}")

    phase = str(status.get("phase", "?")).upper()
    add("phase", phase + ("  (MUTED: microphone closed)" if status.get("muted") else ""))
    connection = str(status.get("connection", "?"))
    age = status.get("session_age_s")
    if isinstance(age, (int, float)):
        connection += f" (session {_duration(float(age))})"
    add("connection", connection)
    engagement = status.get("engagement")
    if isinstance(engagement, Mapping):
        add(
            "engagement",
            f"{engagement.get('id', '?')} via {engagement.get('trigger', '?')},"
            f" {_duration(float(engagement.get('age_s', 0.0)))}, {engagement.get('turns', 0)} turns",
        )
    if "duplex" in status:
        add("duplex", status["duplex"])
    listening = status.get("listening")
    if isinstance(listening, Mapping):
        words = ", ".join(str(w) for w in listening.get("wake_words") or ()) or "none"
        add("wake words", words + f"; stop word: {listening.get('stop_word') or 'none'}")
        if listening.get("profile"):
            add("profile", listening["profile"])
    devices = status.get("devices")
    if isinstance(devices, Mapping):
        for role, dev in sorted(devices.items()):
            if isinstance(dev, Mapping):
                name = dev.get("device") or dev.get("name") or "?"
                extra = ", ".join(f"{k} {dev[k]}" for k in ("xruns", "overruns") if dev.get(k))
                add(str(role), f"{name} [{dev.get('state', '?')}]" + (f" ({extra})" if extra else ""))
    mqtt = status.get("mqtt")
    if isinstance(mqtt, Mapping):
        state = "connected" if mqtt.get("connected") else "not connected"
        add(
            "mqtt",
            f"{mqtt.get('broker', '?')} as {mqtt.get('topic', '?')}: {state} ({mqtt.get('connects', 0)} connects)",
        )
    disabled = status.get("disabled")
    if isinstance(disabled, Mapping):
        for part, why in sorted(disabled.items()):
            add(f"{part} OFF", why)
    minutes = status.get("connected_minutes_today")
    if isinstance(minutes, (int, float)):
        cap = status.get("daily_cap_minutes")
        add("today", f"{minutes:.1f} min connected" + (f" of {cap:g}" if isinstance(cap, (int, float)) else ""))
    uptime = status.get("uptime_s")
    if isinstance(uptime, (int, float)):
        add("uptime", _duration(float(uptime)))
    counters = status.get("counters")
    if isinstance(counters, Mapping) and counters:
        add("counters", ", ".join(f"{k} {v}" for k, v in counters.items()))
    errors = status.get("errors")
    if isinstance(errors, Mapping) and errors:
        add("errors", ", ".join(f"{k} {v}" for k, v in errors.items()))
    last = status.get("last_error")
    if isinstance(last, Mapping):
        add("last error", f"{last.get('text', '?')}" + (f" at {last['time']}" if last.get("time") else ""))
    latency = status.get("latency_ms")
    if isinstance(latency, Mapping):
        shown = [
            f"{name.replace('_', ' ')} {h['mean']:.0f} ms (n={h.get('count', '?')})"
            for name, h in latency.items()
            if isinstance(h, Mapping) and isinstance(h.get("mean"), (int, float))
        ]
        if shown:
            add("latency", ", ".join(shown))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    return str(dt.timedelta(seconds=round(seconds)))
