"""The real daemon on real alsa-lib devices that come and go: the watchdog, STATUS= and status name them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from numpy.typing import NDArray

from earshot.app import Daemon
from earshot.config import load_config
from earshot.emulator import Emulator, EmulatorOptions
from earshot.metrics import render
from earshot.systemd import Notifier
from tests.resilience.harness import watching_logs
from tests.support.speech import concat, read_wav, silence, synth


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def _conf(path: Path, fifo: Path, speaker: Path | None = None) -> None:
    """The room's ALSA config: the microphone (a FIFO) and, once it is plugged in, the speaker (a file)."""
    body = f'pcm.usbmic {{ type file slave.pcm "null" file "/dev/null" infile "{fifo}" format "raw" }}\n'
    if speaker is not None:
        body += f'pcm.usbspk {{ type file slave.pcm "null" file "{speaker}" format "raw" }}\n'
    old = path.stat().st_mtime if path.exists() else 0.0
    path.write_text("</usr/share/alsa/alsa.conf>\n" + body)
    os.utime(path, (old + 10, old + 10))  # alsa-lib rereads a config whose mtime (in seconds) changed


def _daemon(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fifo: Path,
    notify: str,
    *,
    output: str = "null",
    url: str = "ws://127.0.0.1:9/v1/realtime",
    gate: dict[str, Any] | None = None,
) -> Daemon:
    conf = tmp_path / "asound.conf"
    _conf(conf, fifo)
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    cfg = {
        "audio": {"backend": "alsa", "input": {"device": "usbmic"}, "output": {"device": output}},
        "gate": gate or {"mode": "vad"},
        "realtime": {"url": url, "idle_close_s": 0.0},
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


def _feed(fifo: Path, stop: threading.Event, pcm: NDArray[np.int16] | None = None) -> None:
    """The microphone's signal at about real time: ``pcm`` (16 kHz), then silence until stopped."""
    # Never blocks, so that the test always ends: O_RDWR opens without a reader, O_NONBLOCK writes
    # without one reading (a full pipe keeps the piece for the next round).
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    data = pcm.astype("<i2").tobytes() if pcm is not None else b""
    piece = b""
    try:
        while not stop.is_set():
            if not piece:
                piece, data = (data[:3200], data[3200:]) if data else (bytes(3200), b"")
            with contextlib.suppress(BlockingIOError):
                os.write(fd, piece.ljust(3200, b"\0"))
                piece = b""
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
        daemon.notifier.close()
        if feeder is not None:
            await feeder


def daemon_metrics(daemon: Daemon) -> str:
    assert daemon.stats is not None
    return render(daemon.stats, asyncio.get_running_loop().time(), 0.0)


async def test_a_reply_lost_to_a_missing_speaker_is_followed_by_the_offline_earcon_when_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notify_socket: tuple[socket.socket, str]
) -> None:
    """The speaker is unplugged through a whole exchange; once it is back the user hears that something was lost."""
    _sock, path = notify_socket
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    spoken = tmp_path / "speaker.raw"
    question, _ = read_wav(synth("what is the capital of france"))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        gate = {"mode": "vad", "follow_up_s": 1.0}  # earcons on, as installed
        daemon = _daemon(tmp_path, monkeypatch, fifo, path, output="usbspk", url=emu.url, gate=gate)
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        feeder = loop.run_in_executor(None, _feed, fifo, stop, concat(silence(1.0), question))
        with watching_logs() as logs:
            running = asyncio.create_task(daemon.run())
            try:
                await logs.wait_for("engagement ended", within_s=60)
                assert emu.sessions
                assert emu.sessions[0].responses, "no reply was made"
                assert not spoken.exists()
                _conf(tmp_path / "asound.conf", fifo, speaker=spoken)  # the speaker is plugged back in
                await logs.wait_for("speaker back", within_s=20)
                # The earcon is queued as "speaker back" is logged: the next played-out playback is it.
                await logs.wait_for("playback finished", times=logs.count("playback finished") + 1, within_s=20)
            finally:
                stop.set()
                daemon.stop("test over")
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(running, 10)
                daemon.notifier.close()
                await feeder
    assert daemon.status()["devices"]["output"]["state"] in ("ok", "closed")
    played = np.frombuffer(spoken.read_bytes(), dtype="<i2") if spoken.exists() else np.zeros(0, np.int16)
    assert np.abs(played.astype(np.int32)).max(initial=0) > 1000, "the offline earcon was not played"
