"""Logging set-up: journald with structured fields under systemd, plain stderr otherwise.

Level policy (also in the README):

- ERROR: bugs and unexpected exceptions, with a traceback, once, at the supervisor.
- WARNING: degraded but running (reconnecting repeatedly, capture overruns, server ``error`` events).
- INFO: lifecycle (start, device opened, session ready, wake detected, response done, stop).
- DEBUG: per-event traffic (``> response.cancel``, ``< response.output_audio.delta``, ``= SPEAKING``).

Structured journal fields are passed with ``extra=``: ``logger.info("wake", extra={"PHASE": "LISTENING",
"EVENT": "wake"})`` (lower-case ``phase``/``event`` are accepted too). On stderr they are not shown.

Every record passes :class:`RedactFilter` on its way out: anything that looks like an API key or a
bearer token is replaced, in the message, its arguments and an attached traceback. The code never
logs a key on purpose; this is defence in depth.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal, TextIO

__all__ = ["RedactFilter", "configure", "journal_stream_is_stderr", "redact"]

_HANDLER_NAME = "earshot"

_SECRET_PATTERNS = (
    # OpenAI keys: sk-..., sk-proj-..., sk-svcacct-...
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    # Realtime ephemeral client secrets: ek_...
    re.compile(r"\bek_[A-Za-z0-9_\-]{8,}"),
    # HTTP bearer tokens, any scheme-case, with or without an Authorization: prefix.
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"),
)
REDACTED = "[REDACTED]"

# Journal field names accepted through ``extra=`` in lower case (mapped to upper case).
_STRUCTURED = ("phase", "event")

# logging level → syslog priority, for "<N>" prefixes on a stderr that journald reads.
_PRIORITY = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def redact(text: str) -> str:
    """Return ``text`` with anything that looks like an API key or bearer token replaced."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record with secrets redacted; also maps ``phase``/``event`` extras to journal fields.

    The message is formatted here (``msg % args``) and the arguments dropped, so no handler can
    see (or, like ``JournalHandler``'s ``CODE_ARGS``, forward) an unredacted argument.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always lets it through."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in _STRUCTURED:
            value = record.__dict__.get(name)
            if value is not None and name.upper() not in record.__dict__:
                setattr(record, name.upper(), str(value))
        mark = record.__dict__.get("mark")
        if isinstance(mark, str):  # the mark repeats the message's text: it was not redacted with it
            record.mark = redact(mark)
        data = record.__dict__.get("data")
        if isinstance(data, dict):
            record.data = {k: redact(v) if isinstance(v, str) else v for k, v in data.items()}
        return True


class _StderrFormatter(logging.Formatter):
    """``LEVEL logger: message``, no timestamp (journald adds one); ``<N>`` priority prefixes optional."""

    def __init__(self, *, priority_prefix: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self._priority_prefix = priority_prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self._priority_prefix:
            return text
        priority = next((p for level, p in _PRIORITY if record.levelno >= level), 7)
        # sd-daemon(3): each line carries its own prefix, or journald files continuation lines at INFO.
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class _JsonFormatter(logging.Formatter):
    """One JSON object a line, for tools that read the daemon's events (the bench, the demo, a kiosk).

    ``{"t": unix time, "level", "logger", "message"}``, plus ``event`` (a stable name: what a tool
    matches on, never the message text) and ``data`` (its fields) for the daemon's events, ``at``
    (capture seconds) and ``mark`` for the conversation's lifecycle marks, ``phase`` where given, and
    ``exc`` with a traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "t": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("at", "mark", "data"):
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        for name in _STRUCTURED:
            value = record.__dict__.get(name.upper())
            if value is not None:
                doc[name] = value
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False)


def journal_stream_is_stderr(environ: Mapping[str, str] | None = None, stream: TextIO | None = None) -> bool:
    """Whether stderr is connected to journald (``$JOURNAL_STREAM`` names its device and inode)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return st.st_dev == int(dev) and st.st_ino == int(ino)
    except (OSError, ValueError, AttributeError):
        return False


def _journal_handler(sender: Callable[..., Any] | None) -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    kwargs: dict[str, Any] = {"SYSLOG_IDENTIFIER": "earshot"}
    if sender is not None:
        kwargs["sender_function"] = sender
    handler: logging.Handler = JournalHandler(**kwargs)
    return handler


def configure(
    level: str | int = "info",
    journald: Literal["auto", "on", "off"] = "auto",
    *,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    journal_sender: Callable[..., Any] | None = None,
    fmt: Literal["text", "json"] = "text",
) -> logging.Handler:
    """Install the daemon's log handler on the root logger (idempotent: replaces an earlier one).

    Args:
        level: ``debug``/``info``/``warning``/``error`` (any case) or a ``logging`` level number.
        journald: ``auto`` uses journald when ``$JOURNAL_STREAM`` is our stderr; ``on`` forces it
            (falls back to stderr when systemd-python is missing); ``off`` never.
        environ: environment to inspect (default ``os.environ``).
        stream: the stderr stream (default ``sys.stderr``).
        journal_sender: replaces ``systemd.journal.send`` (tests).
        fmt: ``text`` or ``json`` lines on stderr (journald keeps its structured fields either way).

    Returns:
        The installed handler.

    Raises:
        ValueError: an unknown level name.
    """
    numeric = _level(level)
    on_journal_stream = journal_stream_is_stderr(environ, stream)
    handler: logging.Handler | None = None
    if journald == "on" or (journald == "auto" and on_journal_stream):
        handler = _journal_handler(journal_sender)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        if fmt == "json":
            handler.setFormatter(_JsonFormatter())
        else:
            handler.setFormatter(_StderrFormatter(priority_prefix=on_journal_stream))
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RedactFilter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # websockets logs every frame at DEBUG: base64 audio has no place in the journal.
    logging.getLogger("websockets").setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)
    if journald == "on" and not _is_journal(handler):
        logging.getLogger(__name__).warning("journald logging requested but systemd-python is missing")
    return handler


def _is_journal(handler: logging.Handler) -> bool:
    return type(handler).__name__ == "JournalHandler"


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error)")
    return value
