"""sd_notify through a real bound AF_UNIX datagram socket; the watchdog health model."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from earshot.systemd import Health, Notifier, run_watchdog


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_arrive(notify_socket: tuple[socket.socket, str]) -> None:
    """READY, STATUS, WATCHDOG, STOPPING and RELOADING datagrams reach the socket as sent."""
    sock, path = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("listening for the wake word")
    assert receive(sock) == ["READY=1", "STATUS=listening for the wake word"]
    assert n.status("connecting\nto the API")
    assert receive(sock) == ["STATUS=connecting to the API"]
    assert n.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert n.stopping()
    assert receive(sock) == ["STOPPING=1"]
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = receive(sock)
    assert reloading == "RELOADING=1"
    key, _, usec = monotonic.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(usec) <= after
    n.close()


def test_abstract_namespace() -> None:
    """An @name NOTIFY_SOCKET is the abstract namespace."""
    name = f"earshot-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": f"@{name}"})
        assert n.ready()
        assert receive(sock) == ["READY=1"]
        n.close()
    finally:
        sock.close()


def test_socket_pointing_nowhere_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A NOTIFY_SOCKET that points nowhere is logged once at DEBUG and every call returns False."""
    caplog.set_level(logging.DEBUG, logger="earshot.systemd")
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG
    n.close()


def test_socket_path_is_not_a_socket(tmp_path: Path) -> None:
    """A regular file as NOTIFY_SOCKET does not raise either."""
    f = tmp_path / "file"
    f.write_text("")
    with Notifier({"NOTIFY_SOCKET": str(f)}) as n:
        assert n.ready() is False


def test_without_systemd_everything_is_a_no_op() -> None:
    """No NOTIFY_SOCKET: disabled, nothing sent, no watchdog."""
    n = Notifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog_interval_s() is None


def test_unsupported_address_is_ignored() -> None:
    """A vsock or relative address is treated as absent."""
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "x"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC is honoured only for this process."""
    assert Notifier(env).watchdog_interval_s() == expected


def test_health_needs_capture_progress() -> None:
    """Healthy while frames arrive within max_gap_s; unhealthy after a silence."""
    h = Health(now=100.0)
    assert h.healthy(104.0, max_gap_s=5.0)
    assert not h.healthy(105.5, max_gap_s=5.0)
    assert h.problem(105.5, max_gap_s=5.0) == "no capture frames for 5.5 s"
    h.capture_progress(105.5)
    assert h.healthy(110.0, max_gap_s=5.0)


def test_health_expected_gap() -> None:
    """A device knowingly being reopened counts as healthy; ending the gap restarts the window."""
    h = Health(now=0.0)
    h.expecting_gap(True)
    assert h.healthy(60.0, max_gap_s=5.0)
    h.expecting_gap(False, now=60.0)
    assert h.healthy(64.0, max_gap_s=5.0)
    assert not h.healthy(66.0, max_gap_s=5.0)


def test_health_slow_loop_that_progresses_is_healthy() -> None:
    """A loop that woke up late but still processes frames is slow, not wedged: healthy, and reported."""
    h = Health(now=0.0, max_loop_lag_s=1.0)
    h.loop_lag(3.0)
    h.capture_progress(10.0)
    assert h.healthy(10.0, max_gap_s=5.0)
    assert h.slow_s == 3.0
    h.loop_lag(0.01)
    assert h.slow_s is None
    assert h.max_lag_s == 3.0


def test_health_loop_running_without_progress_is_wedged() -> None:
    """The loop runs (the watchdog ticks) but no capture frame is processed: the keep-alive stops."""
    h = Health(now=0.0, max_loop_lag_s=1.0)
    h.loop_lag(0.0)
    assert h.problem(7.0, max_gap_s=5.0) == "no capture frames for 7.0 s"


class ObservedHealth(Health):
    """Health that reports each verdict of the watchdog task, so the test waits on facts, not time."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.verdicts: asyncio.Queue[str | None] = asyncio.Queue()

    def problem(self, now: float, max_gap_s: float) -> str | None:
        verdict = super().problem(now, max_gap_s)
        self.verdicts.put_nowait(verdict)
        return verdict


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(100))
        except BlockingIOError:
            return got


async def test_watchdog_sent_only_while_healthy(notify_socket: tuple[socket.socket, str]) -> None:
    """run_watchdog sends WATCHDOG=1 while frames arrive, withholds it when they stop, resumes after."""
    sock, path = notify_socket
    sock.setblocking(False)
    now = [100.0]  # the monotonic clock the app and the watchdog share, driven by the test
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
    assert n.watchdog_interval_s() == 0.02
    h = ObservedHealth(now=now[0])
    task = asyncio.create_task(run_watchdog(n, h, max_gap_s=5.0, clock=lambda: now[0]))
    try:
        assert await asyncio.wait_for(h.verdicts.get(), 5) is None
        assert drain(sock) == [b"WATCHDOG=1"]
        # Frames stop: 6 s pass on the capture clock with no progress.
        now[0] += 6.0
        while (await asyncio.wait_for(h.verdicts.get(), 5)) is None:
            drain(sock)
        drain(sock)
        assert await asyncio.wait_for(h.verdicts.get(), 5) == "no capture frames for 6.0 s"
        assert drain(sock) == []
        # Frames resume: keep-alives resume.
        h.capture_progress(now[0])
        while (await asyncio.wait_for(h.verdicts.get(), 5)) is not None:
            pass
        assert drain(sock) == [b"WATCHDOG=1"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n.close()
