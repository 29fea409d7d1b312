"""Reading the configuration: YAML into the frozen schema, every problem reported at once with its line.

``load_config(path)`` returns a :class:`~earshot.config.schema.Config`; nothing downstream sees a
dict. Validation is strict and names the key path and the line of each problem::

    gate.vad.aggressiveness: must be 0..3, got 7 (line 12)
    gate.vad.agressiveness: unknown key; did you mean 'aggressiveness'? (line 13)

Hostile files are bounded before YAML expands them (size, depth, node count).
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import types
import typing
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from earshot.config.fleet import check_fleet
from earshot.config.schema import (
    Config,
)
from earshot.config.words import BUILTIN_FUNCTION_NAMES, BUILTIN_FUNCTIONS, NAME, check_name, check_words
from earshot.errors import ConfigError

__all__ = [
    "BUILTIN_FUNCTION_NAMES",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_PATTERN_CHARS",
    "Problems",
    "check_realtime_url",
    "is_loopback",
    "load_config",
    "load_document",
    "parse_config",
    "parse_document",
    "pattern_problem",
]


_SECRET_KEYS = {"api_key", "apikey", "key", "openai_api_key", "token", "secret", "password", "bearer"}
_SECRET_HINT = (
    "; secrets never live in the config: use $CREDENTIALS_DIRECTORY/openai-api-key, $OPENAI_API_KEY"
    " or realtime.auth.key_file"
)


class Problems:
    """Every problem found, each line naming its key path and, when known, its YAML line."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self._entries: list[tuple[float, str]] = []

    def add(self, path: str, message: str, *, line: int | None = None) -> None:
        """One problem at ``path`` (its line found from the path unless given)."""
        line = line or self._line(path)
        self._entries.append((line or math.inf, f"{path}: {message}" + (f" (line {line})" if line else "")))

    @property
    def items(self) -> list[str]:
        """The problems in file order (those without a line last)."""
        return [text for _, text in sorted(self._entries, key=lambda entry: entry[0])]

    def _line(self, path: str) -> int | None:
        # A cross-field problem may name a key that is absent: point at the nearest written parent.
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, path: str, meta: Mapping[str, Any], problems: Problems) -> Any:
    """Convert ``value`` to ``tp``; on a problem record it and return ``_INVALID``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path, meta, problems)
        raise TypeError(f"unsupported union {tp}")  # pragma: no cover - schema bug
    if value is None:
        problems.add(path, "must not be empty")
        return _INVALID
    if origin is Literal:
        if value not in args or type(value) is not type(args[0]):
            choices = ", ".join(str(a) for a in args)
            problems.add(path, f"must be one of {choices}, got {value!r}")
            return _INVALID
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping, got {_yaml_kind(value)}")
            return _INVALID
        return _build(tp, value, path, problems)
    if origin is tuple:
        if not isinstance(value, list):
            problems.add(path, f"must be a list, got {_yaml_kind(value)}")
            return _INVALID
        items = [_convert(args[0], v, f"{path}[{i}]", meta, problems) for i, v in enumerate(value)]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, dict):
            problems.add(path, f"must be a mapping, got {_yaml_kind(value)}")
            return _INVALID
        return _freeze(value)
    if tp is bool:
        if not isinstance(value, bool):
            problems.add(path, f"must be true or false, got {value!r}")
            return _INVALID
        return value
    if tp is int or tp is float:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if tp is float:
            ok = ok or isinstance(value, float)
        if not ok:
            problems.add(path, f"must be {_type_name(tp)}, got {value!r}")
            return _INVALID
        if isinstance(value, float) and not math.isfinite(value):
            problems.add(path, f"must be a finite number, got {value}")
            return _INVALID
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            problems.add(path, f"must be {_bounds(lo, hi)}, got {_fmt(value)}")
            return _INVALID
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            problems.add(path, f"must be a string, got {value!r}")
            return _INVALID
        return value
    if tp is Path:
        if not isinstance(value, str) or not value or "\0" in value:
            problems.add(path, f"must be a path, got {value!r}")
            return _INVALID
        try:
            return Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/..."
            problems.add(path, f"cannot expand the home directory in {value!r}")
            return _INVALID
    raise TypeError(f"unsupported type {tp} at {path}")  # pragma: no cover - schema bug


def _fmt(x: Any) -> str:
    return "" if x is None else (f"{x:g}" if isinstance(x, float) else str(x))


def _bounds(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f"{_fmt(lo)}..{_fmt(hi)}"
    return f">= {_fmt(lo)}" if lo is not None else f"<= {_fmt(hi)}"


def _yaml_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


class _Invalid:
    pass


_INVALID: Any = _Invalid()


def _build(cls: type[Any], data: Mapping[Any, Any], path: str, problems: Problems) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    prefix = f"{path}." if path else ""
    for key, value in data.items():
        key_path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in fields:
            hint = ""
            if isinstance(key, str) and key.lower().replace("-", "_") in _SECRET_KEYS:
                hint = _SECRET_HINT
            else:
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
                if close:
                    hint = f"; did you mean {close[0]!r}?"
            problems.add(key_path, f"unknown key{hint}")
            continue
        converted = _convert(hints[key], value, key_path, fields[key].metadata, problems)
        if converted is not _INVALID:
            kwargs[key] = converted
    try:
        return cls(**kwargs)
    except TypeError:  # pragma: no cover - only if a required field were added to the schema
        problems.add(path or "<root>", "incomplete section")
        return _INVALID


def _line_map(node: yaml.Node, path: str, out: dict[str, int], duplicates: list[tuple[str, int]]) -> None:
    """Record the 1-based line of every key path in a composed YAML tree, and repeated keys.

    PyYAML keeps the last of two equal keys silently; a config that says the same thing twice is
    almost always an editing mistake, so it is reported.
    """
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            sub = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if sub in seen:
                duplicates.append((sub, line))
            seen.add(sub)
            out.setdefault(sub, line)
            _line_map(value_node, sub, out, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            out.setdefault(sub, item.start_mark.line + 1)
            _line_map(item, sub, out, duplicates)


def _check_semantics(cfg: Config, problems: Problems) -> None:
    """Cross-field rules that a single field's type cannot express."""
    audio = cfg.audio
    if audio.backend == "file" and audio.input.file is None:
        problems.add("audio.input.file", "required when audio.backend is file")
    if audio.backend == "alsa" and audio.echo is not None:
        problems.add("audio.echo", "only for audio.backend: file (a real room has its own echo)")
    if audio.input.channel is not None and audio.input.channel >= audio.input.channels:
        problems.add("audio.input.channel", f"must be below audio.input.channels ({audio.input.channels})")
    url_problem = check_realtime_url(cfg.realtime.url)
    if url_problem:
        problems.add("realtime.url", url_problem)
    if cfg.realtime.auth.token_url is not None:
        tu = urllib.parse.urlsplit(cfg.realtime.auth.token_url)
        if tu.scheme not in ("https", "http") or not tu.hostname:
            problems.add("realtime.auth.token_url", "must be an https:// URL")
        elif tu.scheme == "http" and not is_loopback(tu.hostname):
            problems.add("realtime.auth.token_url", "plain http:// is allowed only to a loopback address")
    variables: dict[str, Any] = dict(cfg.realtime.prompt.variables or {})  # YAML may hold anything there
    for key, value in variables.items():
        if not isinstance(value, str):
            problems.add(f"realtime.prompt.variables.{key}", "must be a string")
    if variables and not cfg.realtime.prompt.id:
        problems.add("realtime.prompt.variables", "need realtime.prompt.id")
    labels: set[str] = set()
    for i, server in enumerate(cfg.realtime.mcp_servers):
        p = f"realtime.mcp_servers[{i}]"
        check_name(problems.add, f"{p}.server_label", server.server_label, labels, "server label")
        mu = urllib.parse.urlsplit(server.server_url)
        if mu.scheme != "https" or not mu.hostname:
            problems.add(f"{p}.server_url", "must be an https:// URL (the Realtime service connects to it)")
        if server.approve and server.require_approval != "always":
            problems.add(f"{p}.approve", "only means something with require_approval: always")
    check_words(cfg, problems.add, builtin_functions=BUILTIN_FUNCTIONS)
    check_fleet(cfg.device, cfg.mqtt, problems.add)
    bi = cfg.bargein
    if bi.gated_erle_db > bi.full_duplex_erle_db:
        problems.add("bargein.gated_erle_db", "must not exceed bargein.full_duplex_erle_db")
    names: set[str] = set()
    for i, tool in enumerate(cfg.realtime.tools):
        p = f"realtime.tools[{i}]"
        if not NAME.fullmatch(tool.name):
            problems.add(f"{p}.name", "must be 1-64 ASCII letters, digits, _ or -")
        elif tool.name in BUILTIN_FUNCTION_NAMES:
            problems.add(f"{p}.name", f"{tool.name!r} is the name of a built-in tool")
        elif tool.name in names or tool.name in cfg.realtime.builtin_tools:
            problems.add(f"{p}.name", f"duplicate tool name {tool.name!r}")
        names.add(tool.name)
        if tool.parameters is not None:
            for where, pattern in _patterns(tool.parameters, f"{p}.parameters"):
                problem = pattern_problem(pattern)
                if problem:
                    problems.add(where, problem)
        if not tool.command:
            problems.add(f"{p}.command", "must be a non-empty argv list")
        if tool.parameters is not None and tool.parameters.get("type") != "object":
            problems.add(f"{p}.parameters", "must be a JSON schema with type: object")


MAX_PATTERN_CHARS = 256
_GROUP_PREFIX = re.compile(r"\(\?(?:P<\w+>|[:=!]|<[=!])")
# A group holding a quantifier that is itself quantified: (a+)+, (a|aa)*, (\w+\s?)* backtrack
# exponentially on a near-miss, which blocked the loop for 40 s on 32 characters.
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*(?:[*+?}]|\|)(?:[^()\\]|\\.)*\)(?:[*+]|\{\d*,)")


def pattern_problem(pattern: object) -> str | None:
    """Why a tool schema's ``pattern`` is refused, or None: the safe subset is checked at config time.

    Refused: not a string, longer than :data:`MAX_PATTERN_CHARS`, not a valid regular expression,
    backreferences, and quantified groups that contain a quantifier or an alternation (nested
    quantifiers: catastrophic backtracking on the model's input).
    """
    if not isinstance(pattern, str):
        return "pattern must be a string"
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"pattern longer than {MAX_PATTERN_CHARS} characters"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid pattern: {exc}"
    if re.search(r"\\[1-9]|\(\?P=", pattern):
        return "backreferences are not accepted in patterns"
    if _NESTED_QUANTIFIER.search(_GROUP_PREFIX.sub("(", pattern)):
        return "nested quantifiers (a quantified group holding a quantifier or |) can take exponential time"
    return None


def _patterns(schema: object, path: str) -> Iterator[tuple[str, object]]:
    """Every ``pattern`` in a JSON schema (nested objects and arrays), with its key path."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            sub = f"{path}.{key}"
            if key == "pattern":
                yield sub, value
            else:
                yield from _patterns(value, sub)
    elif isinstance(schema, list | tuple):
        for i, item in enumerate(schema):
            yield from _patterns(item, f"{path}[{i}]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_realtime_url(url: str) -> str | None:
    """Return why ``url`` is not an acceptable Realtime endpoint, or None when it is.

    ``wss://`` is required, except that plain ``ws://`` is allowed to a loopback address
    (the emulator, a local proxy): the key must never cross a network in clear text.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("wss", "ws") or not parts.hostname:
        return f"must be a wss:// URL, got {url!r}"
    if parts.scheme == "ws" and not is_loopback(parts.hostname):
        return "plain ws:// is allowed only to a loopback address (use wss://)"
    return None


MAX_CONFIG_BYTES = 256 * 1024
"""Largest config file accepted (the documented example with every key is under 20 KiB)."""
MAX_CONFIG_DEPTH = 32
"""Deepest nesting of mappings and sequences accepted (the schema needs 6; tool schemas a few more)."""


def _check_shape(text: str, source: str) -> None:
    """Refuse what makes YAML costly before anything is built: size, merge keys, written depth.

    The event stream is read iteratively, so 20,000-deep nesting is refused, not a RecursionError.
    Aliases are bounded after composing (:func:`_check_expansion`).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {size} bytes is larger than the {MAX_CONFIG_BYTES}-byte limit")
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.style is None:
            raise ConfigError(f"{source}: YAML merge keys (<<) are not accepted (line {line})")
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels (line {line})")
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


MAX_CONFIG_NODES = 20_000
"""Most nodes the config may hold with its aliases expanded (the full example has about 300)."""


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse aliases that expand past :data:`MAX_CONFIG_NODES` or :data:`MAX_CONFIG_DEPTH`, or refer to themselves.

    Aliases share composed nodes, so composing a 500-byte alias bomb is cheap; every walk of the
    expanded tree (the line map, validation) is not. Sizes are counted once per shared node.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth)
    busy: set[int] = set()

    def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        line = node.start_mark.line + 1
        if key in busy:
            raise ConfigError(f"{source}: a YAML alias refers to itself (line {line})")
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels through aliases (line {line})")
        busy.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        total, deepest = 1, 0
        for child in children:
            n, d = measure(child, depth + 1)
            total += n
            deepest = max(deepest, d)
            if total > MAX_CONFIG_NODES:
                raise ConfigError(f"{source}: more than {MAX_CONFIG_NODES} values once its aliases are expanded")
        busy.discard(key)
        sizes[key] = (total, deepest + 1)
        return sizes[key]

    measure(root, 0)


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """Parse and validate YAML text.

    Raises:
        ConfigError: with every problem found, each naming its key path and line.
    """
    cfg = parse_document(text, Config, _check_semantics, source=source)
    assert isinstance(cfg, Config)
    return cfg


_Root = typing.TypeVar("_Root")


def parse_document(
    text: str,
    root: type[_Root],
    check: typing.Callable[[_Root, Problems], None] | None = None,
    *,
    source: str = "<config>",
) -> _Root:
    """Parse and validate YAML text into the dataclass ``root`` (the daemon's or another tool's).

    ``check`` adds the problems the types cannot express (``problems.add(key_path, message)``).

    Raises:
        ConfigError: with every problem found, each naming its key path and line.
    """
    try:
        _check_shape(text, source)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_expansion(node, source)
        data = yaml.safe_load(text)
    except ConfigError:
        raise
    except (ValueError, RecursionError) as exc:
        # A scalar Python refuses to build (an integer of thousands of digits, a bad timestamp).
        raise ConfigError(f"{source}: invalid YAML value: {str(exc)[:200]}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "unknown position"
        raise ConfigError(f"{source}: invalid YAML at {where}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if node is None or data is None:
        raise ConfigError(f"{source}: the configuration is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping of sections, got {_yaml_kind(data)}")
    lines: dict[str, int] = {}
    duplicates: list[tuple[str, int]] = []
    _line_map(node, "", lines, duplicates)
    problems = Problems(lines)
    for dup_path, dup_line in duplicates:
        problems.add(dup_path, "duplicate key (the last one would win)", line=dup_line)
    doc = _build(root, data, "", problems)
    if doc is not _INVALID and check is not None:
        check(doc, problems)
    if problems.items:
        raise ConfigError(problems.items)
    assert isinstance(doc, root)
    return doc


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid (every problem listed).
    """
    return load_document(path, Config, _check_semantics)


def load_document(
    path: str | Path, root: type[_Root], check: typing.Callable[[_Root, Problems], None] | None = None
) -> _Root:
    """Read and validate the YAML file at ``path`` into ``root``; relative paths are the file's.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid (every problem listed).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{p}: is a directory, not a config file") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    doc = parse_document(text, root, check, source=str(p))
    return _resolve_relative(doc, p.absolute().parent)


_D = typing.TypeVar("_D")


def _resolve_relative(section: _D, base: Path) -> _D:
    """Return ``section`` with every relative path made relative to ``base`` (the file's directory).

    Walks the whole tree, so a path key added to any section is covered without being listed here.
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]  # _D is always a config dataclass
        value = getattr(section, f.name)
        if isinstance(value, Path):
            if not value.is_absolute():
                changes[f.name] = base / value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            new = _resolve_relative(value, base)
            if new is not value:
                changes[f.name] = new
        elif isinstance(value, tuple) and any(dataclasses.is_dataclass(v) for v in value):
            changes[f.name] = tuple(_resolve_relative(v, base) for v in value)
    return dataclasses.replace(section, **changes) if changes else section  # type: ignore[type-var]
