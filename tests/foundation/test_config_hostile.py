"""Hostile configuration: a clear error with exit 78, quickly and in bounded memory, never a traceback."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from earshot.config import MAX_CONFIG_BYTES, parse_config, pattern_problem
from earshot.errors import ConfigError
from tests.foundation.test_cli import earshot

ALIAS_BOMB = (
    'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
)


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="t.yaml")
    return "\n".join(info.value.problems)


def test_an_alias_bomb_is_refused_at_once() -> None:
    """Aliases are counted once per shared node: a bomb is refused before any walk of the expanded tree."""
    started = time.monotonic()
    message = _refused(ALIAS_BOMB)
    assert time.monotonic() - started < 2.0
    assert "aliases are expanded" in message


def test_modest_aliases_are_accepted() -> None:
    """A generated config (yaml.safe_dump writes anchors for shared values) still loads."""
    cfg = parse_config("gate:\n  follow_up_s: &t 4.0\n  no_speech_timeout_s: *t\n")
    assert cfg.gate.follow_up_s == cfg.gate.no_speech_timeout_s == 4.0


def test_a_self_referring_alias_is_refused() -> None:
    assert "refers to itself" in _refused("x: &a [1, *a]\n")


def test_merge_keys_are_refused() -> None:
    assert "merge keys" in _refused("gate:\n  <<: {mode: vad}\n")


def test_deep_nesting_is_a_config_error_not_a_recursion_error() -> None:
    message = _refused("x: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nested deeper" in message


def test_a_huge_integer_is_a_config_error() -> None:
    message = _refused("gate:\n  follow_up_s: " + "9" * 5000 + "\n")
    assert "invalid YAML value" in message


def test_an_oversized_file_is_refused() -> None:
    message = _refused("# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "byte limit" in message


def test_check_config_exits_78_on_hostile_input(tmp_path: Path) -> None:
    """The command line says so in one line and exits 78 (EX_CONFIG), with no traceback."""
    for name, text in {
        "deep": "x: " + "[" * 20000 + "]" * 20000 + "\n",
        "bigint": "gate:\n  follow_up_s: " + "9" * 5000 + "\n",
        "bomb": ALIAS_BOMB,
    }.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        r = earshot("check-config", str(path))
        assert r.returncode == 78, (name, r.stderr[-500:])
        assert "Traceback" not in r.stderr


TOOL = "realtime:\n  tools:\n    - name: {name}\n      command: [/bin/true]\n      parameters: {params}\n"


def test_catastrophic_tool_patterns_are_refused_with_their_key_path() -> None:
    params = '{type: object, properties: {q: {type: string, pattern: "^(a+)+$"}}}'
    message = _refused(TOOL.format(name="lookup", params=params))
    assert "realtime.tools[0].parameters.properties.q.pattern" in message
    assert "nested quantifiers" in message
    assert re.search(r"line \d+", message)


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("^(a+)+$", False),
        ("(a|aa)*", False),
        (r"(\w+\s?)*$", False),
        (r"(a)\1", False),
        ("[", False),
        ("x" * 300, False),
        ("^[a-z]+$", True),
        (r"^\d{4}-\d{2}-\d{2}$", True),
        ("(?:ab)+", True),
        ("^(foo|bar)$", True),
    ],
)
def test_pattern_safe_subset(pattern: str, ok: bool) -> None:
    assert (pattern_problem(pattern) is None) is ok


@pytest.mark.parametrize("name", ["get_datetime", "set_volume", "wetter_heute_ä", ""])
def test_builtin_and_non_ascii_tool_names_are_refused(name: str) -> None:
    message = _refused(TOOL.format(name=repr(name), params="{type: object}"))
    assert "realtime.tools[0].name" in message
