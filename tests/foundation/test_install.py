"""scripts/install: dry run changes nothing; a real run into a tmp root places files safely."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "install"
SECRET = "sk-test-0123456789abcdefghij"


def install(*args: str, booted_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run scripts/install; ``booted_dir`` stands for /run/systemd/system (whether systemd runs here)."""
    env = dict(os.environ)
    if booted_dir is not None:
        env["EARSHOT_SD_BOOTED_DIR"] = str(booted_dir)
    return subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env
    )


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    f = tmp_path / "key"
    f.write_text(SECRET)
    return f


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_dry_run_prints_plan_and_changes_nothing(tmp_path: Path, key_file: Path) -> None:
    """--dry-run lists every step (unit, config, 0600 key, enable) and creates nothing."""
    target = tmp_path / "root"
    target.mkdir()
    r = install("--dry-run", "--root", str(target), "--key-file", str(key_file))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"+ install -D -m 0644 {ROOT}/systemd/earshot.service {target}/etc/systemd/system/earshot.service" in lines
    assert f"+ install -m 0644 {ROOT}/config/earshot.yaml {target}/etc/earshot/earshot.yaml" in lines
    assert f"+ install -m 0600 {key_file} {target}/etc/earshot/openai-api-key" in lines
    assert f"+ systemctl --root={target} enable earshot-tools.socket earshot.service" in lines
    for unit in ("earshot-tools.socket", "earshot-tools@.service"):
        assert f"+ install -D -m 0644 {ROOT}/systemd/{unit} {target}/etc/systemd/system/{unit}" in lines
    assert SECRET not in r.stdout + r.stderr
    assert tree(target) == []


def test_dry_run_on_the_live_system_plans_venv_and_enable_now(tmp_path: Path, key_file: Path) -> None:
    """Without --root the plan builds /opt/earshot/venv and runs systemctl enable --now."""
    r = install("--dry-run", "--key-file", str(key_file), booted_dir=tmp_path)  # systemd runs
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.endswith("-m venv /opt/earshot/venv") for line in lines)
    # No extras: the default config (microWakeWord, Silero in numpy) is the plain install.
    assert f"+ /opt/earshot/venv/bin/pip install --quiet --upgrade {ROOT}" in lines
    assert "+ systemctl enable --now earshot.service" in lines or "+ systemctl restart earshot.service" in lines
    assert lines.index("+ systemctl daemon-reload") > lines.index(
        f"+ install -D -m 0644 {ROOT}/systemd/earshot.service /etc/systemd/system/earshot.service"
    )


def test_without_systemd_as_pid_1_units_are_enabled_offline(tmp_path: Path, key_file: Path) -> None:
    """An image builder's chroot: no daemon-reload, no --now (they fail there and aborted the install
    under set -e before anything was enabled); the units are enabled offline, and so is the uninstall."""
    r = install("--dry-run", "--key-file", str(key_file), booted_dir=tmp_path / "absent")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "+ systemctl --root=/ enable earshot-tools.socket earshot.service" in lines
    assert not [line for line in lines if "daemon-reload" in line or "--now" in line or "restart" in line]
    assert "enabled offline" in r.stdout
    u = install("--dry-run", "--uninstall", booted_dir=tmp_path / "absent")
    assert u.returncode == 0, u.stderr
    assert not [line for line in u.stdout.splitlines() if "daemon-reload" in line or "--now" in line]


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_install_into_root_then_uninstall(tmp_path: Path, key_file: Path) -> None:
    """Files land with the right modes, an existing config is never overwritten, uninstall keeps config."""
    target = tmp_path / "root"
    target.mkdir()
    r = install("--root", str(target), "--key-file", str(key_file))
    assert r.returncode == 0, r.stderr
    unit = target / "etc/systemd/system/earshot.service"
    config = target / "etc/earshot/earshot.yaml"
    key = target / "etc/earshot/openai-api-key"
    assert unit.read_text() == (ROOT / "systemd/earshot.service").read_text()
    assert config.read_text() == (ROOT / "config/earshot.yaml").read_text()
    assert key.read_text() == SECRET
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    wants = target / "etc/systemd/system/multi-user.target.wants/earshot.service"
    assert os.readlink(wants) == "/etc/systemd/system/earshot.service"
    assert SECRET not in r.stdout + r.stderr

    config.write_text("gate:\n  mode: manual\n")  # the operator's edits
    r = install("--root", str(target), "--key-file", str(key_file))
    assert r.returncode == 0, r.stderr
    assert config.read_text() == "gate:\n  mode: manual\n"
    assert f"keeping the existing {config}" in r.stdout

    r = install("--uninstall", "--root", str(target))
    assert r.returncode == 0, r.stderr
    assert not unit.exists()
    assert not wants.exists()
    assert config.exists()
    assert key.exists()

    r = install("--uninstall", "--purge", "--root", str(target))
    assert r.returncode == 0, r.stderr
    assert not (target / "etc/earshot").exists()


def test_unknown_option_is_usage_error() -> None:
    """An unknown option exits 2."""
    assert install("--frobnicate").returncode == 2


def test_unreadable_key_file_fails(tmp_path: Path) -> None:
    """A --key-file that does not exist stops the install before anything happens to the key."""
    target = tmp_path / "root"
    target.mkdir()
    r = install("--root", str(target), "--key-file", str(tmp_path / "nope"))
    assert r.returncode == 1
    assert "cannot read --key-file" in r.stderr
    assert not (target / "etc/earshot/openai-api-key").exists()


def test_the_live_plan_runs_the_doctor_after_the_config_check(tmp_path: Path, key_file: Path) -> None:
    """`earshot doctor` tries each native part in a child and records it where the service reads it."""
    r = install("--dry-run", "--key-file", str(key_file), booted_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    doctor = "+ /opt/earshot/venv/bin/earshot doctor --config /etc/earshot/earshot.yaml --state-dir /var/lib/earshot"
    assert doctor in lines
    assert lines.index(doctor) > lines.index("+ /opt/earshot/venv/bin/earshot check-config /etc/earshot/earshot.yaml")
    assert "the service runs as a dynamic user in the groups audio (ALSA devices) and earshot-tools" in r.stdout


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_gpio_adds_the_gpiochip_drop_in_and_uninstall_removes_it(tmp_path: Path, key_file: Path) -> None:
    target = tmp_path / "root"
    (target / "etc").mkdir(parents=True)
    (target / "etc/group").write_text("audio:x:29:\ngpio:x:997:\n")
    r = install("--root", str(target), "--key-file", str(key_file), "--gpio")
    assert r.returncode == 0, r.stderr
    dropin = target / "etc/systemd/system/earshot.service.d/gpio.conf"
    lines = dropin.read_text().splitlines()
    assert "DeviceAllow=char-gpiochip rw" in lines
    assert "SupplementaryGroups=gpio" in lines
    assert "gpio (the button) if the system has it" in r.stdout
    assert "WARNING" not in r.stdout
    # Without a gpio group (plain Debian) the unit must not name one: it would not start.
    (target / "etc/group").write_text("audio:x:29:\n")
    r = install("--root", str(target), "--key-file", str(key_file), "--gpio")
    assert r.returncode == 0, r.stderr
    assert "SupplementaryGroups=gpio" not in dropin.read_text()
    r = install("--uninstall", "--root", str(target))
    assert r.returncode == 0, r.stderr
    assert not dropin.parent.exists()


def test_a_system_without_the_audio_group_is_warned(tmp_path: Path, key_file: Path) -> None:
    target = tmp_path / "root"
    (target / "etc").mkdir(parents=True)
    (target / "etc/group").write_text("root:x:0:\n")
    r = install("--dry-run", "--root", str(target), "--key-file", str(key_file))
    assert r.returncode == 0, r.stderr
    assert "WARNING: no group audio here" in r.stdout
