"""Remote MCP servers as the session's tools (issue 19): their entries, with each server's token.

The Realtime service, not this device, connects to a remote MCP server (``type: mcp`` in the
session's tools). Its OAuth access token comes from ``authorization_file`` (a path, or a name under
``$CREDENTIALS_DIRECTORY`` for systemd's ``LoadCredential=``), read afresh for every connection so a
rotated token is used at once, and never from the YAML. A server whose token cannot be read is left
out of that session, with a warning that never quotes the file. What the service then says of the
servers (listings, calls, approval requests) is read by :mod:`earshot.realtime.serverevents`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earshot.config import McpServerConfig, RealtimeConfig
from earshot.realtime.auth import Secret, read_secret_file
from earshot.realtime.sessionconfig import mcp_tool

__all__ = ["session_tools"]

logger = logging.getLogger(__name__)


def _token_path(server: McpServerConfig, env: Mapping[str, str]) -> Path | None:
    path = server.authorization_file
    if path is None:
        return None
    if not path.is_absolute() and env.get("CREDENTIALS_DIRECTORY"):
        return Path(env["CREDENTIALS_DIRECTORY"]) / path
    return path


async def session_tools(config: RealtimeConfig, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``mcp`` tool entries for a new session (tokens read now, off the loop)."""
    tools: list[dict[str, Any]] = []
    for server in config.mcp_servers:
        path = _token_path(server, env)
        token: Secret | None = None
        if path is not None:
            try:
                token = await asyncio.to_thread(read_secret_file, path)
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else str(exc)
                logger.warning("MCP server %s left out: its token file %s: %s", server.server_label, path, reason)
                continue
        tools.append(mcp_tool(server, token.reveal() if token is not None else None))
    return tools
