"""A local Realtime-API-compatible server (GA protocol) for development, demos and tests.

``earshot emulate --host 127.0.0.1 --port N`` runs it (:func:`main`); tests use :class:`Emulator`
as an async context manager. See DESIGN.md "The Realtime emulator".

The protocol core (:mod:`~earshot.emulator.protocol`) is sans I/O; :class:`Emulator` (the WebSocket
shell) and :func:`main` are imported on first use, so importing the core brings in no event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from earshot.emulator.options import (
    WAKE_WORD_REPLY,
    Cancel,
    DefaultScript,
    EmulatorOptions,
    Faults,
    FunctionCall,
    Reply,
    ResponseRecord,
    Script,
    SessionRecord,
    Truncation,
    Turn,
    Violation,
)

if TYPE_CHECKING:
    from earshot.emulator.cli import main
    from earshot.emulator.server import Emulator

__all__ = [
    "WAKE_WORD_REPLY",
    "Cancel",
    "DefaultScript",
    "Emulator",
    "EmulatorOptions",
    "Faults",
    "FunctionCall",
    "Reply",
    "ResponseRecord",
    "Script",
    "SessionRecord",
    "Truncation",
    "Turn",
    "Violation",
    "main",
]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from earshot.emulator.server import Emulator

        return Emulator
    if name == "main":
        from earshot.emulator.cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
