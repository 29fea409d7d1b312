"""The fleet's Prometheus config and alert rules: valid for promtool, tested with promtool, in step with the metrics.

``promtool`` is Debian's ``prometheus`` package (scripts/setup installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from earshot.metrics import render
from earshot.stats import Stats
from earshot.tokenservice.config import TokenServiceConfig
from earshot.tokenservice.server import TokenService

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "config" / "prometheus"
TESTS = Path(__file__).parent / "prometheus" / "alerts_test.yml"

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_scrape_config_and_the_rules_are_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("check", "rules", "earshot-alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_each_alert_fires_on_the_device_that_earns_it_and_no_other() -> None:
    done = promtool("test", "rules", str(TESTS), cwd=TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rule_tests_can_fail(tmp_path: Path) -> None:
    """A false-barge-in rule that never fires fails its test: the tests hold the rules to account."""
    rules = (PROM / "earshot-alerts.yml").read_text()
    assert ") > 0.2\n" in rules
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "earshot-alerts.yml").write_text(rules.replace(") > 0.2\n", ") > 2\n"))
    tests = TESTS.read_text().replace("../../../config/prometheus/earshot-alerts.yml", "rules/earshot-alerts.yml")
    (tmp_path / "alerts_test.yml").write_text(tests)
    done = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "EarshotFalseBargeins" in done.stdout + done.stderr


def test_every_metric_the_rules_use_is_one_earshot_exports() -> None:
    rules = (PROM / "earshot-alerts.yml").read_text()
    used = set(re.findall(r"\b(earshot_[a-z_]+)", rules))
    stats = Stats(state_dir=None, now=0.0, now_wall=1_767_000_000.0)
    stats.session_ready(300.0)
    exported = render(stats, 1.0, 1_767_000_001.0, {"device": "a"}) + TokenService(TokenServiceConfig()).metrics()
    names = set(re.findall(r"^(earshot_[a-z_]+)", exported, re.MULTILINE))
    assert used, rules
    assert used <= names, used - names
