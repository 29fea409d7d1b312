"""earshot.toolexec: config tools answered through the runner socket, and a runner that cannot read the key."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from earshot import toolexec
from earshot.config import RealtimeConfig, ToolConfig
from earshot.errors import ToolError
from earshot.realtime.tools import ToolRunner
from tests.support.procs import AS_NOBODY, SYSTEM_PY, can_run_as_nobody, running

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str, script: str, timeout_s: float = 10.0) -> ToolConfig:
    return ToolConfig(name=name, description="x", command=(PY, "-c", script), timeout_s=timeout_s)


class _Runner:
    """A runner socket served in-process; ``ended`` counts connections fully handled."""

    def __init__(self, runner: ToolRunner, path: Path) -> None:
        self.runner, self.path = runner, path
        self.ended = asyncio.Queue[None]()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await toolexec.serve_connection(reader, writer, self.runner)
        finally:
            self.ended.put_nowait(None)


@contextlib.asynccontextmanager
async def _serving(tools: tuple[ToolConfig, ...], tmp_path: Path) -> AsyncIterator[_Runner]:
    served = _Runner(ToolRunner(RealtimeConfig(tools=tools, builtin_tools=())), tmp_path / "tools.sock")
    server = await asyncio.start_unix_server(served.handle, str(served.path))
    async with server:
        yield served


async def test_a_call_through_the_socket_gives_what_a_local_run_gives(tmp_path: Path) -> None:
    tool = _tool("shout", "import json, sys; print(json.load(sys.stdin)['word'].upper())")
    async with _serving((tool,), tmp_path) as served:
        remote = await toolexec.call(served.path, "shout", '{"word": "hello"}', 10.0)
        local = await ToolRunner(RealtimeConfig(tools=(tool,), builtin_tools=())).run("shout", '{"word": "hello"}')
        assert remote == local == "HELLO\n"
        # The daemon side delegates its config tools, schema checks and all, through ToolRunner(remote=...).
        runner = ToolRunner(
            RealtimeConfig(tools=(tool,), builtin_tools=()),
            remote=functools.partial(toolexec.call, served.path),
        )
        assert await runner.run("shout", '{"word": "again"}') == "AGAIN\n"


async def test_only_the_runners_own_config_tools_can_be_named(tmp_path: Path) -> None:
    async with _serving((_tool("ok", "print(1)"),), tmp_path) as served:
        out = json.loads(await toolexec.call(served.path, "rm_rf", "{}", 5.0))
        assert out == {"error": "unknown tool 'rm_rf'"}


async def test_a_cancelled_call_stops_the_tool_on_the_runner(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = f"import os, time; open({str(fifo)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    async with _serving((_tool("hang", script, timeout_s=60),), tmp_path) as served:
        call = asyncio.create_task(toolexec.call(served.path, "hang", "{}", 60.0))
        pid = int(await asyncio.to_thread(fifo.read_text))
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.wait_for(served.ended.get(), 10)
        assert not running(pid)


async def test_no_runner_is_a_tool_error(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="unusable"):
        await toolexec.call(tmp_path / "nobody-listens.sock", "x", "{}", 1.0)


@pytest.mark.skipif(not can_run_as_nobody(), reason="needs root, setpriv and the system python3")
def test_a_tool_on_the_runner_cannot_read_the_key_that_a_local_tool_can() -> None:
    """The runner as another user (as earshot-tools@.service runs it) over a real socket, against a control."""
    work = Path(tempfile.mkdtemp(prefix="earshot-toolexec-"))
    try:
        work.chmod(0o755)
        key = work / "openai-api-key"
        key.write_text("sk-test-0123456789")
        key.chmod(0o600)  # the daemon's, as LoadCredential or the key file leave it
        probe = (
            "import sys\n"
            "try:\n"
            f"    print('read' if 'sk-test' in open({str(key)!r}).read() else 'empty')\n"
            "except PermissionError:\n"
            "    print('refused')\n"
        )
        tool = {"name": "peek", "description": "x", "command": [SYSTEM_PY, "-c", probe]}
        config = work / "earshot.yaml"
        config.write_text(yaml.safe_dump({"realtime": {"tools": [tool]}}))
        config.chmod(0o644)
        site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{ROOT / 'daemon'}:{site}"}
        ours, theirs = socket.socketpair()
        with ours:
            runner = subprocess.Popen(
                [*AS_NOBODY, SYSTEM_PY, "-m", "earshot", "tool-exec", "--config", str(config)],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                env=env,
                cwd="/",
            )
            theirs.close()
            ours.sendall(json.dumps({"tool": "peek", "arguments": "{}"}).encode() + b"\n")
            answer = json.loads(ours.makefile("rb").readline())
        assert runner.wait(30) == 0
        assert answer == {"output": "refused\n"}
        # The control: the same tool run by the daemon's own user reads the key, so the test can fail.
        local = subprocess.run([SYSTEM_PY, "-c", probe], capture_output=True, text=True, check=True)
        assert local.stdout == "read\n"
    finally:
        shutil.rmtree(work)
