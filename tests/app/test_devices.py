"""The real daemon on real alsa-lib devices that come and go: the watchdog, STATUS= and status name them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from earshot.app import Daemon
from earshot.config import load_config
from earshot.metrics import render
from earshot.systemd import Notifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def _daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fifo: Path, notify: str) -> Daemon:
    conf = tmp_path / "asound.conf"
    conf.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.usbmic {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n'
    )
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    cfg = {
        "audio": {"backend": "alsa", "input": {"device": "usbmic"}, "output": {"device": "null"}},
        "gate": {"mode": "vad"},
        "realtime": {"url": "ws://127.0.0.1:9/v1/realtime"},
        "state_dir": str(tmp_path / "state"),
        "control": {"socket": str(tmp_path / "control.sock")},
    }
    path = tmp_path / "earshot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return Daemon(
        load_config(path),
        config_path=path,
        environ={"OPENAI_API_KEY": "sk-test-key", "HOME": str(tmp_path)},
        notifier=Notifier({"NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "1000000"}),
    )


def _feed(fifo: Path, stop: threading.Event) -> None:
    """The microphone's signal: 16 kHz silence at about real time, until stopped."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        while not stop.is_set():
            os.write(fd, bytes(3200))
            stop.wait(0.1)
    finally:
        os.close(fd)


async def test_a_missing_microphone_keeps_the_watchdog_fed_is_named_and_is_used_when_it_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    fifo = tmp_path / "mic.fifo"
    daemon = _daemon(tmp_path, monkeypatch, fifo, path)
    loop = asyncio.get_running_loop()
    running = asyncio.create_task(daemon.run())
    stop = threading.Event()
    feeder: asyncio.Future[None] | None = None
    try:
        started = loop.time()
        statuses: list[str] = []
        late_keepalive = False
        async with asyncio.timeout(30):
            # Past the watchdog's 5 s gap with no capture frame at all: keep-alives must go on.
            while not late_keepalive:
                for line in (await loop.sock_recv(sock, 4096)).decode().split("\n"):
                    if line.startswith("STATUS="):
                        statuses.append(line)
                    late_keepalive |= line == "WATCHDOG=1" and loop.time() - started > 7.0
        assert any("microphone usbmic missing since" in s for s in statuses), statuses
        devices = daemon.status()["devices"]
        assert devices["input"]["state"] == "missing"
        assert devices["input"]["missing_for_s"] >= 7.0
        assert 'earshot_device_up{role="input"} 0' in daemon_metrics(daemon)

        os.mkfifo(fifo)
        feeder = loop.run_in_executor(None, _feed, fifo, stop)
        async with asyncio.timeout(20):
            while daemon.status()["devices"]["input"]["state"] != "ok":
                await loop.sock_recv(sock, 4096)  # every device change sends a STATUS= line
        assert "missing_for_s" not in daemon.status()["devices"]["input"]
        assert "missing" not in daemon._status_text()
    finally:
        stop.set()
        daemon.stop("test over")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 10)
        if feeder is not None:
            await feeder


def daemon_metrics(daemon: Daemon) -> str:
    assert daemon.stats is not None
    return render(daemon.stats, asyncio.get_running_loop().time(), 0.0)
