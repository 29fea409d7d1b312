"""The conversation as text within one session, bounded, and the history the next session is given.

An entry per conversation item (user or assistant), created when the server first names the item.
Transcript pieces extend it (deltas) or replace it (the final text); each entry and the whole log
have a character bound, and past them the oldest entries go. An entry is *settled* when the
response that answered (or was) it is done: only settled entries become history, so a user turn
still waiting for its reply is replayed as audio instead of text. An assistant item cut by barge-in
keeps about the part that was heard (``heard_ms`` of ``total_ms``), cut at a word, marked truncated.

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from earshot.config import HistoryConfig
from earshot.realtime.policy import HistoryItem, trim_history

__all__ = ["MAX_ENTRIES", "MAX_ENTRY_CHARS", "MAX_TRANSCRIPT_CHARS", "Entry", "TranscriptLog", "cut_text"]

MAX_ENTRIES = 400
"""Items kept per session at most (the oldest go first)."""
MAX_ENTRY_CHARS = 16_384
"""Characters of one item's transcript at most: a few minutes of speech is under 5,000 (the rest of a
hostile delta stream is dropped)."""
MAX_TRANSCRIPT_CHARS = 262_144
"""Characters of all items' transcripts at most (the oldest items go first)."""

Role = Literal["user", "assistant"]


@dataclass(slots=True)
class Entry:
    """One conversation item's text and what is known of how it ended."""

    role: Role
    item_id: str | None
    text: str = ""
    settled: bool = False
    response_id: str | None = None
    heard_ms: int | None = None
    total_ms: int = 0


class TranscriptLog:
    """Every item's transcript in this session, oldest first, within :data:`MAX_ENTRIES` and the char bounds."""

    def __init__(self, prior: Sequence[HistoryItem], limits: HistoryConfig) -> None:
        self._limits = limits
        self.prior = trim_history(list(prior), max_items=limits.max_items, max_chars=limits.max_chars)
        """The history this session was given (replayed into it when it becomes ready)."""
        self._entries: list[Entry] = []
        self._by_item: dict[str, Entry] = {}
        self.chars = 0
        """Characters of transcript kept."""
        self.dropped_chars = 0
        """Characters of transcript dropped at the per-item bound."""

    def get(self, item_id: str) -> Entry | None:
        """The entry of ``item_id`` if the server has named that item."""
        return self._by_item.get(item_id)

    def entry(self, item_id: str, role: Role) -> Entry:
        """The entry of ``item_id``, created (as ``role``) the first time the item is named."""
        entry = self._by_item.get(item_id)
        if entry is None:
            entry = Entry(role, item_id)
            self._by_item[item_id] = entry
            self._entries.append(entry)
            if len(self._entries) > MAX_ENTRIES:
                self._evict_oldest()
        return entry

    def set_text(self, entry: Entry, piece: str, final: bool) -> None:
        """Replace (``final``) or extend an item's transcript, within the per-item and total bounds."""
        base = "" if final else entry.text
        room = MAX_ENTRY_CHARS - len(base)
        if len(piece) > room:
            self.dropped_chars += len(piece) - max(0, room)
            piece = piece[: max(0, room)]
        text = base + piece
        self.chars += len(text) - len(entry.text)
        entry.text = text
        while self.chars > MAX_TRANSCRIPT_CHARS and len(self._entries) > 1:
            self._evict_oldest()

    def settle(self, response_id: str) -> None:
        """The response ``response_id`` is done: the user turns before it and its own items are settled."""
        for entry in self._entries:
            if entry.role == "user" or entry.response_id == response_id:
                entry.settled = True

    def history(self) -> list[HistoryItem]:
        """The prior history plus every settled, non-empty entry, trimmed to the history limits."""
        items = list(self.prior)
        for entry in self._entries:
            if not entry.settled or not entry.text.strip():
                continue
            if entry.role == "assistant" and entry.heard_ms is not None:
                items.append(HistoryItem("assistant", cut_text(entry.text, entry.heard_ms, entry.total_ms), True))
            else:
                items.append(HistoryItem(entry.role, entry.text))
        return trim_history(items, max_items=self._limits.max_items, max_chars=self._limits.max_chars)

    def _evict_oldest(self) -> None:
        old = self._entries.pop(0)
        self.chars -= len(old.text)
        if old.item_id is not None:
            self._by_item.pop(old.item_id, None)


def cut_text(text: str, heard_ms: int, total_ms: int) -> str:
    """About the part of ``text`` that was heard, cut at a word boundary, with an ellipsis."""
    if total_ms <= 0 or heard_ms >= total_ms:
        return text
    keep = int(len(text) * heard_ms / total_ms)
    cut = text[:keep]
    if keep < len(text) and " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"
