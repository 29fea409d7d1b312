"""realtime/tools.py: schema validation, real tool subprocesses, built-ins, and the volume tool on a real mixer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from earshot.config import OutputConfig, RealtimeConfig, ToolConfig
from earshot.errors import ToolError
from earshot.realtime.tools import (
    AmixerMixer,
    ToolRunner,
    ToolSpec,
    datetime_output,
    parse_amixer_percent,
    validate,
)
from tests.support.procs import running

PY = sys.executable

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"type": "string", "enum": ["metric", "imperial"]},
        "detailed": {"type": "boolean"},
        "hours": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def _tool(name: str, script: str, *, timeout_s: float = 5.0, max_output_bytes: int = 4096, **kw: Any) -> ToolConfig:
    return ToolConfig(
        name=name,
        description=f"test tool {name}",
        command=(PY, "-c", script),
        timeout_s=timeout_s,
        max_output_bytes=max_output_bytes,
        **kw,
    )


def _runner(*tools: ToolConfig, builtins: tuple[Any, ...] = (), **kw: Any) -> ToolRunner:
    return ToolRunner(RealtimeConfig(tools=tools, builtin_tools=builtins), **kw)


# ------------------------------------------------------------------------------------ validation


def test_valid_arguments_have_no_problems() -> None:
    args = {"city": "Oslo", "days": 3, "units": "metric", "detailed": True, "hours": [1, 2.5]}
    assert validate(args, WEATHER_SCHEMA) == []
    assert validate({"city": "Oslo", "days": 3.0}, WEATHER_SCHEMA) == []  # 3.0 is an integer in JSON schema


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({}, "arguments.city: required"),
        ({"city": 3}, "arguments.city: must be a string, got 3"),
        ({"city": ""}, "arguments.city: must be at least 1 characters"),
        ({"city": "x", "days": 9}, "arguments.days: must be <= 7, got 9"),
        ({"city": "x", "days": 0}, "arguments.days: must be >= 1, got 0"),
        ({"city": "x", "days": 2.5}, "arguments.days: must be an integer, got 2.5"),
        ({"city": "x", "days": True}, "arguments.days: must be an integer, got true"),
        ({"city": "x", "units": "kelvin"}, 'arguments.units: must be one of "metric", "imperial", got "kelvin"'),
        ({"city": "x", "detailed": "yes"}, 'arguments.detailed: must be true or false, got "yes"'),
        ({"city": "x", "hours": [1, "2"]}, 'arguments.hours[1]: must be a number, got "2"'),
        ({"city": "x", "hours": [1, 2, 3, 4]}, "arguments.hours: must have at most 3 items"),
        ({"city": "x", "colour": "red"}, "arguments.colour: unknown property (allowed: city, days, units"),
        ([1], "arguments: must be an object, got [1]"),
    ],
)
def test_schema_violations_name_the_path(args: Any, expected: str) -> None:
    problems = validate(args, WEATHER_SCHEMA)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported() -> None:
    problems = validate({"days": 99, "units": "x", "extra": 1}, WEATHER_SCHEMA)
    assert len(problems) == 4, problems


def test_type_lists_and_nested_objects() -> None:
    schema = {"type": "object", "properties": {"when": {"type": ["string", "null"]}, "at": {"type": "object"}}}
    assert validate({"when": None, "at": {}}, schema) == []
    assert validate({"when": 1}, schema) == ["arguments.when: must be a string or null, got 1"]


def test_tool_spec_serialises_for_the_session() -> None:
    spec = ToolSpec("weather", "the weather", WEATHER_SCHEMA)
    tool = spec.to_session_tool()
    assert tool["type"] == "function"
    assert tool["name"] == "weather"
    assert json.loads(json.dumps(tool))["parameters"] == WEATHER_SCHEMA


# ------------------------------------------------------------------------------------ config tools

ECHO_STDIN = "import sys, json; a = json.load(sys.stdin); print(json.dumps({'got': a}))"


async def test_arguments_arrive_as_json_on_stdin() -> None:
    runner = _runner(_tool("weather", ECHO_STDIN, parameters=WEATHER_SCHEMA))
    out = await runner.run("weather", '{"city": "Zürich", "days": 2}')
    assert json.loads(out) == {"got": {"city": "Zürich", "days": 2}}


async def test_specs_list_config_tools_with_their_schema() -> None:
    runner = _runner(_tool("weather", ECHO_STDIN, parameters=WEATHER_SCHEMA), _tool("noargs", "print(1)"))
    specs = {s.name: s for s in runner.specs()}
    assert set(specs) == {"weather", "noargs"}
    assert specs["weather"].to_session_tool()["parameters"] == WEATHER_SCHEMA
    assert specs["noargs"].parameters["type"] == "object"


async def test_empty_arguments_mean_an_empty_object() -> None:
    runner = _runner(_tool("echo", ECHO_STDIN))
    assert json.loads(await runner.run("echo", "")) == {"got": {}}


async def test_schema_violation_is_an_error_output_and_the_tool_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'w').write('x')"
    runner = _runner(_tool("weather", script, parameters=WEATHER_SCHEMA))
    out = json.loads(await runner.run("weather", '{"days": 12}'))
    assert "arguments.city: required" in out["error"]
    assert "arguments.days: must be <= 7" in out["error"]
    assert not marker.exists()


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"', "NaN-ish{"])
async def test_bad_json_arguments(arguments: str) -> None:
    runner = _runner(_tool("echo", ECHO_STDIN))
    out = json.loads(await runner.run("echo", arguments))
    assert "arguments" in out["error"]


async def test_unknown_tool() -> None:
    runner = _runner(_tool("echo", ECHO_STDIN), builtins=("datetime",))
    out = json.loads(await runner.run("launch_rockets", "{}"))
    assert out["error"] == "unknown tool 'launch_rockets' (available: get_datetime, echo)"


async def test_nonzero_exit_reports_status_and_stderr() -> None:
    script = "import sys; print('partial'); sys.stderr.write('city not found\\n'); sys.exit(3)"
    out = json.loads(await _runner(_tool("failing", script)).run("failing", "{}"))
    assert out["error"] == "tool 'failing' exited with status 3"
    assert out["stderr"] == "city not found"
    assert out["output"].strip() == "partial"


async def test_missing_command() -> None:
    tool = ToolConfig(name="ghost", description="x", command=("/nonexistent/tool",))
    out = json.loads(await _runner(tool).run("ghost", "{}"))
    assert "command not found" in out["error"]


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A tool that hangs (with a grandchild) is killed on timeout; no process survives."""
    pidfile = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    runner = _runner(_tool("hang", script, timeout_s=1.0))
    out = json.loads(await runner.run("hang", "{}"))
    assert out["error"] == "tool 'hang' timed out after 1 s and was stopped"
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert not running(pid)


async def test_cancelling_a_run_kills_the_tool(tmp_path: Path) -> None:
    fifo = tmp_path / "pid"
    os.mkfifo(fifo)
    script = f"import os, time; open({str(fifo)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    runner = _runner(_tool("hang", script, timeout_s=60))
    task = asyncio.create_task(runner.run("hang", "{}"))
    pid = int(await asyncio.to_thread(fifo.read_text))  # returns once the tool is running
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not running(pid)


async def test_big_output_is_cut() -> None:
    script = "import sys; sys.stdout.write('a' * 1_000_000)"
    out = await _runner(_tool("chatty", script, max_output_bytes=100)).run("chatty", "{}")
    assert out.startswith("a" * 100)
    assert out[100:] == "\n[output cut: 999900 more bytes]"


async def test_a_tool_that_ignores_stdin_still_works() -> None:
    script = "import sys; sys.stdin.close(); print('ok')"
    big = json.dumps({"blob": "x" * 500_000})
    assert (await _runner(_tool("deaf", script)).run("deaf", big)).strip() == "ok"


async def test_empty_output_is_reported_as_ok() -> None:
    assert json.loads(await _runner(_tool("quiet", "pass")).run("quiet", "{}")) == {"ok": True}


async def test_the_api_key_is_not_passed_to_tools() -> None:
    script = "import os, json; print(json.dumps(sorted(k for k in os.environ if k not in ('PATH', 'LC_CTYPE'))))"
    env = {
        "OPENAI_API_KEY": "sk-secret",
        "CREDENTIALS_DIRECTORY": "/run/creds",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "WATCHDOG_PID": "1",
        "PATH": os.environ["PATH"],
    }
    out = await _runner(_tool("env", script), env=env).run("env", "{}")
    assert json.loads(out) == []


async def test_calls_run_concurrently(tmp_path: Path) -> None:
    """Two calls at once run side by side: each sees the other running (in series the first would give up)."""
    script = (
        "import json, os, sys, time\n"
        "d = sys.argv[1]\n"
        "me = json.load(sys.stdin)['me']\n"
        "open(os.path.join(d, me), 'w').close()\n"
        "other = 'b' if me == 'a' else 'a'\n"
        "deadline = time.monotonic() + 10\n"
        "while not os.path.exists(os.path.join(d, other)) and time.monotonic() < deadline: time.sleep(0.01)\n"
        "print(os.path.exists(os.path.join(d, other)))\n"
    )
    tool = ToolConfig(name="pair", description="x", command=(PY, "-c", script, str(tmp_path)), timeout_s=30)
    runner = _runner(tool)
    outs = await asyncio.gather(runner.run("pair", '{"me": "a"}'), runner.run("pair", '{"me": "b"}'))
    assert [o.strip() for o in outs] == ["True", "True"]


async def test_at_most_max_tool_processes_run_at_once(tmp_path: Path) -> None:
    """Six calls with a limit of two: every call is answered, never more than two processes at a time."""
    script = (
        "import os, sys, time\n"
        "d = sys.argv[1]\n"
        "mine = os.path.join(d, str(os.getpid()))\n"
        "open(mine, 'w').close()\n"
        "peak = len(os.listdir(d))\n"
        "time.sleep(0.3)\n"
        "peak = max(peak, len(os.listdir(d)))\n"
        "os.remove(mine)\n"
        "print(peak)\n"
    )
    tool = ToolConfig(name="busy", description="x", command=(PY, "-c", script, str(tmp_path)), timeout_s=30)
    runner = ToolRunner(RealtimeConfig(tools=(tool,), builtin_tools=(), max_tool_processes=2))
    outs = await asyncio.gather(*(runner.run("busy", "{}") for _ in range(6)))
    peaks = [int(o) for o in outs]
    assert max(peaks) == 2, peaks


async def test_a_call_waiting_for_a_slot_past_its_timeout_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    hang = _tool("hang", f"open({str(fifo)!r}, 'w').write('x'); import time; time.sleep(60)", timeout_s=30)
    quick = _tool("quick", "print('done')", timeout_s=0.5)
    runner = ToolRunner(RealtimeConfig(tools=(hang, quick), builtin_tools=(), max_tool_processes=1))
    holder = asyncio.create_task(runner.run("hang", "{}"))
    await asyncio.to_thread(fifo.read_text)  # the slot is taken
    out = json.loads(await runner.run("quick", "{}"))
    assert out["error"] == "tool 'quick' not run: 1 tool processes were busy for 0.5 s"
    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder
    assert (await runner.run("quick", "{}")).strip() == "done"  # the slot came back on cancel


# ---------------------------------------------------------------------------------------- built-ins


async def test_get_datetime_is_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        before = dt.datetime.now().astimezone()
        out = json.loads(await _runner(builtins=("datetime",)).run("get_datetime", "{}"))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert out["utc_offset"] == "+05:30"
    assert out["timezone"] == "IST"
    stamp = dt.datetime.fromisoformat(out["iso"])
    assert abs((stamp - before).total_seconds()) < 60
    assert out["weekday"] == stamp.strftime("%A")
    assert out["date"] == stamp.date().isoformat()


def test_datetime_output_negative_offset() -> None:
    now = dt.datetime(2026, 3, 1, 9, 5, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30), "NST"))
    assert datetime_output(now) == {
        "iso": "2026-03-01T09:05:00-03:30",
        "date": "2026-03-01",
        "time": "09:05",
        "weekday": "Sunday",
        "timezone": "NST",
        "utc_offset": "-03:30",
    }


async def test_get_datetime_rejects_arguments() -> None:
    out = json.loads(await _runner(builtins=("datetime",)).run("get_datetime", '{"zone": "UTC"}'))
    assert "unknown property" in out["error"]


def test_volume_tools_need_a_mixer() -> None:
    assert [s.name for s in _runner(builtins=("datetime", "volume")).specs()] == ["get_datetime"]
    with_mixer = _runner(builtins=("volume",), mixer=AmixerMixer("default", "Master"))
    assert [s.name for s in with_mixer.specs()] == ["get_volume", "set_volume"]


AMIXER_STEREO = """Simple mixer control 'Master',0
  Capabilities: pvolume pswitch pswitch-joined
  Playback channels: Front Left - Front Right
  Limits: Playback 0 - 65536
  Mono:
  Front Left: Playback 24248 [37%] [on]
  Front Right: Playback 26214 [40%] [on]
"""
AMIXER_MONO_DB = """Simple mixer control 'PCM',0
  Capabilities: pvolume pvolume-joined pswitch pswitch-joined
  Playback channels: Mono
  Limits: Playback 0 - 255
  Mono: Playback 230 [90%] [-2.50dB] [on]
"""
AMIXER_SWITCH = """Simple mixer control 'Auto-Mute Mode',0
  Capabilities: enum
  Items: 'Disabled' 'Enabled'
  Item0: 'Disabled'
"""


def test_parse_amixer_percent() -> None:
    assert parse_amixer_percent(AMIXER_STEREO) == 38  # mean of 37 and 40, rounded
    assert parse_amixer_percent(AMIXER_MONO_DB) == 90
    assert parse_amixer_percent(AMIXER_STEREO.replace("[40%]", "[250%]")) == 100  # clamped
    with pytest.raises(ToolError, match="no volume percentage"):
        parse_amixer_percent(AMIXER_SWITCH)
    with pytest.raises(ToolError):
        parse_amixer_percent("")


def test_amixer_argv_uses_card_number_or_device() -> None:
    assert AmixerMixer("1", "PCM")._argv("sget", "PCM")[:4] == ["amixer", "-c", "1", "-M"]
    mixer = AmixerMixer.from_config(OutputConfig(mixer_card="hw:Headphones", mixer_control="Speaker"))
    assert mixer._argv("sget", "Speaker") == ["amixer", "-D", "hw:Headphones", "-M", "sget", "Speaker"]


class FakeMixer:
    """Records set calls; a real AmixerMixer is exercised below against PulseAudio."""

    def __init__(self, percent: int) -> None:
        self.percent = percent
        self.sets: list[int] = []

    async def get_percent(self) -> int:
        return self.percent

    async def set_percent(self, percent: int) -> int:
        self.sets.append(percent)
        self.percent = percent
        return percent


@pytest.mark.parametrize(
    ("start", "arguments", "expected"),
    [
        (50, '{"percent": 20}', 20),
        (50, '{"percent": 150}', 100),
        (50, '{"change": 10}', 60),
        (95, '{"change": 10}', 100),
        (5, '{"change": -10}', 0),
    ],
)
async def test_set_volume_clamps(start: int, arguments: str, expected: int) -> None:
    mixer = FakeMixer(start)
    out = json.loads(await _runner(builtins=("volume",), mixer=mixer).run("set_volume", arguments))
    assert out["volume_percent"] == expected
    assert mixer.sets == [expected]


@pytest.mark.parametrize("arguments", ["{}", '{"percent": 10, "change": 5}', '{"percent": "loud"}'])
async def test_set_volume_bad_arguments(arguments: str) -> None:
    mixer = FakeMixer(50)
    out = json.loads(await _runner(builtins=("volume",), mixer=mixer).run("set_volume", arguments))
    assert "error" in out
    assert mixer.sets == []


async def test_mixer_errors_become_tool_errors(tmp_path: Path) -> None:
    """A real amixer asked for a card that does not exist: the output says so, nothing raises."""
    mixer = AmixerMixer("hw:NoSuchCard", "Master", env=_alsa_env(tmp_path))
    runner = _runner(builtins=("volume",), mixer=mixer)
    out = json.loads(await runner.run("get_volume", "{}"))
    assert out["error"].startswith("mixer 'Master' on 'hw:NoSuchCard': ")
    missing = AmixerMixer("default", "Master", amixer="/nonexistent/amixer")
    out = json.loads(await _runner(builtins=("volume",), mixer=missing).run("set_volume", '{"percent": 3}'))
    assert out["error"] == "/nonexistent/amixer not found (install alsa-utils)"


def _alsa_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(tmp_path)}


# ------------------------------------------------------------------ a real mixer through PulseAudio


@pytest.fixture
def pulse_mixer_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private PulseAudio server (null sink): ALSA's ``pulse`` control device is a real mixer."""
    if not (shutil.which("pulseaudio") and shutil.which("amixer") and shutil.which("pactl")):
        pytest.skip("pulseaudio/amixer not installed")
    socket_path = tmp_path / "native"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PULSE_RUNTIME_PATH": str(tmp_path / "rt"),
        "PULSE_SERVER": f"unix:{socket_path}",
        "PULSE_COOKIE": str(tmp_path / "cookie"),
    }
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--log-target=stderr",
            "-L",
            "module-null-sink sink_name=speaker",
            "-L",
            f"module-native-protocol-unix socket={socket_path} auth-anonymous=1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # wait for the server to answer (bounded)
            if proc.poll() is not None:
                pytest.skip("pulseaudio could not start here")
            ok = subprocess.run(["pactl", "info"], env=env, capture_output=True, timeout=5).returncode == 0
            if ok:
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        else:
            pytest.skip("pulseaudio did not come up")
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_volume_on_a_real_mixer(pulse_mixer_env: dict[str, str]) -> None:
    mixer = AmixerMixer("pulse", "Master", env=pulse_mixer_env)
    runner = _runner(builtins=("volume",), mixer=mixer)
    assert json.loads(await runner.run("set_volume", '{"percent": 37}')) == {"volume_percent": 37}
    assert json.loads(await runner.run("get_volume", "{}")) == {"volume_percent": 37}
    assert json.loads(await runner.run("set_volume", '{"change": -12}')) == {"volume_percent": 25}
    argv = ["pactl", "get-sink-volume", "speaker"]
    done = await asyncio.to_thread(subprocess.run, argv, env=pulse_mixer_env, capture_output=True, text=True)
    sink = done.stdout
    assert "25%" in sink  # the change reached the sound server, not just amixer's answer
    out = json.loads(await runner.run("set_volume", '{"percent": 400}'))
    assert out["volume_percent"] == 100
    assert out["note"] == "limited to 100 (the range is 0-100)"


async def test_unknown_control_on_a_real_mixer(pulse_mixer_env: dict[str, str]) -> None:
    mixer = AmixerMixer("pulse", "Nonexistent", env=pulse_mixer_env)
    out = json.loads(await _runner(builtins=("volume",), mixer=mixer).run("get_volume", "{}"))
    assert "Unable to find simple control 'Nonexistent'" in out["error"]
