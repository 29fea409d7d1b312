"""Event hooks with real subprocesses."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from earshot.config import HooksConfig
from earshot.hooks import Hooks
from earshot.stats import Stats

PY = sys.executable

RECORD = (
    "import json, os, sys\n"
    "data = json.loads(sys.stdin.read())\n"
    "data['env_event'] = os.environ.get('EARSHOT_EVENT')\n"
    "data['env_key'] = os.environ.get('OPENAI_API_KEY')\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(json.dumps(data) + '\\n')\n"
)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def proc_state(pid: int) -> str:
    """'gone', or the state letter of a live process ('Z': a zombie awaiting its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def new_stats() -> Stats:
    return Stats(state_dir=None, now=0.0, now_wall=1_767_000_000.0)


async def test_hook_receives_event_json_on_stdin_without_the_key(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    stats = new_stats()
    config = HooksConfig(wake=(PY, "-c", RECORD, str(out)), speaking=(PY, "-c", RECORD, str(out)))
    hooks = Hooks(config, stats=stats, env={**os.environ, "OPENAI_API_KEY": "sk-test-not-for-hooks-123456"})
    hooks.fire("wake", {"phase": "idle", "score": 0.91, "engine": "template"})
    hooks.fire("thinking", {"phase": "thinking"})  # not configured: nothing runs
    await hooks.wait_idle()
    hooks.fire("speaking", {"phase": "speaking", "item": object()})  # not JSON-able: str() is used
    await hooks.wait_idle()
    got = lines(out)
    assert [g["event"] for g in got] == ["wake", "speaking"]
    assert got[0]["phase"] == "idle"
    assert got[0]["score"] == 0.91
    assert got[0]["engine"] == "template"
    assert got[0]["env_event"] == "wake"
    assert got[0]["env_key"] is None
    assert isinstance(got[1]["item"], str)
    assert int(got[1]["seq"]) > int(got[0]["seq"])  # type: ignore[call-overload]
    assert hooks.runs == 2
    assert hooks.failures == 0
    assert stats.hook_runs == 2
    await hooks.aclose()


async def test_hanging_hook_is_killed_with_its_children_and_never_blocks_the_loop(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang = ("sh", "-c", f'sleep 600 & echo $! > "{pidfile}"; cat > /dev/null; wait')
    stats = new_stats()
    hooks = Hooks(HooksConfig(listening=hang, timeout_s=1.0), stats=stats)
    hooks.fire("listening", {"phase": "listening"})
    # While the hook hangs, the loop keeps serving a timer-driven queue.
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def producer() -> None:
        for i in range(20):
            await asyncio.sleep(0.01)
            queue.put_nowait(i)

    prod = asyncio.create_task(producer())
    served = [await queue.get() for _ in range(20)]
    await prod
    assert served == list(range(20))
    assert hooks.configured("listening")
    assert stats.hook_runs == 0  # the hook has not finished: the queue was served meanwhile
    await hooks.wait_idle()
    assert hooks.failures == 1
    assert stats.hook_failures == 1
    child = int(pidfile.read_text())
    # the grandchild (same process group) was killed too: gone, or a zombie awaiting its reaper
    assert proc_state(child) in ("gone", "Z")
    await hooks.aclose()


async def test_failing_hooks_are_counted_and_warned_with_rate_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stats = new_stats()
    config = HooksConfig(
        error=(PY, "-c", "import sys; sys.stderr.write('led bus busy\\n'); sys.exit(3)"),
        offline=(str(tmp_path / "no-such-hook"),),
    )
    hooks = Hooks(config, stats=stats)
    with caplog.at_level(logging.WARNING, logger="earshot.hooks"):
        for _ in range(3):
            hooks.fire("error", {"error": "x"})
            await hooks.wait_idle()
        hooks.fire("offline", {})
        await hooks.wait_idle()
    assert hooks.failures == 4
    assert stats.hook_failures == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if m.startswith("error hook failed")]) == 1  # rate limited
    assert any("exited with status 3: led bus busy" in m for m in messages)
    assert any(m.startswith("offline hook failed: cannot run") for m in messages)
    await hooks.aclose()


async def test_one_run_per_event_kind_latest_wins(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    script = RECORD + f"if data['n'] == 1:\n    open({str(gate)!r}).read()\n"
    hooks = Hooks(HooksConfig(listening=(PY, "-c", script, str(out))))
    hooks.fire("listening", {"n": 1})
    for n in (2, 3, 4):
        hooks.fire("listening", {"n": n})

    def release() -> None:
        with open(gate, "w") as f:  # blocks until the first run is waiting on the gate
            f.write("go")

    await asyncio.to_thread(release)
    await hooks.wait_idle()
    assert [g["n"] for g in lines(out)] == [1, 4]
    assert hooks.runs == 2
    await hooks.aclose()


async def test_aclose_kills_running_hooks(tmp_path: Path) -> None:
    started = tmp_path / "started"
    os.mkfifo(started)
    hang = ("sh", "-c", f'echo $$ > "{started}"; exec sleep 600')
    hooks = Hooks(HooksConfig(idle=hang, timeout_s=60.0))
    hooks.fire("idle", {})
    pid = int(await asyncio.to_thread(started.read_text))  # the hook is running
    assert proc_state(pid) not in ("gone", "Z")
    await hooks.aclose(grace_s=0.2)
    assert proc_state(pid) in ("gone", "Z")
    hooks.fire("idle", {})  # after close: ignored
    await hooks.wait_idle()
    assert hooks.runs == 1


def test_unknown_event_is_a_bug() -> None:
    hooks = Hooks(HooksConfig())
    with pytest.raises(ValueError, match="unknown hook event"):
        hooks.fire("exploded", {})
