"""Pure modules never import the edges: they import with alsaaudio and websockets blocked."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = [
    # configuration, errors, logging, service plumbing
    "earshot.config",
    "earshot.config.schema",
    "earshot.config.load",
    "earshot.config.fleet",
    # a fleet: what goes over MQTT, who may mint a secret and how often
    "earshot.mqttstate",
    "earshot.tokenservice.registry",
    "earshot.tokenservice.policy",
    "earshot.errors",
    "earshot.logs",
    "earshot.process",
    # the protocol and the session (sans-I/O)
    "earshot.realtime.events",
    "earshot.realtime.eventnames",
    "earshot.realtime.clientevents",
    "earshot.realtime.session",
    "earshot.realtime.serverevents",
    "earshot.realtime.outputs",
    "earshot.realtime.sessionconfig",
    "earshot.realtime.transcript",
    "earshot.realtime.uplinkaudio",
    "earshot.realtime.toolspec",
    "earshot.realtime.linkevents",
    "earshot.realtime.policy",
    "earshot.realtime.stall",
    # the conversation core, the engagement table, the uplink rule
    "earshot.conversation.core",
    "earshot.conversation.front",
    "earshot.conversation.replyside",
    "earshot.conversation.appliance",
    "earshot.conversation.effects",
    "earshot.engage",
    "earshot.engagetable",
    "earshot.uplink",
    "earshot.capturefeed",
    # DSP and the gate
    "earshot.audio.dsp",
    "earshot.audio.resample",
    "earshot.audio.g711",
    "earshot.audio.room",
    "earshot.audio.delay",
    "earshot.audio.ring",
    "earshot.audio.echo",
    "earshot.audio.echometer",
    "earshot.audio.coherence",
    "earshot.audio.align",
    "earshot.audio.reffifo",
    "earshot.audio.aeclib",
    "earshot.audio.earcons",
    "earshot.gate.gate",
    "earshot.gate.vad",
    "earshot.gate.silero",
    "earshot.gate.bargein",
    "earshot.gate.mfcc",
    "earshot.gate.wakeword",
    "earshot.gate.trigger",
    "earshot.gate.template",
    "earshot.gate.extras",
    # the emulator's protocol core (its shell is emulator.server)
    "earshot.emulator.protocol",
    "earshot.emulator.inputbuffer",
    "earshot.emulator.inputs",
    "earshot.emulator.replies",
    "earshot.emulator.wire",
    "earshot.emulator.voice",
    "earshot.emulator.vad",
    "earshot.emulator.options",
    # the playback ledger, the stats counters
    "earshot.audio.ledger",
    "earshot.stats",
    "earshot.timers",
    "earshot.realtime.timertools",
    "earshot.usage",
    "earshot.volume",
    "earshot.tokens",
    "earshot.summary",
]
"""Modules that decide or compute: no event loop, threads, processes, sockets or devices, not even
through a module one of their types lives in."""

FORBIDDEN = {"asyncio", "threading", "subprocess", "websockets", "alsaaudio", "socket", "selectors", "concurrent"}
"""What a pure module (or an earshot module it imports, at the top or inside a function) must not import.
Third-party libraries may use threads inside (``logging`` itself imports ``threading``): this is about
our own code."""

EDGE_ONLY = ["earshot.systemd"]
"""Not pure (the watchdog task), but must not pull in the devices or the WebSocket edge."""

BLOCKER = """
import importlib.abc, sys
BLOCKED = {"alsaaudio", "websockets"} | set(sys.argv[2:])
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


def _source(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin else None


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function (relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _own_closure(module: str) -> dict[str, set[str]]:
    """``module`` and every earshot module it reaches, each with what it imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source(name) if _exists(name) else None
        if path is None:
            continue
        seen[name] = _imports(path)
        todo += [m for m in seen[name] if m.split(".")[0] == "earshot" and _exists(m)]
    return seen


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_loop_thread_process_or_socket(module: str) -> None:
    """Read from the source: neither the module nor any earshot module it reaches imports the edges."""
    assert _exists(module), f"{module} is on the pure list but does not exist"
    bad = {
        name: sorted(m for m in imports if m.split(".")[0] in FORBIDDEN)
        for name, imports in _own_closure(module).items()
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{module} reaches {bad}"


def test_the_source_check_can_fail() -> None:
    """The harness finds an edge in a module that has one (the playback task imports asyncio)."""
    closure = _own_closure("earshot.audio.playback")
    assert "asyncio" in closure["earshot.audio.playback"]
    # Reached through another module: the tool runner starts children through earshot.children.
    assert "asyncio" in _own_closure("earshot.realtime.tools")["earshot.children"]


@pytest.mark.parametrize("module", PURE + EDGE_ONLY)
def test_pure_module_imports_without_edges(module: str) -> None:
    """The module imports in a fresh interpreter where alsaaudio and websockets raise ImportError."""
    if not _exists(module):
        pytest.skip(f"{module} does not exist yet")
    r = subprocess.run(
        [sys.executable, "-c", BLOCKER, module, *(() if module in EDGE_ONLY else ("asyncio", "subprocess"))],
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
