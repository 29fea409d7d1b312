"""What the Realtime API bills: tokens from each ``response.done``'s ``usage``, and an estimated cost.

:class:`TokenUsage` is one response's count, parsed defensively from the server's ``usage`` object
(:func:`parse_usage`: anything missing, negative or absurd counts as 0); :class:`TokenLedger` adds
them up for the daemon's life and for the engagement in progress, and prices them with
``realtime.prices`` (US dollars per million tokens; an estimate: the invoice is the truth).
``rate_limits.updated`` is kept as the server last sent it (:func:`parse_rate_limits`). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

__all__ = ["KINDS", "TokenLedger", "TokenUsage", "parse_rate_limits", "parse_usage"]

_MAX_COUNT = 10**9
_MAX_LIMITS = 8

KINDS = ("text_in", "audio_in", "cached_in", "text_out", "audio_out")
"""The counts kept, as named in status, the journal and the metrics' ``kind`` label."""


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens of one response (``cached_in`` is part of the input, billed at the cached price)."""

    text_in: int = 0
    audio_in: int = 0
    cached_in: int = 0
    text_out: int = 0
    audio_out: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def billed_in(self) -> int:
        """Input tokens (text and audio; the cached ones are among them)."""
        return self.text_in + self.audio_in

    @property
    def billed_out(self) -> int:
        """Output tokens (text and audio)."""
        return self.text_out + self.audio_out

    def as_dict(self) -> dict[str, int]:
        """The counts by :data:`KINDS`."""
        return {kind: getattr(self, kind) for kind in KINDS}

    def cost_usd(self, prices: Any) -> float:
        """The estimate at ``prices`` (an object with per-million prices named as the counts)."""
        uncached_text = max(0, self.text_in - self.cached_in)  # cached tokens are billed at their own price
        total = (
            uncached_text * prices.text_in
            + self.audio_in * prices.audio_in
            + self.cached_in * prices.cached_in
            + self.text_out * prices.text_out
            + self.audio_out * prices.audio_out
        )
        return float(total) / 1_000_000


def _count(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        return 0
    return value


def parse_usage(usage: Any) -> TokenUsage | None:
    """A response's ``usage`` object as :class:`TokenUsage`; None when there is none."""
    if not isinstance(usage, dict):
        return None
    details_in = usage.get("input_token_details")
    details_out = usage.get("output_token_details")
    return TokenUsage(
        text_in=_count(details_in, "text_tokens"),
        audio_in=_count(details_in, "audio_tokens"),
        cached_in=_count(details_in, "cached_tokens"),
        text_out=_count(details_out, "text_tokens"),
        audio_out=_count(details_out, "audio_tokens"),
    )


def parse_rate_limits(limits: Any) -> tuple[dict[str, Any], ...]:
    """``rate_limits.updated``'s list, each as ``{name, limit, remaining, reset_seconds}``, at most 8."""
    out: list[dict[str, Any]] = []
    for raw in limits[:_MAX_LIMITS] if isinstance(limits, list) else []:
        if not isinstance(raw, dict):
            continue
        name = raw.get("name")
        reset = raw.get("reset_seconds")
        out.append(
            {
                "name": name if name in ("requests", "tokens") else "other",
                "limit": _count(raw, "limit"),
                "remaining": _count(raw, "remaining"),
                "reset_seconds": float(reset)
                if isinstance(reset, (int, float)) and not isinstance(reset, bool) and 0 <= reset < 1e6
                else None,
            }
        )
    return tuple(out)


class TokenLedger:
    """Tokens and their estimated cost, in all and for the engagement in progress."""

    def __init__(self) -> None:
        self.total = TokenUsage()
        self.engagement = TokenUsage()
        self.rate_limits: tuple[dict[str, Any], ...] = ()

    def add(self, usage: TokenUsage) -> None:
        """One response's usage."""
        self.total = self.total + usage
        self.engagement = self.engagement + usage

    def engagement_started(self) -> None:
        """A new engagement counts from zero."""
        self.engagement = TokenUsage()

    def snapshot(self, prices: Any) -> dict[str, Any]:
        """For status: the counts and the estimated cost, in all and for the last engagement."""
        return {
            "tokens": self.total.as_dict(),
            "cost_usd_estimate": round(self.total.cost_usd(prices), 4),
            "engagement_tokens": self.engagement.as_dict(),
            "engagement_cost_usd_estimate": round(self.engagement.cost_usd(prices), 4),
            "rate_limits": list(self.rate_limits),
        }
