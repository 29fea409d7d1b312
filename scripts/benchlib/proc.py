"""Subprocess handling shared by the bench and the demo (no imports beyond the standard library)."""

from __future__ import annotations

import asyncio
import compileall
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any


def earshot_argv() -> list[str]:
    """How to start the ``earshot`` CLI: the venv's ``earshot`` beside this Python, else ``python -m earshot``."""
    exe = Path(sys.executable).with_name("earshot")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "earshot"]


@functools.cache
def byte_compile() -> None:
    """Byte-compile the earshot package once, as an install does (pip writes the ``.pyc`` files).

    A development checkout run with ``PYTHONDONTWRITEBYTECODE`` (this machine's default) has none, so
    every daemon compiled its 20,000 lines at start: CPU that no installed daemon spends (on the
    daemon's VmHWM the effect measured within noise, 0.1 MB). Only sources newer than their ``.pyc``
    are compiled again.
    """
    spec = importlib.util.find_spec("earshot")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        compileall.compile_dir(location, quiet=1)


async def start_daemon(config: Path, env: dict[str, str], **kwargs: Any) -> asyncio.subprocess.Process:
    """``earshot run --config`` with stdout discarded and stderr piped (its log); ``kwargs`` go to the exec.

    The package is byte-compiled first (:func:`byte_compile`): the daemon starts as installed.
    """
    byte_compile()
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
