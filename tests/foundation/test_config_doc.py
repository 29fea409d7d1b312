"""config/earshot.yaml documents every schema key with its true default, and loads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from earshot.config import Config, iter_keys, load_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "config" / "earshot.yaml"
KEY_LINE = re.compile(r"^(?P<indent> *)(?:# )?(?P<indent2> *)(?P<key>[a-z_][a-z0-9_]*):(?P<value>.*)$")


def documented() -> dict[str, str | None]:
    """Map every key path written in the file (active or commented) to its value text (None for sections)."""
    found: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in DOC.read_text().splitlines():
        m = KEY_LINE.match(line)
        if not m or line.lstrip().startswith("# #") or line.lstrip().startswith("#   "):
            continue
        depth = len(m["indent"]) + len(m["indent2"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = ".".join([name for _, name in stack] + [m["key"]])
        value = m["value"].split(" #")[0].strip()
        if value:
            found.setdefault(path, value)
        else:
            found.setdefault(path, None)
            stack.append((depth, m["key"]))
    return found


def as_yaml(value: Any) -> Any:
    if isinstance(value, tuple):
        return [as_yaml(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def test_every_key_is_documented_with_its_default() -> None:
    """Each schema key appears in config/earshot.yaml, and the default written there is the real one."""
    doc = documented()
    missing = []
    wrong = []
    for path, default, _ in iter_keys():
        if path not in doc:
            missing.append(path)
        else:
            written = doc[path]
            if written is not None and yaml.safe_load(written) != as_yaml(default):
                wrong.append(f"{path}: file says {written}, schema says {default!r}")
    hint = "run scripts/config-doc to regenerate config/earshot.yaml"
    assert not missing, f"undocumented keys ({hint}): {missing}"
    assert not wrong, f"wrong defaults ({hint}): {wrong}"


def test_documented_file_loads_and_equals_defaults() -> None:
    """The shipped file validates, and (its active keys being defaults) equals the default config."""
    assert load_config(DOC) == Config()


def test_every_key_has_a_description() -> None:
    """No schema key is left without documentation."""
    assert [path for path, _, doc in iter_keys() if not doc] == []


def test_generator_is_in_step() -> None:
    """scripts/config-doc regenerates exactly the committed file."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config-doc"), "-"], capture_output=True, text=True, check=True
    )
    assert out.stdout == DOC.read_text(), "run scripts/config-doc to regenerate config/earshot.yaml"


def test_the_token_service_file_is_generated_documented_and_loads_as_the_defaults() -> None:
    from earshot.tokenservice.config import TokenServiceConfig, load_service_config

    path = ROOT / "config" / "token-service.yaml"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config-doc"), "--token-service", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == path.read_text(), "run scripts/config-doc --token-service"
    assert load_service_config(path) == TokenServiceConfig()
