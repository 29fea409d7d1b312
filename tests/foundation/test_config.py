"""Config loading: every error class names its key path and line; good files load."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from earshot.config import Config, load_config, parse_config
from earshot.errors import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text))
    return info.value.problems


def test_minimal_config_gets_every_default() -> None:
    """A file naming one key yields the defaults for everything else."""
    cfg = parse_config("gate:\n  mode: vad\n")
    assert cfg.gate.mode == "vad"
    assert dataclasses.replace(cfg, gate=Config().gate) == Config()


def test_unknown_key_with_did_you_mean_and_line() -> None:
    """A misspelt key is reported with a suggestion and its line."""
    assert problems(
        """\
        gate:
          vad:
            agressiveness: 2
        """
    ) == ["gate.vad.agressiveness: unknown key; did you mean 'aggressiveness'? (line 3)"]


def test_unknown_key_without_close_match() -> None:
    """An unrelated unknown key gets no suggestion."""
    assert problems("audio:\n  zzzqqq: 1\n") == ["audio.zzzqqq: unknown key (line 2)"]


def test_unknown_section() -> None:
    """An unknown top-level section is reported like a key."""
    assert problems("realtme:\n  model: x\n") == ["realtme: unknown key; did you mean 'realtime'? (line 1)"]


def test_range_error_names_bounds_value_and_line() -> None:
    """An out-of-range number names the bounds, the value and the line (the documented format)."""
    text = "\n" * 11 + "gate:\n  vad:\n    aggressiveness: 7\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.problems == ["gate.vad.aggressiveness: must be 0..3, got 7 (line 14)"]


def test_type_errors() -> None:
    """Wrong types are reported per key, all at once, in file order."""
    assert problems(
        """\
        audio:
          input:
            sample_rate_hz: fast
            gain_db: true
          output:
            device: 3
        gate:
          earcons:
            enabled: "yes"
          mode: sometimes
        """
    ) == [
        "audio.input.sample_rate_hz: must be an integer, got 'fast' (line 3)",
        "audio.input.gain_db: must be a number, got True (line 4)",
        "audio.output.device: must be a string, got 3 (line 6)",
        "gate.earcons.enabled: must be true or false, got 'yes' (line 9)",
        "gate.mode: must be one of wakeword, vad, manual, got 'sometimes' (line 10)",
    ]


def test_section_must_be_mapping() -> None:
    """A scalar where a section belongs is a type error."""
    assert problems("audio: alsa\n") == ["audio: must be a mapping, got 'alsa' (line 1)"]


def test_not_finite_number() -> None:
    """NaN passes no range check, so it is refused explicitly."""
    assert problems("realtime:\n  speed: .nan\n") == ["realtime.speed: must be a finite number, got nan (line 2)"]


def test_float_accepts_integer() -> None:
    """An integer is a valid number for a float key."""
    assert parse_config("realtime:\n  speed: 1\n").realtime.speed == 1.0


def test_duplicate_key() -> None:
    """A key written twice is an error (YAML would silently keep the last)."""
    assert problems("gate:\n  mode: vad\n  mode: manual\n") == [
        "gate.mode: duplicate key (the last one would win) (line 3)"
    ]


def test_invalid_yaml_reports_line_and_column() -> None:
    """Broken YAML names the line and column."""
    with pytest.raises(ConfigError) as info:
        parse_config("gate:\n  mode: [vad\n", source="x.yaml")
    (message,) = info.value.problems
    assert message.startswith("x.yaml: invalid YAML at line 3 column 1: ")


def test_invalid_yaml_tab_indentation() -> None:
    """A tab in indentation is reported at its position."""
    with pytest.raises(ConfigError) as info:
        parse_config("gate:\n\tmode: vad\n", source="t.yaml")
    assert info.value.problems[0].startswith("t.yaml: invalid YAML at line 2 column 1")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    """An empty document is an error, not a silent all-defaults config."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="e.yaml")
    assert info.value.problems == ["e.yaml: the configuration is empty"]


def test_top_level_not_a_mapping() -> None:
    """A list at the top level is refused."""
    with pytest.raises(ConfigError) as info:
        parse_config("- a\n- b\n", source="l.yaml")
    assert info.value.problems == ["l.yaml: the configuration must be a mapping of sections, got a list"]


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a config error naming it."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: no such file"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory is a config error, not a crash."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems == [f"{tmp_path}: is a directory, not a config file"]


def test_not_utf8(tmp_path: Path) -> None:
    """Binary garbage is a config error."""
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"gate:\n  mode: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"{path}: not UTF-8 text (byte 14)"]


@pytest.mark.parametrize("key", ["api_key", "openai_api_key", "key", "token", "API-KEY"])
def test_secret_key_refused(key: str) -> None:
    """A secret in the YAML is refused with where secrets belong instead."""
    (message,) = problems(f"realtime:\n  {key}: sk-abc\n")
    assert message == (
        f"realtime.{key}: unknown key; secrets never live in the config: use "
        "$CREDENTIALS_DIRECTORY/openai-api-key, $OPENAI_API_KEY or realtime.auth.key_file (line 2)"
    )
    assert "sk-abc" not in message


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("wss://api.openai.com/v1/realtime", True),
        ("ws://127.0.0.1:8765/v1/realtime", True),
        ("ws://localhost:1/x", True),
        ("ws://[::1]:1/x", True),
        ("ws://example.com/v1/realtime", False),
        ("ws://192.168.1.2/v1/realtime", False),
        ("https://api.openai.com/v1/realtime", False),
    ],
)
def test_plain_ws_only_to_loopback(url: str, ok: bool) -> None:
    """ws:// is allowed only to a loopback host; other schemes are refused."""
    text = f"realtime:\n  url: {url}\n"
    if ok:
        assert parse_config(text).realtime.url == url
    elif url.startswith("ws://"):
        assert problems(text) == [
            "realtime.url: plain ws:// is allowed only to a loopback address (use wss://) (line 2)"
        ]
    else:
        assert problems(text) == [f"realtime.url: must be a wss:// URL, got {url!r} (line 2)"]


def test_file_backend_needs_input_file() -> None:
    """backend: file without audio.input.file is an error pointing at the nearest written key."""
    assert problems("audio:\n  backend: file\n") == ["audio.input.file: required when audio.backend is file (line 1)"]


def test_every_problem_reported_at_once() -> None:
    """Several independent problems come back together, in file order."""
    found = problems(
        """\
        realtime:
          url: ws://10.0.0.1/x
        gate:
          vad:
            aggressiveness: 9
          preroll_ms: -1
        """
    )
    assert found == [
        "realtime.url: plain ws:// is allowed only to a loopback address (use wss://) (line 2)",
        "gate.vad.aggressiveness: must be 0..3, got 9 (line 5)",
        "gate.preroll_ms: must be 0..3000, got -1 (line 6)",
    ]


def test_relative_paths_resolved_to_file_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths anywhere in the file are relative to the file's directory, absolute ones kept."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "c.yaml").write_text(
        "audio:\n  backend: file\n  input:\n    file: in/mic.wav\n  output:\n    file: /abs/out.wav\n"
        "realtime:\n  auth:\n    key_file: key.txt\nstate_dir: state\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("conf/c.yaml")
    assert cfg.audio.input.file == conf_dir / "in" / "mic.wav"
    assert cfg.audio.output.file == Path("/abs/out.wav")
    assert cfg.realtime.auth.key_file == conf_dir / "key.txt"
    assert cfg.state_dir == conf_dir / "state"


def test_sections_are_frozen() -> None:
    """Nothing downstream can mutate the config."""
    cfg = parse_config("gate:\n  mode: vad\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.gate.mode = "manual"  # type: ignore[misc]


def test_list_items_are_validated() -> None:
    """Items of a list of sections are validated with their index in the path."""
    found = problems(
        """\
        realtime:
          tools:
            - name: "bad name!"
              command: []
              timeout_s: 0
        """
    )
    assert found == [
        "realtime.tools[0].name: must be 1-64 ASCII letters, digits, _ or - (line 3)",
        "realtime.tools[0].command: must be a non-empty argv list (line 4)",
        "realtime.tools[0].timeout_s: must be 0.1..300, got 0 (line 5)",
    ]
