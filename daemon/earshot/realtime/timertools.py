"""The timer built-ins the model may call: ``set_timer``, ``set_alarm``, ``list_timers``, ``cancel_timer``.

They drive a :class:`TimerControl` (the daemon's :class:`~earshot.timerservice.TimerService`), whose
refusals (:class:`~earshot.timers.TimerError`) become ``{"error": ...}`` for the model to say. The
answers carry what the user wants to hear back: the id, the label, when it rings (local time) and
how long until then.
"""

from __future__ import annotations

from typing import Any, Protocol

from earshot.errors import ToolError
from earshot.realtime.toolspec import ToolSpec
from earshot.timers import MAX_DURATION_S, MAX_LABEL_CHARS, TimerError

__all__ = ["TIMER_TOOLS", "TimerControl", "run_timer_tool"]

_LABEL = {"type": "string", "maxLength": MAX_LABEL_CHARS, "description": "what it is for, e.g. pasta (optional)"}

TIMER_TOOLS = (
    ToolSpec(
        "set_timer",
        "Start a countdown timer on this device. It rings here when it runs out, even offline."
        " Give the duration in seconds (e.g. 600 for ten minutes).",
        {
            "type": "object",
            "properties": {
                "seconds": {"type": "integer", "minimum": 1, "maximum": MAX_DURATION_S},
                "label": _LABEL,
            },
            "required": ["seconds"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "set_alarm",
        "Set an alarm on this device for the next time the local clock shows `time` (24-hour HH:MM),"
        " today or tomorrow.",
        {
            "type": "object",
            "properties": {
                "time": {"type": "string", "maxLength": 8, "description": "local time, 24-hour HH:MM"},
                "label": _LABEL,
            },
            "required": ["time"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "list_timers",
        "The timers and alarms set on this device: id, label, when each rings and the seconds left.",
        {"type": "object", "properties": {}, "additionalProperties": False},
    ),
    ToolSpec(
        "cancel_timer",
        "Cancel a timer or alarm by its id (from list_timers), its label, or `all`.",
        {
            "type": "object",
            "properties": {"which": {"type": "string", "maxLength": 64}},
            "required": ["which"],
            "additionalProperties": False,
        },
    ),
)
_NAMES = frozenset(spec.name for spec in TIMER_TOOLS)


class TimerControl(Protocol):
    """What the timer tools drive (each returns what the model is told)."""

    def set_timer(self, seconds: float, label: str) -> dict[str, Any]:
        """A countdown timer of ``seconds``."""

    def set_alarm(self, at: str, label: str) -> dict[str, Any]:
        """An alarm at the next local ``at`` (HH:MM)."""

    def list_timers(self) -> dict[str, Any]:
        """Every timer and alarm."""

    def cancel_timer(self, which: str) -> dict[str, Any]:
        """Cancel by id, label or ``all``."""


def run_timer_tool(control: TimerControl, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run the timer tool ``name`` with validated ``arguments``; a refusal raises :class:`ToolError`."""
    if name not in _NAMES:
        raise ToolError(f"unknown timer tool {name!r}")
    label = str(arguments.get("label", ""))
    try:
        if name == "set_timer":
            return control.set_timer(float(arguments["seconds"]), label)
        if name == "set_alarm":
            return control.set_alarm(str(arguments["time"]), label)
        if name == "list_timers":
            return control.list_timers()
        return control.cancel_timer(str(arguments["which"]))
    except TimerError as exc:
        raise ToolError(str(exc)) from None
