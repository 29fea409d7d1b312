"""One exception tree for the daemon.

::

    DaemonError
    ├── ConfigError(DaemonError, ValueError)            bad YAML / values → exit 78 (EX_CONFIG)
    ├── AudioDeviceError(DaemonError, OSError)          open/read/write failures (mapped from alsaaudio)
    ├── RealtimeError
    │   ├── LocalProtocolError(RealtimeError, AssertionError)   we sent something illegal: a bug
    │   ├── RemoteProtocolError                          malformed/unexpected server message
    │   ├── RealtimeServerError                          server ``error`` event: code, message, event_id
    │   ├── HandshakeError                               the WebSocket upgrade failed: HTTP status, or timeout
    │   ├── ConnectionLost                               the WebSocket closed or went silent: close code
    │   └── AuthenticationError(RealtimeError)           key missing/invalid: stop fast retries
    ├── ToolError                                        a local tool failed (becomes a tool output)
    └── InvalidTransition(DaemonError, AssertionError)  state-machine misuse: a bug

Foreign exceptions (``alsaaudio.ALSAAudioError``, ``websockets`` and ``yaml`` errors) are mapped
into this tree with ``raise … from exc`` in the one module that imports them.
"""

from __future__ import annotations

EX_CONFIG = 78
"""sysexits.h EX_CONFIG: the exit status for a configuration error (the unit does not restart)."""


class DaemonError(Exception):
    """Base of every error the daemon raises on purpose."""


class ConfigError(DaemonError, ValueError):
    """The configuration is invalid.

    Attributes:
        problems: one human line per problem, each naming the key path (and line when known).
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class AudioDeviceError(DaemonError, OSError):
    """An audio device could not be opened, read or written.

    Attributes:
        device: the ALSA PCM name (or file path) concerned.
    """

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        self.message = message
        super().__init__(f"{device}: {message}")

    def __str__(self) -> str:
        return f"{self.device}: {self.message}"


class RealtimeError(DaemonError):
    """Base of errors on the link to the Realtime API."""


class LocalProtocolError(RealtimeError, AssertionError):
    """We tried to send something the protocol forbids: a bug in the daemon."""


class RemoteProtocolError(RealtimeError):
    """The server sent something malformed or unexpected."""


class RealtimeServerError(RealtimeError):
    """An ``error`` event from the server.

    Attributes:
        code: the server's error code (may be None).
        message: the server's message.
        event_id: the id of our client event that caused it, when known.
        error_type: the server's error ``type`` (e.g. ``invalid_request_error``).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        event_id: str | None = None,
        error_type: str | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.event_id = event_id
        self.error_type = error_type
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.code or self.error_type or "error", self.message]
        if self.event_id:
            parts.append(f"(caused by {self.event_id})")
        return " ".join(parts)


class HandshakeError(RealtimeError):
    """The WebSocket could not be opened.

    Attributes:
        status: the HTTP status of a refused upgrade (401, 404, 429, 503 …), or None for a
            timeout or a malformed handshake.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ConnectionLost(RealtimeError):
    """An open WebSocket ended (closed by either side, dropped, or no pong in time).

    Attributes:
        code: the close code received (1001 going away, 1006 abnormal, 1011 …), or None.
        reason: the close reason text (may be empty).
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class AuthenticationError(RealtimeError):
    """No usable credential, or the server rejected it. Fast retries stop."""


class ToolError(DaemonError):
    """A local tool could not run or failed; reported to the model as the call's output."""


class InvalidTransition(DaemonError, AssertionError):
    """A state machine was asked to make a move its table does not allow: a bug."""
