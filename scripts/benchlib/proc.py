"""Subprocess handling shared by the bench and the demo (no imports beyond the standard library)."""

from __future__ import annotations

import asyncio


async def stop_daemon(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (then SIGKILL after 10 s) and reap; nothing when it has already exited."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(10):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
