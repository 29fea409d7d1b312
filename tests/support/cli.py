"""The real ``earshot`` command line against a running daemon's control socket, from a test."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


async def earshot_cli(socket: Path, command: str, *words: str) -> str:
    """Run ``earshot COMMAND --socket SOCKET WORDS...`` in a child process; its output (it must succeed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "earshot",
        command,
        "--socket",
        str(socket),
        *words,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    return out.decode()
