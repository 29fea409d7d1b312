"""systemd/earshot.service verifies clean and stays hardened (systemd-analyze, offline)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "earshot.service"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/earshot/venv/bin/earshot run --config /etc/earshot/earshot.yaml\n" in text
    exe = shutil.which("true")
    assert exe is not None
    out = tmp_path / "earshot.service"
    out.write_text(text.replace("ExecStart=/opt/earshot/venv/bin/earshot ", f"ExecStart={exe} "))
    return out


def test_verify_clean(tmp_path: Path) -> None:
    """systemd-analyze verify prints nothing (it exits 0 even on unknown directives)."""
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stderr, r.stdout) == (0, "", "")


def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The verify check can fail: an unknown directive is reported on stderr."""
    unit = unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilege" in r.stderr


def exposure(unit: Path) -> float:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def test_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    """The hardening reaches an exposure of at most 1.5."""
    assert exposure(unit_copy(tmp_path)) <= 1.5


def test_exposure_measure_is_sensitive(tmp_path: Path) -> None:
    """Removing the hardening raises the exposure well above 1.5 (the check can fail)."""
    unit = unit_copy(tmp_path)
    kept = [
        line
        for line in unit.read_text().splitlines()
        if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "CapabilityBoundingSet"))
    ]
    unit.write_text("\n".join(kept) + "\n")
    assert exposure(unit) > 3.0


def test_required_directives() -> None:
    """The directives the daemon and operators rely on are present with the right values."""
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["LoadCredential"] == ["openai-api-key:/etc/earshot/openai-api-key"]
    assert d["DynamicUser"] == ["yes"]
    assert d["SupplementaryGroups"] == ["audio earshot-tools"]
    assert d["Environment"] == ["EARSHOT_TOOL_SOCKET=/run/earshot-tools.sock"]
    assert d["StateDirectory"] == ["earshot"]
    assert d["RuntimeDirectory"] == ["earshot"]
    assert float(d["WatchdogSec"][0]) > 0
    assert float(d["TimeoutStopSec"][0]) > 0


def test_keeps_sound_and_network() -> None:
    """Hardening keeps ALSA devices and outbound IPv4/IPv6."""
    d = directives()
    assert d["BindPaths"] == ["-/dev/snd"]
    assert d["DeviceAllow"] == ["char-alsa rw"]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "PrivateNetwork" not in d
    assert "IPAddressDeny" not in d


def _tool_units(tmp_path: Path) -> list[Path]:
    exe = shutil.which("true")
    assert exe is not None
    out = []
    for name in ("earshot-tools.socket", "earshot-tools@.service", "earshot.service"):
        text = (ROOT / "systemd" / name).read_text().replace("/opt/earshot/venv/bin/earshot ", f"{exe} ")
        path = tmp_path / name
        path.write_text(text)
        out.append(path)
    return out


def test_the_tool_runner_units_verify_clean(tmp_path: Path) -> None:
    units = _tool_units(tmp_path)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *[u.name for u in units]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_tools_run_as_another_user_without_the_credential() -> None:
    """The tool runner is not the daemon's user and cannot reach the key; its socket is the group's only."""
    socket_unit = (ROOT / "systemd" / "earshot-tools.socket").read_text()
    service = (ROOT / "systemd" / "earshot-tools@.service").read_text()
    assert "ListenStream=/run/earshot-tools.sock\n" in socket_unit
    assert "Accept=yes\n" in socket_unit
    assert "SocketGroup=earshot-tools\nSocketMode=0660\n" in socket_unit
    assert "DynamicUser=yes\nUser=earshot-runner\n" in service
    assert "LoadCredential" not in service
    assert "InaccessiblePaths=-/etc/earshot/openai-api-key -/run/credentials\n" in service
    assert "KillMode=control-group\n" in service
    assert "ExecStart=/opt/earshot/venv/bin/earshot tool-exec --config /etc/earshot/earshot.yaml\n" in service


TOKEN_UNIT = ROOT / "systemd" / "earshot-token-service.service"


def test_the_token_service_unit_verifies_clean_and_is_hardened(tmp_path: Path) -> None:
    text = TOKEN_UNIT.read_text()
    command = "/opt/earshot/venv/bin/earshot token-service run --config /etc/earshot/token-service.yaml"
    assert f"ExecStart={command}\n" in text
    exe = shutil.which("true")
    assert exe is not None
    unit = tmp_path / "earshot-token-service.service"
    unit.write_text(text.replace("ExecStart=/opt/earshot/venv/bin/earshot ", f"ExecStart={exe} "))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert done.stderr.strip() == "", done.stderr
    assert exposure(unit) <= 1.5
    # The key is a credential of this service only; no audio device; state kept for the devices file.
    assert "LoadCredential=openai-api-key:/etc/earshot/token-service/openai-api-key\n" in text
    assert "/dev/snd" not in text
    assert "DeviceAllow" not in text
    assert "DynamicUser=yes\n" in text
    assert "StateDirectory=earshot-token-service\n" in text
    assert "Type=notify\n" in text
    assert "RestartPreventExitStatus=78\n" in text


def test_the_token_service_command_line_of_the_unit_parses(tmp_path: Path) -> None:
    """The unit's arguments are the CLI's: a missing config file is a config error (78), not usage (2)."""
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "earshot", "token-service", "run", "--config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert "no such file" in done.stderr
