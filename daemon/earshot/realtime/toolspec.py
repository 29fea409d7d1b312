"""What a function tool is, as the model sees it (``session.tools[]``): pure data, no running.

It lives apart from :mod:`earshot.realtime.tools` (which runs tools through subprocesses), so that the
sans-I/O session can declare tools without importing anything that starts a process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ToolSpec"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool as declared to the model in ``session.update``.

    Attributes:
        name: the function name.
        description: what it does, for the model.
        parameters: JSON schema of the arguments (an object schema).
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_session_tool(self) -> dict[str, Any]:
        """The ``session.tools[]`` entry: ``{"type": "function", name, description, parameters}``."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": _thaw(self.parameters),
        }


def _thaw(value: Any) -> Any:
    """Plain dicts/lists from the config's frozen mappings/tuples (for JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value
