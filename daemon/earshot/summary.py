"""The one journal line per engagement, with its ``EARSHOT_*`` fields (``journalctl EARSHOT_EVENT=engagement``)."""

from __future__ import annotations

from earshot.stats import EngagementRecord

__all__ = ["engagement_summary"]


def engagement_summary(record: EngagementRecord, now: float) -> tuple[str, dict[str, str]]:
    """One INFO line summarising an engagement, and journald fields for ``extra=``.

    Returns:
        ``(message, fields)``: the message is complete on its own (use it as the log format with
        no arguments); the fields are upper-case journal field names with string values, e.g.
        ``journalctl -u earshot EARSHOT_EVENT=engagement EARSHOT_BARGEINS=1``.
    """
    duration = record.duration_s(now)
    reply = record.reply_start_ms
    reply_avg = sum(reply) / len(reply) if reply else None
    barge_avg = sum(record.bargein_ms) / len(record.bargein_ms) if record.bargein_ms else None
    parts = [
        f"engagement {record.engagement_id} ({record.trigger}) ended: {record.end_reason or 'ended'}",
        f"{duration:.1f} s",
        f"{record.turns} turn{'s' if record.turns != 1 else ''}",
        f"{record.bargeins} barge-in{'s' if record.bargeins != 1 else ''}",
        f"{record.reconnects} reconnect{'s' if record.reconnects != 1 else ''}",
    ]
    if record.errors:
        parts.append(f"{record.errors} error{'s' if record.errors != 1 else ''}")
    latencies = []
    if record.wake_to_ready_ms is not None:
        latencies.append(f"ready {record.wake_to_ready_ms:.0f} ms")
    if reply_avg is not None:
        latencies.append(f"reply start {reply_avg:.0f} ms avg" + (f" (max {max(reply):.0f})" if len(reply) > 1 else ""))
    if barge_avg is not None:
        latencies.append(f"barge-in {barge_avg:.0f} ms avg")
    tokens = record.tokens
    if tokens.billed_in or tokens.billed_out:
        parts.append(f"{tokens.billed_in + tokens.billed_out} tokens (~${record.cost_usd:.3f})")
    message = ", ".join(parts) + (f"; {', '.join(latencies)}" if latencies else "")

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.0f}"

    fields = {
        "EARSHOT_EVENT": "engagement",
        "EARSHOT_ENGAGEMENT_ID": record.engagement_id,
        "EARSHOT_TRIGGER": record.trigger,
        "EARSHOT_END_REASON": record.end_reason or "",
        "EARSHOT_DURATION_S": f"{duration:.1f}",
        "EARSHOT_TURNS": str(record.turns),
        "EARSHOT_BARGEINS": str(record.bargeins),
        "EARSHOT_RECONNECTS": str(record.reconnects),
        "EARSHOT_ERRORS": str(record.errors),
        "EARSHOT_WAKE_TO_READY_MS": ms(record.wake_to_ready_ms),
        "EARSHOT_REPLY_START_MS": ms(reply_avg),
        "EARSHOT_BARGEIN_MS": ms(barge_avg),
        "EARSHOT_TOKENS_IN": str(tokens.billed_in),
        "EARSHOT_TOKENS_OUT": str(tokens.billed_out),
        "EARSHOT_COST_USD": f"{record.cost_usd:.4f}",
    }
    return message, {k: v for k, v in fields.items() if v != ""}
