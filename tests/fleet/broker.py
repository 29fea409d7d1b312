"""A real mosquitto on loopback for the tests: passwords, and ACLs that keep each device under its own topics."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ACL = """\
# The operator (Home Assistant): everything.
user ha
topic readwrite #

# A device (its user name is its id): its own topics, and its own Home Assistant discovery.
pattern readwrite earshot/%u/#
pattern write homeassistant/+/%u/+/config
"""


@dataclass
class Broker:
    url: str
    port: int
    passwords: dict[str, str]
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(where: Path, users: dict[str, str], port: int | None = None) -> Iterator[Broker]:
    """Run mosquitto with ``users`` (name -> password) until the block ends (on ``port``, or a free one)."""
    where.mkdir(parents=True, exist_ok=True)
    passwd = where / "passwd"
    passwd.touch(mode=0o600)
    passwd.write_text("".join(f"{name}:{password}\n" for name, password in users.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)  # hash them all
    (where / "acl").write_text(ACL)
    port = port or _free_port()
    log = where / "mosquitto.log"
    conf = where / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"acl_file {where / 'acl'}\n"
        "persistence false\n"
        "user root\n"
        "log_dest stdout\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_listening(proc, log, port)
            yield Broker(f"mqtt://127.0.0.1:{port}", port, users, log)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
    """Until mosquitto accepts a connection on ``port``, or it exits."""
    import time

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.02)  # not listening yet: poll again
            continue
        return
    raise RuntimeError(f"mosquitto did not start: {log.read_text(errors='replace')[-2000:]}")
