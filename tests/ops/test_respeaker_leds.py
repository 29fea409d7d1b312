"""The example LED hook: APA102 frames from event JSON, through the real hook runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from earshot.config import HooksConfig
from earshot.hooks import Hooks

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "respeaker-leds"


def run(event: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], input=json.dumps(event), capture_output=True, text=True, timeout=30
    )


def led_frames(data: bytes, leds: int) -> list[tuple[int, int, int, int]]:
    """(brightness, r, g, b) per LED, checking start and end frames."""
    assert data[:4] == b"\0\0\0\0"
    body = data[4 : 4 + 4 * leds]
    assert set(data[4 + 4 * leds :]) == {0xFF}
    assert len(data[4 + 4 * leds :]) >= 4
    out = []
    for i in range(leds):
        head, b, g, r = body[4 * i : 4 * i + 4]
        assert head & 0xE0 == 0xE0
        out.append((head & 0x1F, r, g, b))
    return out


def test_dry_run_frame_per_event() -> None:
    done = run({"event": "speaking", "phase": "speaking"}, "--dry-run", "--brightness", "5")
    assert done.returncode == 0, done.stderr
    assert led_frames(bytes.fromhex(done.stdout.strip()), 3) == [(5, 0, 200, 60)] * 3
    done = run({"event": "listening"}, "--dry-run", "--leds", "12", "--color", "listening=102030")
    assert led_frames(bytes.fromhex(done.stdout.strip()), 12) == [(8, 0x10, 0x20, 0x30)] * 12
    done = run({"event": "muted", "muted": True}, "--dry-run")
    assert led_frames(bytes.fromhex(done.stdout.strip()), 3) == [(8, 255, 0, 0), (8, 0, 0, 0), (8, 0, 0, 0)]
    done = run({"event": "muted", "muted": False}, "--dry-run")
    assert led_frames(bytes.fromhex(done.stdout.strip()), 3) == [(8, 0, 0, 0)] * 3


def test_bad_input_fails_cleanly(tmp_path: Path) -> None:
    done = run({}, "--dry-run", "--color", "listening=zz")
    assert done.returncode == 2
    assert "EVENT=RRGGBB" in done.stderr
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], input="nope", capture_output=True, text=True)
    assert done.returncode == 2
    assert "not JSON" in done.stderr
    done = run({"event": "idle"}, "--device", str(tmp_path / "missing" / "spidev"))
    assert done.returncode == 1
    assert "No such file" in done.stderr


async def test_as_a_real_hook_writing_the_device(tmp_path: Path) -> None:
    device = tmp_path / "spidev0.0"  # a plain file stands in for the SPI device node
    device.touch()
    argv = (sys.executable, str(SCRIPT), "--device", str(device))
    hooks = Hooks(HooksConfig(thinking=argv, error=argv))
    hooks.fire("thinking", {"phase": "thinking"})
    await hooks.wait_idle()
    assert led_frames(device.read_bytes(), 3) == [(8, 150, 0, 255)] * 3
    assert hooks.failures == 0
    await hooks.aclose()
