"""Opening the WebSocket to the Realtime endpoint, and what its failures mean to the link.

The one place that calls ``websockets.connect``: the URL check (wss://, or ws:// to loopback only),
``?model=``, TLS, the size limit, no compression, the timeouts; a refused or failed handshake becomes a
:class:`~earshot.errors.HandshakeError` and a closed connection a :class:`~earshot.errors.ConnectionLost`
that the reconnect policy judges (:mod:`earshot.realtime.policy`). An edge module.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Mapping

import websockets
from websockets.asyncio.client import ClientConnection, connect

from earshot.config import RealtimeConfig, check_realtime_url
from earshot.errors import ConfigError, ConnectionLost, HandshakeError

__all__ = ["CLOSE_TIMEOUT_S", "MAX_MESSAGE_BYTES", "lost", "open_websocket", "realtime_url"]

CLOSE_TIMEOUT_S = 2.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest server message accepted: over three times the largest legitimate one earshot meets
(a minute of reply audio inside one item is under 4 MiB of base64; the emulator's 10 MB item passes)."""


def realtime_url(url: str, model: str) -> str:
    """``url`` with ``?model=`` added when it has none (PROTOCOL.md §1.1)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(key in ("model", "call_id") for key, _ in query):
        query.append(("model", model))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def open_websocket(url: str, headers: Mapping[str, str], config: RealtimeConfig) -> ClientConnection:
    """Open the WebSocket to the Realtime endpoint.

    Args:
        url: the endpoint (``?model=`` included or added by the caller).
        headers: ``Authorization: Bearer …`` (from :func:`earshot.realtime.auth.headers_for`).
        config: timeouts and ping settings.

    Raises:
        ConfigError: the URL is not acceptable (not wss://, or ws:// to a non-loopback host).
        HandshakeError: the upgrade was refused (``status``) or timed out / was malformed.
        OSError: the TCP or TLS connection failed.

    Cancelling is safe: nothing is left open.
    """
    problem = check_realtime_url(url)
    if problem:
        raise ConfigError(f"realtime.url: {problem}")
    tls = ssl.create_default_context() if url.startswith("wss:") else None
    try:
        return await connect(
            url,
            additional_headers=dict(headers),
            max_size=MAX_MESSAGE_BYTES,
            compression=None,  # base64 audio barely compresses; deflate costs CPU on a Pi
            open_timeout=config.open_timeout_s,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=CLOSE_TIMEOUT_S,
            ssl=tls,
            user_agent_header="earshot",
        )
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        raise HandshakeError(f"upgrade refused with HTTP {status}", status=status) from exc
    except TimeoutError as exc:
        raise HandshakeError(f"no WebSocket handshake within {config.open_timeout_s:g} s") from exc
    except (websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        raise HandshakeError(f"WebSocket handshake failed: {exc}") from exc


def lost(exc: websockets.ConnectionClosed) -> ConnectionLost:
    """The link's error for a connection the peer or the network closed (1006 when no close frame came)."""
    code = exc.rcvd.code if exc.rcvd is not None else 1006
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    return ConnectionLost(f"connection closed: {exc}", code=code, reason=reason)
