"""scripts/fleet-sim in miniature: real daemons and a simulated tail, every figure in the JSON, no key on a device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("mosquitto") is None,
    reason="prometheus and mosquitto (Debian packages; scripts/setup installs them)",
)


@pytest.mark.timeout(300)
def test_a_small_fleet_runs_green_with_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fleetsim.py"), "--devices", "2", "--simulated", "30", "--quick",
         "--json", str(out), "--keep", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    for key in ("mqtt_msgs_per_device_hour_idle", "token_p50_ms", "token_p99_ms", "series_per_device", "key_found"):
        assert key in figures, key
    assert figures["key_found"] is False, figures["key_found_in"]
    assert figures["questions_answered"] == 2
    assert figures["daemons_clean_exit"] == 2
    assert figures["token_requests"] == 30
    assert 0 < figures["token_p50_ms"] <= figures["token_p99_ms"]
    assert figures["series_per_device"] > 50  # counters, gauges and the three histograms, per device
    # The same metrics module: a simulated device has all but the audio devices' gauges.
    assert 0 < figures["series_per_device"] - figures["series_per_device_simulated"] <= 8
    assert figures["targets_up"] == figures["targets"] == 2 + 30 + 1
    assert figures["mqtt_connects_simulated"] >= 30
    # The key was really there to be found: the token service holds it, and only it.
    run = tmp_path / "run"
    key_file = run / "token-service" / "openai-api-key"
    key = key_file.read_text().strip()
    assert key.startswith("sk-fleet-")
    holders = [p for p in run.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    assert all("token-service" in str(p) or "emulator" in str(p) for p in holders), holders
