"""The real daemon against the emulator: a spoken turn in, the reply in the output WAV."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from earshot.emulator import DefaultScript, Emulator, EmulatorOptions, FunctionCall
from tests.integration.replies import RATE_HZ, check_events, client_types, locate, reply_pcm
from tests.resilience.harness import watching_logs
from tests.support.daemon import run_daemon
from tests.support.procs import running
from tests.support.schema import check_client_event
from tests.support.speech import concat, read_wav, silence, synth


async def test_spoken_exchange_reply_lands_in_the_output(tmp_path: Path) -> None:
    """A turn spoken in vad mode is streamed from its first word and the reply is played."""
    question, _ = read_wav(synth("what is the capital of france"))
    pcm = concat(silence(1.0), question, silence(7.0))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url)
        assert run.exit_code == 0
        assert emu.violations == []
        assert len(emu.sessions) == 1
        record = emu.sessions[0]
        for event in record.client_events:
            check_client_event(event)  # raises on a schema violation or an unknown key
        # The server got the whole question: its first words included (pre-roll before the VAD start).
        received = record.received_audio()
        assert len(received) / 24000 >= len(question) / 16000 - 0.05
    assert run.marks("reply started")
    assert run.marks("reply played out")
    # The speaker timeline holds real reply audio after the question ended.
    after = run.output[int((1.0 + len(question) / 16000) * 24000) :]
    assert np.abs(after.astype(np.int32)).max() > 1000


async def test_function_call_runs_the_builtin_and_the_answer_is_spoken(tmp_path: Path) -> None:
    """The model calls ``get_datetime``: the daemon runs it, returns the output, asks for the answer, plays it."""
    question, _ = read_wav(synth("what time is it"))
    lead = 0.5
    q_end = lead + len(question) / 16000
    pcm = concat(silence(lead), question, silence(12.0))
    script = DefaultScript(calls={1: FunctionCall("get_datetime")})
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config={"realtime": {"builtin_tools": ["datetime"]}})
        check_events(emu)
    assert run.exit_code == 0
    assert len(emu.sessions) == 1
    record = emu.sessions[0]
    assert run.marks("tool call get_datetime")
    call = record.responses[0].function_call
    assert call is not None
    assert call.name == "get_datetime"
    # The output went back as a function_call_output item, then a response.create asked for the answer.
    outputs = [
        (i, e)
        for i, e in enumerate(record.client_events)
        if e.get("type") == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]
    assert len(outputs) == 1
    index, event = outputs[0]
    calls = [e for e in record.server_events if e.get("type") == "response.function_call_arguments.done"]
    assert event["item"]["call_id"] == calls[0]["call_id"]
    result = json.loads(event["item"]["output"])
    assert "error" not in result, result
    creates = [i for i, e in enumerate(record.client_events) if e.get("type") == "response.create"]
    assert any(i > index for i in creates), "no response.create after the tool output"
    # The spoken answer (which quotes the tool's output) is played whole.
    assert len(record.responses) == 2
    answer = record.responses[1]
    assert answer.status == "completed"
    assert "get_datetime" in answer.text
    played = locate(run.output, await reply_pcm(answer.text), after=round(q_end * RATE_HZ))
    assert played is not None
    assert played.played == played.length
    assert run.marks("reply played out")


async def test_g711_ulaw_exchange_completes(tmp_path: Path) -> None:
    """``realtime.format: g711_ulaw``: 8 kHz both ways; the reply (resampled to 24 kHz) is in the output."""
    question, _ = read_wav(synth("what is the capital of france"))
    lead = 0.5
    q_end = lead + len(question) / 16000
    pcm = concat(silence(lead), question, silence(7.0))
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config={"realtime": {"format": "g711_ulaw"}})
        check_events(emu)
    assert run.exit_code == 0
    record = emu.sessions[0]
    updates = [e for e in record.client_events if e.get("type") == "session.update"]
    formats = updates[0]["session"]["audio"]
    assert formats["input"]["format"]["type"] == "audio/pcmu"
    assert formats["output"]["format"]["type"] == "audio/pcmu"
    assert "input_audio_buffer.append" in client_types(emu)
    assert len(record.received_audio()) / RATE_HZ >= len(question) / 16000 - 0.05
    assert record.responses[0].status == "completed"
    assert run.marks("reply played out")
    # The reply's speech (mu-law, 8 kHz) lands in the output at about its full length.
    sent_s = record.responses[0].audio_samples_sent / record.responses[0].rate_hz
    reply = run.output[round(q_end * RATE_HZ) :].astype(np.float64)
    frames = reply[: reply.size // 240 * 240].reshape(-1, 240)
    loud = np.sqrt((frames**2).mean(axis=1)) > 300
    active = np.flatnonzero(loud)
    assert active.size > 0
    span_s = (active[-1] - active[0] + 1) * 0.01
    assert 0.8 * sent_s <= span_s <= sent_s + 0.05, (span_s, sent_s)


async def test_a_tool_still_running_when_the_engagement_ends_is_stopped(tmp_path: Path) -> None:
    """The tool hangs and the engagement gives up waiting for the reply: the tool is killed, never answered."""
    pidfile = tmp_path / "tool.pid"
    script = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    question, _ = read_wav(synth("open the garage door"))
    pcm = concat(silence(0.5), question, silence(10.0))
    tool = {"name": "garage_door", "description": "opens", "command": [sys.executable, "-c", script], "timeout_s": 60}
    config = {"realtime": {"builtin_tools": [], "tools": [tool], "reply_timeout_s": 2.0}}
    script_calls = DefaultScript(calls={1: FunctionCall("garage_door")})
    async with Emulator(EmulatorOptions(strict=True, script=script_calls)) as emu:
        run = await run_daemon(tmp_path, pcm, url=emu.url, config=config)
        check_events(emu)
    assert run.exit_code == 0
    assert run.marks("tool call garage_door")
    assert run.marks("engagement ended (no reply in time)"), run.timeline
    outputs = [
        e
        for e in emu.sessions[0].client_events
        if e.get("type") == "conversation.item.create" and e["item"].get("type") == "function_call_output"
    ]
    assert outputs == []
    pid = int(pidfile.read_text())
    assert not running(pid), f"the tool (pid {pid}) is still running"


async def test_a_tool_call_while_idle_is_not_run(tmp_path: Path) -> None:
    """The server asks for a tool after the engagement ended (the session kept open): nothing runs."""
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'w').close()"
    question, _ = read_wav(synth("what is the capital of france"))
    pcm = concat(silence(0.5), question, silence(14.0))
    tool = {"name": "garage_door", "description": "opens", "command": [sys.executable, "-c", script]}
    config = {"realtime": {"builtin_tools": [], "tools": [tool], "idle_close_s": 60.0}}
    call = {
        "type": "response.function_call_arguments.done",
        "event_id": "event_idle",
        "response_id": "resp_idle",
        "item_id": "item_idle",
        "output_index": 0,
        "call_id": "call_idle",
        "name": "garage_door",
        "arguments": "{}",
    }
    async with Emulator(EmulatorOptions(strict=True)) as emu:
        with watching_logs() as logs:
            daemon = asyncio.create_task(run_daemon(tmp_path, pcm, url=emu.url, config=config))
            await logs.wait_for("engagement ended", within_s=60)
            emu.send_raw(json.dumps(call))
            await logs.wait_for("tool call garage_door while idle: not run", within_s=20)
            run = await daemon
    assert run.exit_code == 0
    assert not run.marks("tool call garage_door")
    assert not marker.exists()
