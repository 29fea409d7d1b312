"""A local Realtime-API-compatible server (GA protocol) for development, demos and tests.

``earshot emulate --host 127.0.0.1 --port N`` runs it (:func:`main`); tests use :class:`Emulator`
as an async context manager. See DESIGN.md "The Realtime emulator".
"""

from earshot.emulator.cli import main
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
