"""Process checks for tests of child-process containment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, or no process at all, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


SYSTEM_PY = "/usr/bin/python3"
"""The system interpreter: the venv's may sit under a home (/root) another user cannot enter."""
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
"""Prefix an argv to run it as an unprivileged user (the tests run as root)."""


def can_run_as_nobody() -> bool:
    """Root, setpriv and the system python3 are here (tests that prove a boundary between users)."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None and os.access(SYSTEM_PY, os.X_OK)
