"""What the token service grants a device: how often, how long, and which session. Pure.

- :class:`Limiter`: per device, a token bucket (``per_minute`` sustained, ``burst`` back to back)
  and a cap per UTC day. A refusal says how long to wait (``Retry-After``). Today's counts can be
  saved and restored, so a restart does not reset the daily cap.
- :func:`pin_request`: the body sent upstream. The device's session is kept for what is its own
  (audio formats, turn detection, voice), while the model, the instructions and the tools offered
  are the service's: a device cannot choose a dearer model, rewrite its instructions or offer a
  tool the fleet does not allow. The lifetime is capped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DAY_S", "Limiter", "Pin", "pin_request"]

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Pin:
    """The session fields the service decides."""

    model: str
    instructions: str | None = None
    tools: tuple[str, ...] | None = None
    """Function names and MCP server labels a device may offer; None = whatever it asks."""
    max_ttl_s: int = 120


def pin_request(body: Any, pin: Pin) -> tuple[dict[str, Any] | None, str]:
    """The upstream request for a device's ``body``, or None with why it is refused."""
    if not isinstance(body, dict):
        return None, "the body must be a JSON object"
    session = body.get("session")
    if not isinstance(session, dict):
        return None, "'session' must be an object"
    if session.get("type", "realtime") != "realtime":
        return None, "only realtime sessions are minted here"
    expires = body.get("expires_after")
    seconds = pin.max_ttl_s
    if isinstance(expires, dict):
        asked = expires.get("seconds")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 10:
            seconds = min(asked, pin.max_ttl_s)
    pinned = dict(session)
    pinned["type"] = "realtime"
    pinned["model"] = pin.model
    if pin.instructions is not None:
        pinned["instructions"] = pin.instructions
    if pin.tools is not None:
        tools = session.get("tools")
        pinned["tools"] = [t for t in tools if _tool_name(t) in pin.tools] if isinstance(tools, list) else []
        if not pinned["tools"] and "tool_choice" in pinned:
            del pinned["tool_choice"]
    return {"expires_after": {"anchor": "created_at", "seconds": seconds}, "session": pinned}, ""


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, Mapping):
        return None
    name = tool.get("server_label") if tool.get("type") == "mcp" else tool.get("name")
    return name if isinstance(name, str) else None


class Limiter:
    """Per-device rate and daily cap. Time is passed in: monotonic for the rate, Unix for the day."""

    def __init__(self, per_minute: float, burst: int, daily: int) -> None:
        self.per_s = per_minute / 60.0
        self.burst = burst
        self.daily = daily
        self._bucket: dict[str, tuple[float, float]] = {}
        self._day = -1
        self._today: dict[str, int] = {}

    def take(self, device: str, now: float, now_wall: float) -> float | None:
        """Count one secret for ``device``; None when granted, else the seconds to wait."""
        self._roll(now_wall)
        if self._today.get(device, 0) >= self.daily:
            return math.ceil((self._day + 1) * DAY_S - now_wall)
        level, at = self._bucket.get(device, (float(self.burst), now))
        level = min(float(self.burst), level + (now - at) * self.per_s)
        if level < 1.0:
            self._bucket[device] = (level, now)
            return max(1.0, math.ceil((1.0 - level) / self.per_s))
        self._bucket[device] = (level - 1.0, now)
        self._today[device] = self._today.get(device, 0) + 1
        return None

    def refund(self, device: str) -> None:
        """Give back a secret the upstream failed to mint (the device did not get it)."""
        if self._today.get(device, 0) > 0:
            self._today[device] -= 1
        level, at = self._bucket.get(device, (float(self.burst), 0.0))
        self._bucket[device] = (min(float(self.burst), level + 1.0), at)

    def today(self, device: str, now_wall: float) -> int:
        """Secrets minted for ``device`` this UTC day."""
        self._roll(now_wall)
        return self._today.get(device, 0)

    def forget(self, keep: Mapping[str, object]) -> None:
        """Drop the state of devices no longer enrolled (the registry changed)."""
        for device in [d for d in self._bucket if d not in keep]:
            del self._bucket[device]

    def snapshot(self) -> dict[str, Any]:
        """Today's counts, to save."""
        return {"day": self._day, "counts": dict(self._today)}

    def restore(self, saved: Any, now_wall: float) -> None:
        """Take back counts saved today (anything else is ignored)."""
        self._roll(now_wall)
        if not isinstance(saved, dict) or saved.get("day") != self._day or not isinstance(saved.get("counts"), dict):
            return
        for device, count in saved["counts"].items():
            if isinstance(device, str) and isinstance(count, int) and not isinstance(count, bool) and count > 0:
                self._today[device] = max(self._today.get(device, 0), count)

    def _roll(self, now_wall: float) -> None:
        day = int(now_wall // DAY_S)
        if day != self._day:
            self._day = day
            self._today = {}
