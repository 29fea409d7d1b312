"""earshot.children: real child processes that misbehave; every run returns in time and leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from earshot import children
from tests.support.procs import AS_NOBODY, SYSTEM_PY, can_run_as_nobody, running

PY = sys.executable


def _env() -> dict[str, str]:
    return children.child_env(os.environ)


async def test_output_and_status_come_back() -> None:
    out = await children.run(
        [PY, "-c", "import sys; d = sys.stdin.read(); print(d.upper()); sys.stderr.write('e' * 5000); sys.exit(3)"],
        stdin=b"hello",
        env=_env(),
        timeout_s=10,
        keep_stdout=100,
        keep_stderr=10,
    )
    assert out.status == 3
    assert out.stdout == b"HELLO\n"
    assert out.stdout_total == 6
    assert out.stderr == b"e" * 10


async def test_a_grandchild_holding_stdout_neither_delays_the_result_nor_survives(tmp_path: Path) -> None:
    """The tool answers and exits; a setsid'd grandchild keeps its stdout open (asyncio's wait() would hang)."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)
        open({str(pidfile)!r}, 'w').write(str(child.pid))
        print('answer')
        """
    )
    started = time.monotonic()
    out = await children.run([PY, "-c", script], stdin=b"", env=_env(), timeout_s=20, keep_stdout=100, keep_stderr=100)
    took = time.monotonic() - started
    assert out.status == 0
    assert out.stdout == b"answer\n"
    assert took < 10, f"the run took {took:.1f} s: it waited for the grandchild"
    assert not running(int(pidfile.read_text()))


async def test_a_hung_tool_flooding_stdout_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(
        f"""
        import os, sys
        open({str(pidfile)!r}, 'w').write(str(os.getpid()))
        while True:
            sys.stdout.write('x' * 65536)
        """
    )
    out = await children.run([PY, "-c", script], stdin=None, env=_env(), timeout_s=1.0, keep_stdout=10, keep_stderr=10)
    assert out.status is None
    assert out.stdout == b"x" * 10
    assert out.stdout_total > 65536
    assert not running(int(pidfile.read_text()))


def test_an_escaped_setsid_descendant_is_killed_in_a_subreaper(tmp_path: Path) -> None:
    """The tool's child calls setsid and the tool exits at once: the orphan comes back to the daemon and dies."""
    pidfile = tmp_path / "pid"
    tool = textwrap.dedent(
        f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open({str(pidfile)!r}, 'w').write(str(os.getpid()))
                os.close(1); os.close(2)
                time.sleep(60)
            os._exit(0)
        os.wait()
        deadline = time.monotonic() + 10
        while not os.path.exists({str(pidfile)!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
        """
    )
    daemon = textwrap.dedent(
        f"""
        import asyncio, json, os, sys
        from earshot import children
        subreaper = children.become_subreaper()
        out = asyncio.run(children.run([sys.executable, '-c', {tool!r}], stdin=None,
                          env=children.child_env(os.environ), timeout_s=20, keep_stdout=100, keep_stderr=1000))
        pid = int(open({str(pidfile)!r}).read())
        alive = os.path.exists(f'/proc/{{pid}}')
        state = open(f'/proc/{{pid}}/stat').read().rsplit(')', 1)[1].split()[0] if alive else 'gone'
        print(json.dumps({{'subreaper': subreaper, 'status': out.status, 'state': state}}))
        """
    )
    done = subprocess.run([PY, "-c", daemon], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["subreaper"] is True
    assert result["status"] == 0
    assert result["state"] == "gone", result  # killed and reaped, not a zombie


def test_child_env_drops_the_secrets() -> None:
    env = children.child_env(
        {"OPENAI_API_KEY": "sk-x", "CREDENTIALS_DIRECTORY": "/run/c", "NOTIFY_SOCKET": "/n", "PATH": "/bin"}, EXTRA="1"
    )
    assert env == {"PATH": "/bin", "EXTRA": "1"}


_SEALED_PARENT = """
import asyncio, os, sys
from earshot import children
if sys.argv[1] == "seal":
    assert children.seal_secrets()
probe = '''
import os
try:
    seen = open(f"/proc/{os.getppid()}/environ", "rb").read()
    print("read", b"sk-test-0123456789" in seen, "OPENAI_API_KEY" in os.environ)
except PermissionError:
    print("refused", False, "OPENAI_API_KEY" in os.environ)
'''
# The tool gets the parent's environment as is, as a careless spawn would: only sealing protects it.
out = asyncio.run(children.run([sys.executable, "-c", probe], stdin=None, env=dict(os.environ),
                               timeout_s=20, keep_stdout=200, keep_stderr=2000))
print(out.stdout.decode().strip(), out.stderr.decode()[-300:])
"""


@pytest.mark.skipif(not can_run_as_nobody(), reason="needs root, setpriv and the system python3")
@pytest.mark.parametrize("mode", ["seal", "plain"])
def test_a_sealed_daemon_keeps_the_key_from_a_tool_of_the_same_user(mode: str) -> None:
    """As an unprivileged user (as under systemd), a tool cannot read the sealed parent's /proc environ."""
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(children.__file__).parents[1]),
        "OPENAI_API_KEY": "sk-test-0123456789",
    }
    argv = [*AS_NOBODY, SYSTEM_PY, "-c", _SEALED_PARENT, mode]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd="/", check=True)
    verdict = done.stdout.split()
    if mode == "seal":
        assert verdict[:3] == ["refused", "False", "False"], done.stdout + done.stderr
    else:  # the control: without sealing the same tool reads the key, so the test can fail
        assert verdict[:3] == ["read", "True", "True"], done.stdout + done.stderr
