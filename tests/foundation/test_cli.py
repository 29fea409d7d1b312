"""The earshot command's exit codes, run as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EARSHOT = ROOT / ".venv" / "bin" / "earshot"
BAD = "gate:\n  vad:\n    aggressiveness: 7\n    agressiveness: 1\nrealtime:\n  url: ws://example.com/x\n"


def earshot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = [str(EARSHOT)] if EARSHOT.exists() else [sys.executable, "-m", "earshot"]
    full_env = {**os.environ, **(env or {})}
    full_env.pop("NOTIFY_SOCKET", None)
    return subprocess.run([*exe, *args], capture_output=True, text=True, timeout=60, env=full_env)


def test_check_config_ok() -> None:
    """The shipped config checks clean: exit 0."""
    r = earshot("check-config", str(ROOT / "config" / "earshot.yaml"))
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.endswith(": ok\n")


def test_check_config_bad_is_78_one_line_per_problem(tmp_path: Path) -> None:
    """A bad config exits 78 with one line per problem on stderr, naming key and line."""
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    r = earshot("check-config", str(f))
    assert r.returncode == 78
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "gate.vad.aggressiveness: must be 0..3, got 7 (line 3)",
        "gate.vad.agressiveness: unknown key; did you mean 'aggressiveness'? (line 4)",
        "realtime.url: plain ws:// is allowed only to a loopback address (use wss://) (line 6)",
    ]


def test_check_config_missing_file_is_78(tmp_path: Path) -> None:
    """A missing file is a configuration error too."""
    r = earshot("check-config", str(tmp_path / "absent.yaml"))
    assert r.returncode == 78
    assert r.stderr == f"{tmp_path / 'absent.yaml'}: no such file\n"


def test_run_validates_before_anything_else(tmp_path: Path) -> None:
    """earshot run on a bad config exits 78 with the same lines, before touching a device."""
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    r = earshot("run", "--config", str(f))
    assert r.returncode == 78
    assert len(r.stderr.splitlines()) == 3
    assert r.stderr.splitlines()[0] == "gate.vad.aggressiveness: must be 0..3, got 7 (line 3)"


def test_python_dash_m_works() -> None:
    """python -m earshot is the same command."""
    r = subprocess.run(
        [sys.executable, "-m", "earshot", "version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0
    assert r.stdout.startswith("earshot ")


def test_version() -> None:
    """earshot version (and --version) prints the package version, then its engines and their models."""
    from earshot import __version__

    for args in (["version"], ["--version"]):
        r = earshot(*args)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"earshot {__version__}"
        text = r.stdout
        assert "wake word: microwakeword (pymicro-wakeword " in text
        assert "default model hey_jarvis" in text
        assert "hey_jarvis" in text.split("bundled models:")[1]
        assert "Apache-2.0" in text
        assert "Silero in numpy, weights silero_vad_16k.npz sha256:" in text
        assert "(MIT)" in text
        assert "echo canceller: pyaec " in text


def test_version_names_the_fallback_canceller_without_pyaec(monkeypatch: pytest.MonkeyPatch) -> None:
    """On armhf (no pyaec wheel) the report says the system's libspeexdsp runs the canceller."""
    from earshot.versions import report

    monkeypatch.setitem(sys.modules, "pyaec", None)
    assert any(line.startswith("echo canceller: the system's libspeexdsp.so.1") for line in report())


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["version", "--unknown"],
        ["--log-level", "loud", "version"],
        ["status", "--jsonx"],
    ],
)
def test_usage_errors_are_2(args: list[str]) -> None:
    """Usage errors exit 2."""
    assert earshot(*args).returncode == 2


def test_control_without_daemon_is_1(tmp_path: Path) -> None:
    """A control command with nobody listening is a runtime failure (1) that says so, no traceback."""
    sock = tmp_path / "control.sock"
    r = earshot("status", "--socket", str(sock))
    assert r.returncode == 1
    assert r.stderr.startswith("earshot status: ")
    assert str(sock) in r.stderr
    assert "Traceback" not in r.stderr


def test_control_with_bad_config_is_78(tmp_path: Path) -> None:
    """A control command whose --config is invalid exits 78."""
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    assert earshot("engage", "--config", str(f)).returncode == 78


def test_devices_lists_virtual_pcm(tmp_path: Path) -> None:
    """devices lists the PCMs of the ALSA configuration with capability and rates (real alsa-lib)."""
    import json

    conf = tmp_path / "asound.conf"
    conf.write_text('pcm.earshot_test {\n  type null\n  hint { show on description "earshot test" }\n}\n')
    r = earshot("devices", "--json", env={"ALSA_CONFIG_PATH": str(conf)})
    assert r.returncode == 0, r.stderr
    (device,) = json.loads(r.stdout)
    assert device["name"] == "earshot_test"
    assert device["capture"] is True
    assert device["playback"] is True
    assert 16000 in device["capture_rates"]
    assert 24000 in device["playback_rates"]
    r = earshot("devices", env={"ALSA_CONFIG_PATH": str(conf)})
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "earshot_test  [capture/playback]"
