"""The schema's field helpers: a dataclass field with its documentation and bounds in its metadata."""

from __future__ import annotations

from dataclasses import field
from typing import Any

__all__ = ["_f", "_section"]


def _f(default: Any, doc: str, **meta: Any) -> Any:
    """A dataclass field with a default and schema metadata (``doc``, ``min``, ``max``)."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for sequence defaults")
    return field(default=default, metadata={"doc": doc, **meta})


def _section(cls: type[Any], doc: str) -> Any:
    return field(default_factory=cls, metadata={"doc": doc})
