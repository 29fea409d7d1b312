"""Config tools run by another user: the ``earshot-tools`` socket, so that no tool can read the key.

Under systemd the daemon's user owns its credential (``LoadCredential``) and its key file, and any
process of that user can read them. So the installed units run config tools elsewhere:
``earshot-tools.socket`` listens on :data:`DEFAULT_SOCKET`, and every connection starts one
``earshot-tools@.service`` instance as a user of its own (``DynamicUser=``, no credential, hardened
like the daemon), which runs ``earshot tool-exec``. The daemon learns the socket from
``$EARSHOT_TOOL_SOCKET`` (set in its unit).

One call per connection, one JSON line each way::

    → {"tool": "garage_door", "arguments": "<the call's arguments: JSON text>"}
    ← {"output": "<the function_call_output, exactly as a local run gives it>"}

The runner only runs tools named in *its* reading of the config (``--config``), with that config's
argv, schema, timeout and output bound: a peer that reaches the socket can do no more than the model
can. A closed connection (the daemon cancelled the call) stops the run and everything it started;
systemd then also removes the instance's whole cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
from pathlib import Path

from earshot.config import load_config
from earshot.errors import ToolError
from earshot.realtime.tools import ToolRunner

__all__ = ["DEFAULT_SOCKET", "ENV_SOCKET", "MAX_REQUEST_BYTES", "call", "serve_connection", "serve_stdin"]

logger = logging.getLogger(__name__)

ENV_SOCKET = "EARSHOT_TOOL_SOCKET"
DEFAULT_SOCKET = Path("/run/earshot-tools.sock")
MAX_REQUEST_BYTES = 1024 * 1024
"""A call's request line at most (the arguments of one function call)."""
_MAX_RESPONSE_BYTES = 2 * 1024 * 1024 + 65536
"""A result line at most: ``max_output_bytes`` (≤ 1 MiB) as JSON text, escaped."""
_REQUEST_TIMEOUT_S = 5.0
_GRACE_S = 2.0
"""Beyond the tool's own timeout, how long the daemon waits for the runner's answer."""


async def call(path: Path, name: str, arguments_json: str, timeout_s: float) -> str:
    """Run config tool ``name`` through the runner at ``path``; return its ``function_call_output``.

    Raises:
        ToolError: the runner cannot be reached, breaks the protocol, or does not answer within
            ``timeout_s`` plus a grace (its own timeout answers first).

    Cancelling closes the connection, which stops the run.
    """
    request = json.dumps({"tool": name, "arguments": arguments_json}).encode() + b"\n"
    if len(request) > MAX_REQUEST_BYTES:
        raise ToolError(f"arguments of {name!r} too long ({len(request)} bytes)")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s + _GRACE_S):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_RESPONSE_BYTES)
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        raise ToolError(f"the tool runner did not answer for {name!r} in {timeout_s + _GRACE_S:g} s") from None
    except (OSError, ValueError) as exc:  # ValueError: a line over the limit
        raise ToolError(f"tool runner at {path} unusable: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
    try:
        answer = json.loads(line)
        output = answer["output"]
    except (ValueError, KeyError, TypeError):
        raise ToolError(f"tool runner at {path} gave no result for {name!r}") from None
    if not isinstance(output, str):
        raise ToolError(f"tool runner at {path} gave no result for {name!r}")
    return output


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, runner: ToolRunner) -> None:
    """Answer one call on a connection (the runner side). Never raises for the peer's sake."""
    try:
        async with asyncio.timeout(_REQUEST_TIMEOUT_S):
            line = await reader.readline()
        request = json.loads(line)
        name, arguments = request["tool"], request["arguments"]
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise TypeError("tool and arguments must be strings")
    except (TimeoutError, ValueError, KeyError, TypeError) as exc:
        logger.warning("tool-exec: unusable request: %s", type(exc).__name__)
        writer.close()
        return
    if name not in runner.config_tools:
        # Built-ins run in the daemon; a peer may only name the config's tools.
        output = json.dumps({"error": f"unknown tool {name!r}"})
    else:
        run = asyncio.ensure_future(runner.run(name, arguments))
        hangup = asyncio.ensure_future(reader.read(1))  # the daemon gave up (cancelled): stop the run
        await asyncio.wait({run, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            writer.close()
            return
        hangup.cancel()
        output = run.result()
    with contextlib.suppress(OSError):
        writer.write(json.dumps({"output": output}).encode() + b"\n")
        await writer.drain()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def serve_stdin(config_path: Path) -> int:
    """``earshot tool-exec``: answer the one call on the socket systemd passed as stdin (``Accept=yes``)."""
    config = load_config(config_path)
    runner = ToolRunner(dataclasses.replace(config.realtime, builtin_tools=()), mixer=None)  # built-ins: the daemon's
    sock = socket.socket(fileno=0)
    reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REQUEST_BYTES)
    await serve_connection(reader, writer, runner)
    return 0
