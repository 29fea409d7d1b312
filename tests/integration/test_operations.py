"""Living with it, through the real daemon: hooks, metrics, recordings, SIGHUP reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from earshot.emulator import Emulator, EmulatorOptions
from earshot.systemd import Notifier
from tests.integration.replies import check_events
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

HOOK = "import sys, os; open(os.environ['HOOK_OUT'], 'a').write(sys.stdin.read())"


async def test_hooks_metrics_and_recordings_follow_an_exchange(tmp_path: Path) -> None:
    """One exchange fires the phase hooks in order, counts in the metrics file and records the turn."""
    question, _ = read_wav(synth("what is the capital of france"))
    pcm = concat(silence(1.0), question, silence(7.0))
    hook_out = tmp_path / "hooks.jsonl"
    hook = [sys.executable, "-c", HOOK]
    metrics = tmp_path / "metrics.prom"
    config = {
        "hooks": {
            "listening": hook,
            "thinking": hook,
            "speaking": hook,
            "idle": hook,
            "duck": hook,
            "unduck": hook,
            "timeout_s": 5.0,
        },
        "metrics": {"textfile": str(metrics), "interval_s": 1.0},
        "recordings": {"enabled": True, "max_mb": 5.0},
        # The session's controls for a fleet (issue 19): the emulator takes them, the SDK types check them.
        "realtime": {
            "reasoning_effort": "low",
            "truncation_retention_ratio": 0.6,
            "prompt": {"id": "pmpt_fleet", "variables": {"site": "lobby"}},
            "parallel_tool_calls": False,
        },
    }
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=config, environ={"HOOK_OUT": str(hook_out)})
        assert run.exit_code == 0
        check_events(emu)
    events = [json.loads(line) for line in hook_out.read_text().splitlines()]
    names = [e["event"] for e in sorted(events, key=lambda e: e["seq"])]
    for expected in ("listening", "thinking", "speaking", "idle"):
        assert expected in names
    assert names.index("listening") < names.index("thinking") < names.index("speaking") < names.index("idle")
    # Ducking: a music player is lowered before the reply and raised once the device is quiet, in pairs.
    ducking = [n for n in names if n in ("duck", "unduck")]
    assert ducking[0] == "duck"
    assert ducking[-1] == "unduck"
    assert ducking == ["duck", "unduck"] * (len(ducking) // 2), ducking
    assert names.index("duck") < names.index("speaking")
    assert len(ducking) // 2 <= 3  # the cues and the reply: held together, not one pair per sound chunk
    assert all("sk-test-key" not in json.dumps(e) for e in events)

    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["earshot_engagements"].samples[0].value == 1
    assert families["earshot_turns"].samples[0].value >= 1
    ready = {s.name: s.value for s in families["earshot_wake_to_ready_seconds"].samples}
    assert ready["earshot_wake_to_ready_seconds_count"] == 1
    tokens = {s.labels["kind"]: s.value for s in families["earshot_tokens"].samples}
    assert tokens["audio_out"] > 0  # the reply's usage, from response.done
    assert families["earshot_cost_usd_estimate"].samples[0].value > 0
    assert run.daemon.stats is not None
    assert run.daemon.stats.last_engagement is not None
    assert run.daemon.stats.last_engagement.tokens.audio_out == tokens["audio_out"]
    assert {limit["name"] for limit in run.daemon.stats.tokens.rate_limits} == {"requests", "tokens"}
    update = next(e for e in emu.sessions[0].client_events if e.get("type") == "session.update")["session"]
    assert update["reasoning"] == {"effort": "low"}
    assert update["prompt"] == {"id": "pmpt_fleet", "variables": {"site": "lobby"}}
    timers = {s.labels["state"]: s.value for s in families["earshot_timers"].samples}
    assert timers == {"pending": 0, "ringing": 0}

    recordings = tmp_path / "state" / "recordings"
    wavs = sorted(recordings.glob("*.wav"))
    sidecars = sorted(recordings.glob("*.json"))
    assert wavs
    assert len(sidecars) == len(wavs)
    meta = json.loads(sidecars[0].read_text())
    assert meta["kind"] == "turn"
    turn, rate = read_wav(wavs[0])
    assert rate == 16000
    # The recorded turn holds the whole question (pre-roll included).
    assert len(turn) >= len(question) - 1600


class RecordingNotifier(Notifier):
    """A notifier that keeps what it would have sent."""

    def __init__(self) -> None:
        super().__init__({})
        self.sent: list[tuple[str, ...]] = []
        self.got_ready = asyncio.Event()

    def send(self, *lines: str) -> bool:
        self.sent.append(lines)
        if "READY=1" in lines:
            self.got_ready.set()
        return True


async def test_sighup_with_a_broken_config_keeps_running_the_old_one(tmp_path: Path) -> None:
    """SIGHUP reloads; an invalid new config is refused (RELOADING then READY) and the daemon runs on."""
    notifier = RecordingNotifier()
    pcm = silence(6.0)

    async def break_and_hup() -> None:
        path = tmp_path / "earshot.yaml"
        await notifier.got_ready.wait()
        path.write_text(path.read_text() + "\ngate:\n  mode: sometimes\n")
        os.kill(os.getpid(), signal.SIGHUP)

    async with Emulator(EmulatorOptions(strict=True)) as emu:
        hup = asyncio.create_task(break_and_hup())
        run = await run_daemon(tmp_path, pcm, url=emu.url, config={"gate": {"mode": "manual"}}, notifier=notifier)
        await hup
    assert run.exit_code == 0
    flat = [line for lines in notifier.sent for line in lines]
    reloading = flat.index("RELOADING=1")
    assert "READY=1" in flat[reloading:]
    assert any("Reload failed" in line for line in flat[reloading:])
    assert run.daemon.config.gate.mode == "manual"
    assert "STOPPING=1" in flat
