"""Logging: redaction of secrets, plain stderr without timestamps, journald structured fields."""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from earshot import logs


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcDEF1234567890_xyz",
        "sk-abcdefghijklmnop",
        "ek_68af1e9b2c3d4e5f",
        "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "authorization: bearer abcdefgh12345678",
    ],
)
def test_redact(secret: str) -> None:
    """Anything looking like a key or bearer token is replaced."""
    out = logs.redact(f"connecting with {secret} now")
    assert logs.REDACTED in out
    assert secret.split()[-1] not in out


def test_redact_leaves_ordinary_text() -> None:
    """Ordinary words (a 'sk-' prefix too short, a bare 'bearer') survive."""
    text = "task-12 sk-1 the bearer of news, event ek_1"
    assert logs.redact(text) == text


def test_stderr_plain_and_redacted() -> None:
    """Outside systemd: LEVEL logger: message, no timestamp, secrets redacted in args and tracebacks."""
    stream = io.StringIO()
    logs.configure("debug", "auto", environ={}, stream=stream)
    log = logging.getLogger("earshot.test")
    log.info("key is %s", "sk-live1234567890abcdef")
    try:
        raise ValueError("Bearer abcdefghijklmnopqrstuvwxyz was refused")
    except ValueError:
        log.exception("connect failed")
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"INFO earshot.test: key is {logs.REDACTED}"
    assert lines[1] == "ERROR earshot.test: connect failed"
    text = stream.getvalue()
    assert "sk-live" not in text
    assert "abcdefghijklmnopqrstuvwxyz" not in text
    assert f"ValueError: {logs.REDACTED} was refused" in text


def test_level_and_idempotent() -> None:
    """The level applies; configuring twice leaves one handler."""
    stream = io.StringIO()
    logs.configure("warning", "off", environ={}, stream=stream)
    logs.configure("WARNING", "off", environ={}, stream=stream)
    assert [h.get_name() for h in logging.getLogger().handlers].count("earshot") == 1
    logging.getLogger("earshot.x").info("hidden")
    logging.getLogger("earshot.x").warning("shown")
    assert stream.getvalue() == "WARNING earshot.x: shown\n"


def test_unknown_level() -> None:
    """An unknown level name is a ValueError."""
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.configure("loud", "off", environ={}, stream=io.StringIO())


def test_websockets_frames_never_at_debug() -> None:
    """websockets' per-frame DEBUG logging (base64 audio) stays off even at debug."""
    logs.configure("debug", "off", environ={}, stream=io.StringIO())
    assert logging.getLogger("websockets").getEffectiveLevel() == logging.INFO


def test_journal_stream_detection_and_priority_prefix() -> None:
    """JOURNAL_STREAM naming our stderr's device:inode is detected; lines then carry <N> priorities."""
    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert logs.journal_stream_is_stderr(env, f)
        assert not logs.journal_stream_is_stderr({"JOURNAL_STREAM": "1:2"}, f)
        assert not logs.journal_stream_is_stderr({"JOURNAL_STREAM": "junk"}, f)
        logs.configure("info", "off", environ=env, stream=f)  # journald off: stderr with priorities
        logging.getLogger("earshot.p").warning("two\nlines")
        logging.getLogger("earshot.p").info("fine")
        f.seek(0)
        assert f.read() == "<4>WARNING earshot.p: two\n<4>lines\n<6>INFO earshot.p: fine\n"


def test_journald_structured_fields() -> None:
    """Under journald: systemd's JournalHandler sends PHASE/EVENT fields, priority, no raw args."""
    pytest.importorskip("systemd.journal")
    sent: list[dict[str, Any]] = []

    def sender(message: str, /, **fields: Any) -> None:
        sent.append({"MESSAGE": message, **fields})

    with tempfile.TemporaryFile("w+") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        handler = logs.configure("info", "auto", environ=env, stream=f, journal_sender=sender)
        assert type(handler).__name__ == "JournalHandler"
        log = logging.getLogger("earshot.app")
        log.info("wake detected with %s", "sk-proj-0123456789abcdef", extra={"phase": "LISTENING", "EVENT": "wake"})
        f.seek(0)
        assert f.read() == ""  # nothing duplicated on stderr
    (entry,) = sent
    assert entry["MESSAGE"] == f"wake detected with {logs.REDACTED}"
    assert entry["PHASE"] == "LISTENING"
    assert entry["EVENT"] == "wake"
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "earshot"
    assert entry["LOGGER"] == "earshot.app"
    assert "CODE_ARGS" not in entry
    assert all("sk-proj" not in str(v) for v in entry.values())


def test_journald_off_outside_systemd() -> None:
    """auto without JOURNAL_STREAM is plain stderr."""
    handler = logs.configure("info", "auto", environ={}, stream=sys.stderr)
    assert isinstance(handler, logging.StreamHandler)


def test_json_lines_carry_the_conversation_marks_and_stay_redacted() -> None:
    """logging.format json: one object a line; the core's events keep their name, fields, capture time and
    text apart, and a secret is redacted in the fields too."""
    import json

    from earshot.conversation import core

    stream = io.StringIO()
    logs.configure("info", "off", environ={}, stream=stream, fmt="json")
    what = "connection lost: bad key sk-live1234567890abcdef"
    data = {"error": "bad key sk-live1234567890abcdef", "attempt": 3}
    core.logger.info(
        "[%.3f] %s", 1.25, what, extra={"at": 1.25, "mark": what, "event": "connection_lost", "data": data}
    )
    logging.getLogger("earshot.test").warning("key is %s", "sk-live1234567890abcdef", extra={"phase": "IDLE"})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == "earshot.conversation.core"
    assert first["at"] == 1.25
    assert first["event"] == "connection_lost"  # what tools match on, not the text
    assert first["data"] == {"error": f"bad key {logs.REDACTED}", "attempt": 3}
    assert first["mark"] == f"connection lost: bad key {logs.REDACTED}"
    assert first["level"] == "INFO"
    assert second["message"] == f"key is {logs.REDACTED}"
    assert second["phase"] == "IDLE"
    assert "sk-live" not in stream.getvalue()
    logs.configure("info", "off", environ={}, stream=io.StringIO())
