"""Prometheus exposition parsed back with prometheus-client's parser; textfile; loopback HTTP."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from earshot.config import MetricsConfig
from earshot.metrics import MetricsExporter, render, write_textfile
from earshot.stats import Stats

WALL0 = 1_767_000_000.0


def busy_stats() -> Stats:
    s = Stats(state_dir=None, now=0.0, now_wall=WALL0)
    for _ in range(3):
        s.wake()
    s.engagement_started(1.0, WALL0 + 1, trigger="wakeword")
    s.set_connection("connected", 1.2, WALL0 + 1.2)
    for ms in (180.0, 420.0, 2600.0):
        s.session_ready(ms)
    s.reply_started(640.0)
    s.reply_started(90.0)
    s.bargein(240.0)
    s.bargein(None)
    s.truncate()
    s.reconnect()
    s.error(TimeoutError("x"), None, WALL0 + 2)
    s.error('weird"class\\name', "server said no", WALL0 + 3)
    s.update_device("input", {"device": "hw:1", "state": "ok", "overruns": 4, "xruns": 0})
    s.update_device("output", {"device": "hw:1", "state": "ok", "xruns": 2})
    s.set_phase("SPEAKING")
    s.set_duplex("gated")
    s.set_muted(True)
    return s


def families(text: str) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, object], family: str, sample: str, **labels: str) -> float:
    fam = fams[family]
    found = [s.value for s in fam.samples if s.name == sample and s.labels == labels]  # type: ignore[attr-defined]
    assert len(found) == 1, (sample, labels, fam)
    return float(found[0])


def test_render_parses_back_consistently() -> None:
    stats = busy_stats()
    fams = families(render(stats, 61.2, WALL0 + 61.2))
    kinds = {name: f.type for name, f in fams.items()}  # type: ignore[attr-defined]
    assert kinds["earshot_wakes"] == "counter"
    assert kinds["earshot_phase"] == "gauge"
    assert kinds["earshot_wake_to_ready_seconds"] == "histogram"
    assert value(fams, "earshot_wakes", "earshot_wakes_total") == 3
    assert value(fams, "earshot_engagements", "earshot_engagements_total") == 1
    assert value(fams, "earshot_bargeins", "earshot_bargeins_total") == 2
    assert value(fams, "earshot_truncates", "earshot_truncates_total") == 1
    assert value(fams, "earshot_reconnects", "earshot_reconnects_total") == 1
    assert value(fams, "earshot_overruns", "earshot_overruns_total") == 4
    assert value(fams, "earshot_xruns", "earshot_xruns_total") == 2
    assert value(fams, "earshot_errors", "earshot_errors_total", **{"class": "TimeoutError"}) == 1
    # error names are reduced to a safe label alphabet before they are counted
    assert value(fams, "earshot_errors", "earshot_errors_total", **{"class": "weird_class_name"}) == 1
    # one-hot phase gauge
    phases = {s.labels["phase"]: s.value for s in fams["earshot_phase"].samples}  # type: ignore[attr-defined]
    assert phases["speaking"] == 1
    assert sum(phases.values()) == 1
    assert set(phases) >= {"idle", "connecting", "listening", "thinking", "speaking", "follow_up"}
    assert value(fams, "earshot_connected", "earshot_connected") == 1
    assert value(fams, "earshot_muted", "earshot_muted") == 1
    assert value(fams, "earshot_duplex_mode", "earshot_duplex_mode", mode="gated") == 1
    assert value(fams, "earshot_session_age_seconds", "earshot_session_age_seconds") == pytest.approx(60.0)
    assert value(fams, "earshot_connected_seconds_today", "earshot_connected_seconds_today") == pytest.approx(60.0)
    # histograms: cumulative, monotone, +Inf == count, sum in seconds
    for name, count, total_s in (
        ("earshot_wake_to_ready_seconds", 3, 3.2),
        ("earshot_reply_start_seconds", 2, 0.73),
        ("earshot_bargein_reaction_seconds", 1, 0.24),
    ):
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in fams[name].samples  # type: ignore[attr-defined]
            if s.name == f"{name}_bucket"
        ]
        les = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert les == sorted(les)
        assert math.isinf(les[-1])
        assert counts == sorted(counts)
        assert counts[-1] == count
        assert value(fams, name, f"{name}_count") == count
        assert value(fams, name, f"{name}_sum") == pytest.approx(total_s)
    ready = {float(s.labels["le"]): s.value for s in fams["earshot_wake_to_ready_seconds"].samples if "le" in s.labels}  # type: ignore[attr-defined]
    assert ready[0.2] == 1  # 180 ms
    assert ready[0.5] == 2  # + 420 ms
    assert ready[2.0] == 2
    assert ready[3.0] == 3  # + 2600 ms


def test_every_sample_carries_the_devices_labels() -> None:
    device = {"device": "kitchen-1", "room": 'the "big" kitchen', "site": "home"}
    fams = families(render(busy_stats(), 61.2, WALL0 + 61.2, device))
    samples = [s for f in fams.values() for s in f.samples]  # type: ignore[attr-defined]
    assert samples
    for s in samples:
        assert {k: s.labels[k] for k in device} == device, s
    assert value(fams, "earshot_phase", "earshot_phase", phase="speaking", **device) == 1
    # Without the section's labels the series are as before: no empty labels.
    plain = families(render(busy_stats(), 61.2, WALL0 + 61.2))
    assert all("device" not in s.labels for f in plain.values() for s in f.samples)  # type: ignore[attr-defined]


def test_textfile_written_atomically_0644(tmp_path: Path) -> None:
    path = tmp_path / "collector" / "earshot.prom"
    old_umask = os.umask(0o077)  # the mode must not depend on the daemon's umask
    try:
        write_textfile(path, "old 1\n")
        first_inode = path.stat().st_ino
        write_textfile(path, render(busy_stats(), 5.0, WALL0 + 5))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.stat().st_ino != first_inode  # replaced by rename, never rewritten in place
    assert "earshot_wakes" in families(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["earshot.prom"]  # no temporary left


async def test_textfile_write_failure_is_logged_once_and_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "sub"
    blocker.write_text("a file where a directory is needed")
    exporter = MetricsExporter(MetricsConfig(textfile=blocker / "earshot.prom"), busy_stats())
    with caplog.at_level(logging.WARNING, logger="earshot.metrics"):
        await exporter.write_once()
        await exporter.write_once()
    assert exporter.writes == 0
    assert len([r for r in caplog.records if "cannot write metrics" in r.getMessage()]) == 1
    assert sorted(os.listdir(tmp_path)) == ["sub"]


async def http_get(port: int, request: bytes) -> tuple[str, dict[str, str], str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return status, headers, body.decode()


async def test_exporter_serves_http_and_writes_textfile(tmp_path: Path) -> None:
    stats = busy_stats()
    textfile = tmp_path / "earshot.prom"
    clock = [100.0]
    exporter = MetricsExporter(
        MetricsConfig(textfile=textfile, interval_s=3600.0),
        stats,
        clock=lambda: clock[0],
        wall=lambda: WALL0 + 100,
        port=0,
    )
    async with exporter:
        assert exporter.server is not None
        port = exporter.server.port
        status, headers, body = await http_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        assert int(headers["content-length"]) == len(body.encode())
        fams = families(body)
        assert value(fams, "earshot_wakes", "earshot_wakes_total") == 3
        stats.wake()
        _, _, body = await http_get(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert value(families(body), "earshot_wakes", "earshot_wakes_total") == 4
        assert (await http_get(port, b"GET / HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 404 Not Found"
        assert (await http_get(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 405 Method Not Allowed"
        assert (await http_get(port, b"garbage\r\n\r\n"))[0] == "HTTP/1.1 400 Bad Request"
        # HEAD: headers only
        _, headers, body = await http_get(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert body == ""
        assert int(headers["content-length"]) > 0
    # the periodic task wrote at start, and once more on close
    assert exporter.writes == 2
    assert value(families(textfile.read_text()), "earshot_wakes", "earshot_wakes_total") == 4
