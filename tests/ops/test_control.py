"""The control socket through a real Unix socket: server and client in the test."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from earshot.config import ControlConfig
from earshot.control import ControlServer, default_socket_path, format_status, request
from earshot.errors import DaemonError
from earshot.stats import Stats


class App:
    """A minimal handler: engage/cancel/mute change state that status reports."""

    def __init__(self) -> None:
        self.stats = Stats(state_dir=None, now=0.0, now_wall=1_767_000_000.0)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((cmd, args))
        if cmd == "engage":
            if self.stats.muted:
                raise DaemonError("muted: unmute first")
            self.stats.set_phase("connecting")
            return {"phase": self.stats.phase}
        if cmd == "cancel":
            self.stats.set_phase("idle")
            return {"phase": self.stats.phase}
        if cmd in ("mute", "unmute"):
            self.stats.set_muted(cmd == "mute")
            return {"muted": self.stats.muted}
        if cmd == "status":
            if args.get("boom"):
                raise RuntimeError("handler bug")
            return self.stats.snapshot(1.0, 1_767_000_001.0)
        raise AssertionError(cmd)


def short_sock(tmp_path: Path) -> Path:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be long.
    return tmp_path / "c.sock"


async def call(path: Path, command: str, **kw: Any) -> dict[str, Any]:
    return await asyncio.to_thread(request, path, command, **kw)


async def test_status_engage_mute_round_trip(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    app = App()
    async with ControlServer(path, None, app):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(path.stat().st_mode)
        status = await call(path, "status")
        assert status["ok"] is True
        assert status["phase"] == "idle"
        assert status["muted"] is False
        assert (await call(path, "engage"))["phase"] == "connecting"
        assert (await call(path, "mute"))["muted"] is True
        status = await call(path, "status")
        assert status["phase"] == "connecting"
        assert status["muted"] is True
        assert "MUTED" in format_status(status)
        with pytest.raises(DaemonError, match="unmute first"):
            await call(path, "engage")
        assert (await call(path, "unmute"))["muted"] is False
        assert (await call(path, "cancel"))["phase"] == "idle"
    assert not path.exists()
    assert [c for c, _ in app.calls] == ["status", "engage", "mute", "status", "engage", "unmute", "cancel"]


async def test_group_socket_is_0660_with_that_group(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    gid = os.getgid()
    import grp

    group = grp.getgrgid(gid).gr_name
    async with ControlServer(path, group, App()):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == gid
        assert (await call(path, "status"))["ok"] is True


async def test_unknown_group_refused(tmp_path: Path) -> None:
    with pytest.raises(DaemonError, match="no such group"):
        await ControlServer(short_sock(tmp_path), "no-such-group-earshot", App()).start()


def raw_exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines() if line.strip()]


async def test_malformed_requests_get_errors_and_server_survives(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    app = App()
    async with ControlServer(path, None, app, max_request_bytes=1024):
        answers = await asyncio.to_thread(
            raw_exchange,
            path,
            b"not json\n[1,2]\n" + b'{"cmd": "reboot"}\n{"cmd": 7}\n{"cmd": "status", "args": []}\n'
            b'{"cmd": "status", "args": {"boom": true}}\n\xff\xfe\n{"cmd": "status"}\n',
        )
        assert [a["ok"] for a in answers] == [False] * 7 + [True]
        assert "not valid JSON" in answers[0]["error"]
        assert "JSON object" in answers[1]["error"]
        assert "unknown command 'reboot'" in answers[2]["error"]
        assert "internal error" in answers[5]["error"]
        assert answers[7]["phase"] == "idle"
        # an over-long request: an error, the connection closed, the server still serves
        answers = await asyncio.to_thread(raw_exchange, path, b'{"cmd": "' + b"x" * 5000 + b'"}\n')
        assert answers == [{"ok": False, "error": "request longer than 1024 bytes"}]
        assert (await call(path, "status"))["ok"] is True


async def test_stale_socket_replaced_live_one_refused(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    async with ControlServer(path, None, App()):
        assert (await call(path, "status"))["ok"] is True
        with pytest.raises(DaemonError, match="already listening"):
            await ControlServer(path, None, App()).start()
        assert (await call(path, "status"))["ok"] is True  # the first one's socket is untouched


async def test_regular_file_at_socket_path_is_not_deleted(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    path.write_text("precious")
    with pytest.raises(DaemonError, match="not a socket"):
        await ControlServer(path, None, App()).start()
    assert path.read_text() == "precious"


def test_request_errors_without_daemon(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    with pytest.raises(DaemonError, match=r"not running \(no control socket"):
        request(path, "status")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    with pytest.raises(DaemonError, match="nothing listens"):
        request(path, "status")


CLIENT = (
    "import sys, json\n"
    "from pathlib import Path\n"
    "from earshot.control import request\n"
    "from earshot.errors import DaemonError\n"
    "try:\n"
    "    print(json.dumps(request(Path(sys.argv[1]), 'status')['phase']))\n"
    "except DaemonError as exc:\n"
    "    print(exc)\n"
)


def as_other_user(path: Path, *, groups: str) -> str:
    """Run the real client as uid 65534 with the given supplementary groups."""
    argv = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        f"--groups={groups}" if groups else "--clear-groups",
        sys.executable,
        "-c",
        CLIENT,
        str(path),
    ]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "daemon"), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch users")
async def test_socket_permissions_against_another_user() -> None:
    import grp

    run = Path(tempfile.mkdtemp(prefix="earshot-ctl-"))
    try:
        os.chmod(run, 0o755)
        path = run / "c.sock"
        async with ControlServer(path, None, App()):
            answer = await asyncio.to_thread(as_other_user, path, groups="")
            assert "permission denied" in answer
        group = grp.getgrgid(0).gr_name  # the socket's group; the other user joins it or not
        async with ControlServer(path, group, App()):
            assert "permission denied" in await asyncio.to_thread(as_other_user, path, groups="")
            assert await asyncio.to_thread(as_other_user, path, groups="0") == '"idle"'
    finally:
        shutil.rmtree(run, ignore_errors=True)


async def test_request_times_out_on_silent_daemon(tmp_path: Path) -> None:
    path = short_sock(tmp_path)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(path))
    silent.listen(1)  # accepts into the backlog, never answers
    try:
        with pytest.raises(DaemonError, match="did not answer"):
            await call(path, "status", timeout_s=0.2)
    finally:
        silent.close()


def test_default_socket_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-run"
    assert default_socket_path(ControlConfig(socket=Path("/x/y.sock")), {}) == Path("/x/y.sock")
    env = {"RUNTIME_DIRECTORY": "/run/earshot:/run/other", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert default_socket_path(ControlConfig(), env, run_dir=missing) == Path("/run/earshot/control.sock")
    assert default_socket_path(ControlConfig(), {"XDG_RUNTIME_DIR": "/run/user/1000"}, run_dir=missing) == Path(
        "/run/user/1000/earshot/control.sock"
    )
    assert (
        default_socket_path(ControlConfig(), {"XDG_RUNTIME_DIR": "/u"}, run_dir=tmp_path) == tmp_path / "control.sock"
    )
    assert default_socket_path(ControlConfig(), {}, run_dir=missing) == missing / "control.sock"


def test_format_status_shows_the_essentials() -> None:
    stats = Stats(state_dir=None, now=0.0, now_wall=1_767_000_000.0)
    stats.set_connection("connected", 10.0, 1_767_000_010.0)
    stats.set_phase("SPEAKING")
    stats.set_duplex("gated")
    stats.update_device("input", {"device": "plughw:1", "state": "ok", "overruns": 2})
    stats.wake()
    stats.error(TimeoutError("ready timeout"), None, 1_767_000_020.0)
    stats.session_ready(420.0)
    text = format_status(stats.snapshot(100.0, 1_767_000_100.0))
    assert "SPEAKING" in text
    assert "connected (session 0:01:30)" in text
    assert "gated" in text
    assert "plughw:1 [ok] (overruns 2)" in text
    assert "wakes 1" in text
    assert "TimeoutError 1" in text
    assert "TimeoutError: ready timeout" in text
    assert "1.5 min connected" in text
    assert "wake to ready 420 ms" in text
    assert format_status({}).startswith("phase:")
    listening = {"wake_words": ["microwakeword:hey_jarvis", "microwakeword:okay_nabu"], "stop_word": None}
    text = format_status({"listening": {**listening, "profile": "kids"}})
    assert "wake words:     microwakeword:hey_jarvis, microwakeword:okay_nabu; stop word: none" in text
    assert "profile:        kids" in text
    assert "profile" not in format_status({"listening": listening})
