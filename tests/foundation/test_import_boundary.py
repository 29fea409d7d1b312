"""Pure modules never import the edges: they import with alsaaudio and websockets blocked."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = [
    "earshot.config",
    "earshot.errors",
    "earshot.engage",
    "earshot.systemd",
    "earshot.logs",
    "earshot.realtime.session",
    "earshot.realtime.events",
    "earshot.realtime.policy",
    "earshot.gate.gate",
    "earshot.gate.vad",
    "earshot.audio.dsp",
    "earshot.audio.playback",
    "earshot.audio.room",
    "earshot.uplink",
    "earshot.realtime.stall",
]

BLOCKER = """
import importlib.abc, sys
BLOCKED = {"alsaaudio", "websockets"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is an edge dependency and must not be imported here")
        return None
sys.meta_path.insert(0, Block())
import importlib
importlib.import_module(sys.argv[1])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
"""


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_edges(module: str) -> None:
    """The module imports in a fresh interpreter where alsaaudio and websockets raise ImportError."""
    if not _exists(module):
        pytest.skip(f"{module} does not exist yet")
    r = subprocess.run(
        [sys.executable, "-c", BLOCKER, module],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr


def test_blocker_really_blocks() -> None:
    """The harness itself fails when a module does import an edge (so the test above can fail)."""
    r = subprocess.run([sys.executable, "-c", BLOCKER, "websockets"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "edge dependency" in r.stderr


def test_cli_check_config_needs_no_edges() -> None:
    """The CLI module (and check-config) import without ALSA or websockets."""
    r = subprocess.run([sys.executable, "-c", BLOCKER, "earshot.cli"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
