"""Function calling: local tools the model may call (PROTOCOL.md §5).

Two kinds, one interface (:class:`ToolRunner`):

- **Config tools** (``realtime.tools``): an argv run without a shell. The arguments, validated
  against the tool's JSON schema, arrive as one JSON object on stdin; stdout (bounded) is the
  ``function_call_output``. The child is contained by :mod:`earshot.children`: its whole tree is
  killed on timeout or cancellation, and it never sees the API key in its environment.
- **Built-ins** (``realtime.builtin_tools``): ``datetime`` → ``get_datetime``; ``volume`` →
  ``get_volume`` / ``set_volume`` through the ALSA mixer, driven by ``amixer`` (alsa-utils) so
  that only ``audio/alsa/`` imports alsaaudio; ``timers`` → the local timers and alarms
  (:mod:`earshot.realtime.timertools`).

:meth:`ToolRunner.run` never raises for a tool's failure: a bad call, a crash, a timeout or a
missing mixer becomes ``{"error": "..."}`` for the model to read and say.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from earshot import children
from earshot.config import OutputConfig, RealtimeConfig, ToolConfig
from earshot.errors import ToolError
from earshot.realtime.timertools import TIMER_TOOLS, TimerControl, run_timer_tool
from earshot.realtime.toolspec import ToolSpec

__all__ = [
    "AmixerMixer",
    "Mixer",
    "ToolRunner",
    "ToolSpec",
    "datetime_output",
    "parse_amixer_percent",
    "validate",
]

logger = logging.getLogger(__name__)

# The tool never needs these; a misbehaving tool must not be able to read the key.
_MIXER_OUTPUT_BYTES = 65536
_STDERR_KEEP_BYTES = 2048
_ERROR_DETAIL_CHARS = 300


def _error(message: str, **extra: Any) -> str:
    return json.dumps({"error": message, **extra}, ensure_ascii=False)


# ------------------------------------------------------------------------------ schema validation

_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):  # JSON: true is not a number
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and math.isfinite(value)
    return True  # an unknown type name constrains nothing


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> list[str]:
    """Check ``value`` against the JSON-schema subset an appliance tool uses.

    Supported: ``type`` (a name or a list of names), ``enum``, ``const``, ``properties``,
    ``required``, ``additionalProperties`` (false or a schema), ``minimum``/``maximum``,
    ``exclusiveMinimum``/``exclusiveMaximum``, ``minLength``/``maxLength``, ``pattern``,
    ``items``, ``minItems``/``maxItems``. Other keywords (``description``, ``title``,
    ``default``…) constrain nothing.

    Returns:
        One line per problem, each naming the path (``arguments.city: must be a string, got 3``);
        empty when ``value`` is valid.
    """
    problems: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, n) for n in names):
            wanted = " or ".join(_TYPE_NAMES.get(n, str(n)) for n in names)
            return [f"{path}: must be {wanted}, got {_short(value)}"]
    if "enum" in schema and value not in list(schema["enum"]):
        choices = ", ".join(_short(c) for c in schema["enum"])
        problems.append(f"{path}: must be one of {choices}, got {_short(value)}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: must be {_short(schema['const'])}, got {_short(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: must be >= {schema['minimum']}, got {_short(value)}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: must be <= {schema['maximum']}, got {_short(value)}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"{path}: must be > {schema['exclusiveMinimum']}, got {_short(value)}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            problems.append(f"{path}: must be < {schema['exclusiveMaximum']}, got {_short(value)}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: must be at most {schema['maxLength']} characters")
        if "pattern" in schema:
            try:
                matched = re.search(str(schema["pattern"]), value) is not None
            except re.error:
                matched = True  # a broken pattern in the config constrains nothing
            if not matched:
                problems.append(f"{path}: must match {schema['pattern']!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{path}: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, Mapping):
            for i, item in enumerate(value):
                problems += validate(item, items, f"{path}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or ():
            if name not in value:
                problems.append(f"{path}.{name}: required")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub = f"{path}.{name}"
            if name in properties:
                problems += validate(item, properties[name], sub)
            elif extra is False:
                allowed = ", ".join(properties) or "none"
                problems.append(f"{sub}: unknown property (allowed: {allowed})")
            elif isinstance(extra, Mapping):
                problems += validate(item, extra, sub)
    return problems


# ----------------------------------------------------------------------------------------- mixer


class Mixer(Protocol):
    """A playback volume control in percent."""

    async def get_percent(self) -> int:
        """The current volume, 0..100. Raises ToolError."""
        ...

    async def set_percent(self, percent: int) -> int:
        """Set the volume (clamped to 0..100); return what the mixer reports after. Raises ToolError."""
        ...


_PERCENT_RE = re.compile(r"\[(\d{1,3})%\]")


def parse_amixer_percent(text: str) -> int:
    """The volume in percent from ``amixer sget``/``sset`` output: the mean of the channels, 0..100.

    Only the channel lines are read (``  Front Left: Playback 24248 [37%] [on]``,
    ``  Mono: Playback 39 [61%] [-20.00dB] [on]``); a capture control is read the same way.

    Raises:
        ToolError: no percentage in the output (a switch-only control, or not amixer's output).
    """
    values: list[int] = []
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        if not sep or not line.startswith("  ") or head.strip() in ("Capabilities", "Limits", "Playback channels"):
            continue
        match = _PERCENT_RE.search(rest)
        if match:
            values.append(int(match.group(1)))
    if not values:
        raise ToolError("the mixer control reports no volume percentage")
    return max(0, min(100, round(sum(values) / len(values))))


class AmixerMixer:
    """The ALSA mixer through ``amixer`` (alsa-utils), run without a shell.

    Args:
        card: ``audio.output.mixer_card``: a card number (``-c``) or a control device (``-D``).
        control: ``audio.output.mixer_control``, e.g. ``Master``, ``PCM``, ``Speaker``.
        amixer: the program to run.
        timeout_s: how long one amixer call may take.
        env: environment of amixer (None: inherit).
    """

    def __init__(
        self,
        card: str = "default",
        control: str = "Master",
        *,
        amixer: str = "amixer",
        timeout_s: float = 3.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.card = card
        self.control = control
        self._amixer = amixer
        self._timeout_s = timeout_s
        self._env = dict(env) if env is not None else None

    @classmethod
    def from_config(cls, output: OutputConfig) -> AmixerMixer:
        """The mixer named by ``audio.output.mixer_card`` / ``mixer_control``."""
        return cls(output.mixer_card, output.mixer_control)

    def _argv(self, *args: str) -> list[str]:
        device = ["-c", self.card] if self.card.isdigit() else ["-D", self.card]
        # -M: the mapped (perceptual) volume, what alsamixer shows and what "50 %" means to a user.
        return [self._amixer, *device, "-M", *args]

    async def _run(self, *args: str) -> str:
        argv = self._argv(*args)
        try:
            outcome = await children.run(
                argv,
                stdin=None,
                env=children.child_env(os.environ if self._env is None else self._env),
                timeout_s=self._timeout_s,
                keep_stdout=_MIXER_OUTPUT_BYTES,
                keep_stderr=_STDERR_KEEP_BYTES,
            )
        except FileNotFoundError:
            raise ToolError(f"{self._amixer} not found (install alsa-utils)") from None
        except OSError as exc:
            raise ToolError(f"cannot run {self._amixer}: {exc.strerror or exc}") from None
        if outcome.status is None:
            raise ToolError(f"the mixer did not answer within {self._timeout_s:g} s")
        if outcome.status != 0:
            lines = [ln.strip() for ln in outcome.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
            # alsa-lib's own "ALSA lib …" noise precedes amixer's message: keep the last line.
            reason = lines[-1] if lines else f"exit status {outcome.status}"
            raise ToolError(f"mixer {self.control!r} on {self.card!r}: {reason[:_ERROR_DETAIL_CHARS]}")
        return outcome.stdout.decode("utf-8", "replace")

    async def get_percent(self) -> int:
        """The current volume of the control, 0..100.

        Raises:
            ToolError: amixer missing, failing, slow, or no volume in its answer.
        """
        return parse_amixer_percent(await self._run("sget", self.control))

    async def set_percent(self, percent: int) -> int:
        """Set the control to ``percent`` (clamped to 0..100); return the volume the mixer reports.

        Raises:
            ToolError: as :meth:`get_percent`.
        """
        value = max(0, min(100, int(percent)))
        return parse_amixer_percent(await self._run("sset", self.control, f"{value}%"))


# ------------------------------------------------------------------------------------- built-ins

_DATETIME = ToolSpec(
    "get_datetime",
    "The current local date and time, time zone and weekday. Use it for any question about the date or time.",
    {"type": "object", "properties": {}, "additionalProperties": False},
)
_GET_VOLUME = ToolSpec(
    "get_volume",
    "The speaker volume in percent (0-100).",
    {"type": "object", "properties": {}, "additionalProperties": False},
)
_SET_VOLUME = ToolSpec(
    "set_volume",
    "Set the speaker volume. Give either percent (absolute, 0-100) or change (relative, e.g. 10 for louder,"
    " -10 for quieter). Returns the new volume.",
    {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "description": "new volume, 0-100"},
            "change": {"type": "integer", "description": "relative change in percentage points"},
        },
        "additionalProperties": False,
    },
)


def _now_local() -> dt.datetime:
    return dt.datetime.now().astimezone()


def datetime_output(now: dt.datetime) -> dict[str, Any]:
    """The ``get_datetime`` answer for an aware ``now``."""
    offset = now.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return {
        "iso": now.isoformat(timespec="seconds"),
        "date": now.strftime("%Y-%m-%d"),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
        "timezone": now.tzname() or "",
        "utc_offset": f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}",
    }


# ---------------------------------------------------------------------------------------- runner


class ToolRunner:
    """Declares the tools and runs a call, turning every failure into an output string.

    Args:
        config: the ``realtime`` section (``tools``, ``builtin_tools``).
        mixer: the volume control for ``get_volume``/``set_volume`` (the app passes
            ``AmixerMixer.from_config(config.audio.output)``); None leaves the volume tools out.
        env: environment of the tool processes (None: this process's); the API key variables
            are removed from it either way.
        remote: runs a config tool elsewhere instead, ``(name, arguments_json, timeout_s) -> output``
            (:func:`earshot.toolexec.call`: another user, who cannot read the key); built-ins stay here.
        timers: the daemon's timers for the ``timers`` built-ins; None leaves them out.
    """

    def __init__(
        self,
        config: RealtimeConfig,
        *,
        mixer: Mixer | None = None,
        env: Mapping[str, str] | None = None,
        remote: Callable[[str, str, float], Awaitable[str]] | None = None,
        timers: TimerControl | None = None,
    ) -> None:
        self._tools: dict[str, ToolConfig] = {t.name: t for t in config.tools}
        self._remote = remote
        self._builtins: dict[str, ToolSpec] = {}
        if "datetime" in config.builtin_tools:
            self._builtins[_DATETIME.name] = _DATETIME
        if "volume" in config.builtin_tools:
            if mixer is None:
                logger.info("volume tools not offered: no mixer")
            else:
                self._builtins[_GET_VOLUME.name] = _GET_VOLUME
                self._builtins[_SET_VOLUME.name] = _SET_VOLUME
        if "timers" in config.builtin_tools and timers is not None:
            self._builtins.update((spec.name, spec) for spec in TIMER_TOOLS)
        self._timers = timers
        self._mixer = mixer
        self._max_processes = config.max_tool_processes
        self._slots = asyncio.Semaphore(config.max_tool_processes)
        base = os.environ if env is None else env
        self._env = children.child_env(base)

    @property
    def config_tools(self) -> frozenset[str]:
        """Names of the config tools (not the built-ins)."""
        return frozenset(self._tools)

    def specs(self) -> list[ToolSpec]:
        """Every tool offered to the model: built-ins first, then config tools in config order."""
        out = list(self._builtins.values())
        for tool in self._tools.values():
            params = tool.parameters if tool.parameters is not None else {"type": "object", "properties": {}}
            out.append(ToolSpec(tool.name, tool.description, params))
        return out

    async def run(self, name: str, arguments_json: str) -> str:
        """Run one call; return the ``function_call_output`` string.

        Never raises for the tool's sake: an unknown tool, arguments that are not JSON or break
        the schema, a crash, a non-zero exit or a timeout give ``{"error": "..."}``.
        Cancelling is safe: a running tool's process group is killed before this returns.

        Args:
            name: the function name from the call.
            arguments_json: the call's ``arguments`` (a JSON object as text; "" means ``{}``).
        """
        try:
            arguments = self._parse_arguments(arguments_json)
            if name in self._builtins:
                problems = validate(arguments, self._builtins[name].parameters)
                if problems:
                    raise ToolError("invalid arguments: " + "; ".join(problems))
                result = await self._run_builtin(name, arguments)
                return json.dumps(result, ensure_ascii=False)
            tool = self._tools.get(name)
            if tool is None:
                known = ", ".join([*self._builtins, *self._tools]) or "none"
                raise ToolError(f"unknown tool {name!r} (available: {known})")
            if tool.parameters is not None:
                problems = validate(arguments, tool.parameters)
                if problems:
                    raise ToolError("invalid arguments: " + "; ".join(problems))
            return await self._run_command(tool, arguments)
        except ToolError as exc:
            logger.warning("tool %s failed: %s", name, exc)
            return _error(str(exc))
        except Exception as exc:
            logger.exception("tool %s failed unexpectedly", name)
            return _error(f"internal error in tool {name!r}: {type(exc).__name__}")

    @staticmethod
    def _parse_arguments(arguments_json: str) -> dict[str, Any]:
        if not arguments_json.strip():
            return {}
        try:
            arguments = json.loads(arguments_json)
        except json.JSONDecodeError as exc:
            raise ToolError(f"arguments are not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValueError:  # e.g. an integer too long to convert
            raise ToolError("arguments are not valid JSON") from None
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {_short(arguments)}")
        return arguments

    async def _run_builtin(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        if name == _DATETIME.name:
            return datetime_output(_now_local())
        if self._timers is not None and name in {spec.name for spec in TIMER_TOOLS}:
            return run_timer_tool(self._timers, name, arguments)
        assert self._mixer is not None  # volume built-ins are only declared with a mixer
        if name == _GET_VOLUME.name:
            return {"volume_percent": await self._mixer.get_percent()}
        # set_volume
        if ("percent" in arguments) == ("change" in arguments):
            raise ToolError("give exactly one of percent or change")
        if "percent" in arguments:
            target = int(arguments["percent"])
        else:
            target = await self._mixer.get_percent() + int(arguments["change"])
        clamped = max(0, min(100, target))
        result: dict[str, Any] = {"volume_percent": await self._mixer.set_percent(clamped)}
        if clamped != target:
            result["note"] = f"limited to {clamped} (the range is 0-100)"
        logger.info("volume set to %d%%", result["volume_percent"])
        return result

    async def _run_command(self, tool: ToolConfig, arguments: dict[str, Any]) -> str:
        stdin = json.dumps(arguments, ensure_ascii=False).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + tool.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()  # waiting for a slot counts against the call's timeout
        except TimeoutError:
            raise ToolError(
                f"tool {tool.name!r} not run: {self._max_processes} tool processes were busy for {tool.timeout_s:g} s"
            ) from None
        try:
            if self._remote is not None:
                return await self._remote(tool.name, json.dumps(arguments), max(0.0, deadline - loop.time()))
            outcome = await children.run(
                tool.command,
                stdin=stdin,
                env=self._env,
                timeout_s=max(0.0, deadline - loop.time()),
                keep_stdout=tool.max_output_bytes,
                keep_stderr=_STDERR_KEEP_BYTES,
            )
        except FileNotFoundError:
            raise ToolError(f"tool {tool.name!r}: command not found: {tool.command[0]}") from None
        except OSError as exc:
            raise ToolError(f"tool {tool.name!r}: cannot run {tool.command[0]}: {exc.strerror or exc}") from None
        finally:
            self._slots.release()
        status, total = outcome.status, outcome.stdout_total
        if status is None:
            raise ToolError(f"tool {tool.name!r} timed out after {tool.timeout_s:g} s and was stopped")
        text = outcome.stdout.decode("utf-8", "replace")
        if status != 0:
            what = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            detail = outcome.stderr.decode("utf-8", "replace").strip()[-_ERROR_DETAIL_CHARS:]
            extra: dict[str, Any] = {"stderr": detail} if detail else {}
            if text.strip():
                extra["output"] = text[:_ERROR_DETAIL_CHARS]
            logger.warning("tool %s %s", tool.name, what)
            return _error(f"tool {tool.name!r} {what}", **extra)
        if total > tool.max_output_bytes:
            logger.info("tool %s output cut at %d of %d bytes", tool.name, tool.max_output_bytes, total)
            text += f"\n[output cut: {total - tool.max_output_bytes} more bytes]"
        logger.debug("tool %s done (%d bytes)", tool.name, total)
        return text if text.strip() else json.dumps({"ok": True})
