"""The schema of what the device listens for, and of the profiles a wake word picks.

The wake words (several at once, each with a profile) and the stop phrase. Cross-field rules:
:func:`check_words`.
"""

# ruff: noqa: RUF009  (see schema.py: ``_f`` returns ``dataclasses.field(...)``)

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from earshot.config.fields import _f

if TYPE_CHECKING:
    from earshot.config.schema import Config

__all__ = [
    "BUILTIN_FUNCTIONS",
    "BUILTIN_FUNCTION_NAMES",
    "NAME",
    "ProfileConfig",
    "StopWordConfig",
    "WakewordConfig",
    "WakewordEntryConfig",
    "check_name",
    "check_words",
    "profile_named",
]

BUILTIN_FUNCTIONS = {
    "get_datetime": "datetime",
    "get_volume": "volume",
    "set_volume": "volume",
    "set_timer": "timers",
    "set_alarm": "timers",
    "list_timers": "timers",
    "cancel_timer": "timers",
}
"""The built-in tools' function names (``realtime/tools.py``), each with its ``realtime.builtin_tools`` group."""
BUILTIN_FUNCTION_NAMES = frozenset(BUILTIN_FUNCTIONS)
"""Function names of the built-in tools; a config tool may not take one."""
MAX_WAKE_WORDS = 8
"""Wake words listened for at once (each engine runs around every stretch of speech)."""
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a tool's, an MCP server's or a profile's name may be."""


def check_name(add: Callable[[str, str], None], path: str, name: str, seen: set[str], what: str) -> None:
    """``name`` must match :data:`NAME` and be new among ``seen`` (which it joins); a problem is added if not."""
    if not NAME.fullmatch(name):
        add(path, "must be 1-64 ASCII letters, digits, _ or -")
    elif name in seen:
        add(path, f"duplicate {what} {name!r}")
    seen.add(name)


@dataclass(frozen=True, slots=True)
class WakewordEntryConfig:
    """One more wake word, heard by the same engine at the same time as ``gate.wakeword``'s own."""

    model: str = _f("", "microwakeword/openwakeword: bundled model name or model file")
    keyphrase: str = _f("", "pocketsphinx: the phrase, in words of its dictionary")
    templates_dir: Path | None = _f(None, "template: this word's enrolled takes (earshot enroll --dir)")
    threshold: float | None = _f(None, "detection threshold; null = gate.wakeword.threshold", min=0.0, max=1e6)
    profile: str | None = _f(None, "the realtime.profiles entry its engagements use; null = realtime's own")


@dataclass(frozen=True, slots=True)
class WakewordConfig:
    """Wake-word detection."""

    engine: Literal["microwakeword", "template", "openwakeword", "pocketsphinx"] = _f(
        "microwakeword",
        "wake-word engine (microwakeword: the light default; template: your own enrolled voice, see earshot enroll)",
    )
    model: str = _f(
        "hey_jarvis",
        "microwakeword: bundled model (hey_jarvis, okay_nabu, hey_mycroft, alexa) or a model .json; "
        "openwakeword: bundled model name or path to a .tflite/.onnx model",
    )
    keyphrase: str = _f("hey jarvis", "pocketsphinx: the phrase, in words of its dictionary")
    threshold: float | None = _f(None, "detection threshold; null uses the engine's default", min=0.0, max=1e6)
    trigger_level: int = _f(1, "consecutive frames above threshold needed to fire", min=1, max=50)
    refractory_s: float = _f(2.0, "ignore further detections for this long after one", min=0.0, max=60.0)
    templates_dir: Path | None = _f(None, "template: enrolled takes; null = <state_dir>/wakeword")
    ring_s: float = _f(2.0, "audio kept so the engine sees the phrase from its start", min=0.5, max=5.0)
    profile: str | None = _f(None, "the realtime.profiles entry this word's engagements use; null = realtime's own")
    also: tuple[WakewordEntryConfig, ...] = _f(
        (), "more wake words heard at the same time, each with its own profile (see WakewordEntryConfig)"
    )


@dataclass(frozen=True, slots=True)
class StopWordConfig:
    """A stop phrase heard over the device's own sound: it ends a reply (truncated at what was heard) or a ring."""

    engine: Literal["auto", "off", "template", "pocketsphinx", "microwakeword", "openwakeword"] = _f(
        "auto",
        "auto: your enrolled takes (earshot enroll --stop) when there are some, else none; pocketsphinx: the "
        "keyphrase, any voice (extra earshot[pocketsphinx]; a Pi 4/5: too slow for a Pi 3 core); "
        "microwakeword/openwakeword: the model file",
    )
    keyphrase: str = _f("stop", "pocketsphinx: the phrase")
    model: str | None = _f(None, "microwakeword/openwakeword: a stop model (e.g. microWakeWord's stop.json)")
    threshold: float | None = _f(None, "detection threshold; null uses the engine's default", min=0.0, max=1e6)
    templates_dir: Path | None = _f(None, "template: enrolled takes; null = <state_dir>/stopword")


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """What the engagements of one wake word use instead of ``realtime``'s own: a family's shared speaker."""

    name: str = _f("", "its name, as gate.wakeword.profile gives it ([a-zA-Z0-9_-]{1,64})")
    instructions: str | None = _f(None, "system instructions; null = realtime.instructions")
    voice: str | None = _f(None, "output voice; null = realtime.voice")
    tools: tuple[str, ...] | None = _f(
        None,
        "the tools offered: function names (set_timer, a local tool's name) or MCP server labels; null = all",
    )


def profile_named(config: Config, name: str | None) -> ProfileConfig | None:
    """The profile called ``name`` (None for None or a name the config does not have)."""
    if name is None:
        return None
    return next((p for p in config.realtime.profiles if p.name == name), None)


def check_words(cfg: Config, add: Callable[[str, str], None], *, builtin_functions: Mapping[str, str]) -> None:
    """The cross-field rules of the wake words, the stop phrase and the profiles (``add(path, problem)``).

    ``builtin_functions``: the built-in tools' function names, each with its ``realtime.builtin_tools`` group.
    """
    names: set[str] = set()
    rt = cfg.realtime
    offered = {name for name, group in builtin_functions.items() if group in rt.builtin_tools}
    offered |= {tool.name for tool in rt.tools} | {server.server_label for server in rt.mcp_servers}
    for i, profile in enumerate(rt.profiles):
        check_name(add, f"realtime.profiles[{i}].name", profile.name, names, "profile name")
        for tool in profile.tools or ():
            if tool not in offered:
                add(f"realtime.profiles[{i}].tools", f"{tool!r} is no tool the config offers")
    ww = cfg.gate.wakeword
    if ww.profile is not None and ww.profile not in names:
        add("gate.wakeword.profile", f"no realtime.profiles entry is named {ww.profile!r}")
    if len(ww.also) + 1 > MAX_WAKE_WORDS:
        add("gate.wakeword.also", f"at most {MAX_WAKE_WORDS} wake words at once")
    seen = {_word_of(ww.engine, ww.model, ww.keyphrase, ww.templates_dir)}
    for i, entry in enumerate(ww.also):
        p = f"gate.wakeword.also[{i}]"
        key = {"microwakeword": "model", "openwakeword": "model", "pocketsphinx": "keyphrase"}.get(ww.engine)
        if key is not None and not getattr(entry, key).strip():
            add(f"{p}.{key}", f"required with gate.wakeword.engine {ww.engine}")
        if ww.engine == "template" and entry.templates_dir is None:
            add(f"{p}.templates_dir", "required with gate.wakeword.engine template (each word its own takes)")
        if entry.profile is not None and entry.profile not in names:
            add(f"{p}.profile", f"no realtime.profiles entry is named {entry.profile!r}")
        word = _word_of(ww.engine, entry.model, entry.keyphrase, entry.templates_dir)
        if word in seen:
            add(p, "the same wake word twice")
        seen.add(word)
    stop = cfg.gate.stop_word
    if stop.engine in ("microwakeword", "openwakeword") and not stop.model:
        add("gate.stop_word.model", f"required with gate.stop_word.engine {stop.engine} (no stop model is bundled)")
    if stop.engine == "pocketsphinx" and not stop.keyphrase.strip():
        add("gate.stop_word.keyphrase", "must not be empty")


def _word_of(engine: str, model: str, keyphrase: str, templates_dir: Path | None) -> str:
    if engine == "pocketsphinx":
        return " ".join(keyphrase.lower().split())
    if engine == "template":
        return str(templates_dir)
    return model
