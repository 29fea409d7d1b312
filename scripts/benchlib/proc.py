"""Subprocess handling shared by the bench and the demo (no imports beyond the standard library)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any


def earshot_argv() -> list[str]:
    """How to start the ``earshot`` CLI: the venv's ``earshot`` beside this Python, else ``python -m earshot``."""
    exe = Path(sys.executable).with_name("earshot")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "earshot"]


async def start_daemon(config: Path, env: dict[str, str], **kwargs: Any) -> asyncio.subprocess.Process:
    """``earshot run --config`` with stdout discarded and stderr piped (its log); ``kwargs`` go to the exec."""
    return await asyncio.create_subprocess_exec(
        *earshot_argv(),
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        **kwargs,
    )


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
