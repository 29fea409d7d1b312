"""Transcripts where a kiosk screen or a log wants them (issue 19): the ``transcript`` hook, the live
``earshot follow`` stream, and the journal only with ``logging.transcripts``.

The real daemon on the file backend, the emulator (which transcribes the user's turn as a sentence
naming its length, and sends the reply's transcript), the real CLI over the real control socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from earshot.app import Daemon
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from tests.integration.replies import check_events
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

REPLY = "It is sunny today, with a light wind."
HOOK = "import sys, os; open(os.environ['HOOK_OUT'], 'a').write(sys.stdin.read() + chr(10))"


@pytest.mark.parametrize("journal", [False, True], ids=["private", "journal"])
async def test_transcripts_go_to_hooks_and_followers_and_to_the_journal_only_when_asked(
    tmp_path: Path, journal: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    question, _ = read_wav(synth("what is the weather like"))
    hook_out = tmp_path / "hooks.jsonl"
    followed: list[dict[str, object]] = []

    async def follower(daemon: Daemon) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "earshot",
            "follow",
            "--json",
            "--socket",
            str(tmp_path / "control.sock"),
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(60):
                while line := await proc.stdout.readline():
                    followed.append(json.loads(line))
                    if followed[-1]["event"] == "idle":
                        break
        finally:
            proc.terminate()
            await proc.wait()

    config = {
        "realtime": {"transcription": {"model": "gpt-4o-mini-transcribe"}},
        "hooks": {"transcript": [sys.executable, "-c", HOOK]},
        "logging": {"transcripts": journal},
    }
    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[REPLY]))) as emu:
        run = await run_daemon(
            tmp_path,
            concat(silence(1.5), question, silence(6.0)),
            url=emu.url,
            config=config,
            environ={"HOOK_OUT": str(hook_out)},
            during=follower,
        )
        check_events(emu)
    assert run.exit_code == 0
    updates = [e for e in emu.sessions[0].client_events if e.get("type") == "session.update"]
    assert updates[0]["session"]["audio"]["input"]["transcription"]["model"] == "gpt-4o-mini-transcribe"
    hooked = [json.loads(line) for line in hook_out.read_text().splitlines() if line.strip()]
    finals = {e["role"]: e for e in hooked if e["final"]}
    assert finals["assistant"]["text"] == REPLY
    assert finals["user"]["text"].startswith("user audio of ")  # what the emulator "heard"
    assert all(set(e) >= {"event", "role", "item_id", "text", "final"} for e in hooked)
    # The follower saw the exchange as it happened, transcripts included, in order.
    names = [e["event"] for e in followed]
    assert names.index("listening") < names.index("thinking") < names.index("speaking") < names.index("idle")
    said = [e["data"] for e in followed if e["event"] == "transcript" and e["data"]["final"]]  # type: ignore[index]
    assert {d["role"] for d in said} == {"user", "assistant"}  # type: ignore[index]
    # The journal: lengths only, unless logging.transcripts is on.
    assert "engaged by speech" in caplog.text
    assert ("sunny today" in caplog.text) is journal
