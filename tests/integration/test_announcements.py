"""Announcements (issue 19): ``earshot say`` makes the device speak without a wake word.

The real daemon on the file backend, the emulator (which says the text an out-of-band response
quotes), the real CLI over the control socket. What the device says is located sample for sample.
"""

from __future__ import annotations

from pathlib import Path

from earshot.app import Daemon
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from tests.integration.replies import RATE_HZ, check_events, client_types, locate, reply_pcm
from tests.support.cli import earshot_cli
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

FIRST = "The laundry is done."
SECOND = "Dinner is ready in ten minutes."
ANSWER = "Okay, I will turn them off."


async def test_announcements_are_said_in_order_out_of_band_and_hear_nothing(tmp_path: Path) -> None:
    said: list[str] = []

    async def operator(daemon: Daemon) -> None:
        socket = tmp_path / "control.sock"
        said.append(await earshot_cli(socket, "say", FIRST))
        said.append(await earshot_cli(socket, "say", SECOND))

    async with Emulator(EmulatorOptions(strict=True)) as emu:
        run = await run_daemon(tmp_path, silence(14.0), url=emu.url, during=operator)
        check_events(emu)
    assert run.exit_code == 0
    assert said[0] == "saying it now\n"
    assert said[1].startswith("queued: ")  # the first was still being said
    creates = [e for s in emu.sessions for e in s.client_events if e.get("type") == "response.create"]
    assert [c["response"]["conversation"] for c in creates] == ["none", "none"]
    assert FIRST in creates[0]["response"]["instructions"]
    assert SECOND in creates[1]["response"]["instructions"]
    # Said whole, one after the other, and nothing of the microphone went up.
    first = locate(run.output, await reply_pcm(FIRST))
    second = locate(run.output, await reply_pcm(SECOND))
    assert first is not None
    assert second is not None
    assert first.played == first.length
    assert second.played == second.length
    assert first.end <= second.start
    assert "input_audio_buffer.append" not in client_types(emu)
    assert run.daemon.stats is not None
    assert run.daemon.stats.engagements == 2


async def test_an_announcement_with_listen_takes_the_answer(tmp_path: Path) -> None:
    question = "Shall I turn off the lights?"
    answer, _ = read_wav(synth("yes please, turn them off"))
    answer_at = 6.0  # after the announcement (about 2 s, from about 0.5 s)

    async def operator(daemon: Daemon) -> None:
        assert await earshot_cli(tmp_path / "control.sock", "say", question, "--listen") == "saying it now\n"

    script = DefaultScript(replies=[ANSWER] * 2)  # the announcement is the emulator's first response
    async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
        run = await run_daemon(
            tmp_path,
            concat(silence(answer_at), answer, silence(8.0)),
            url=emu.url,
            config={"gate": {"follow_up_s": 8.0}},
            during=operator,
        )
        check_events(emu)
    assert run.exit_code == 0
    record = emu.sessions[0]
    asked = locate(run.output, await reply_pcm(question))
    assert asked is not None
    assert asked.end < answer_at * RATE_HZ
    # The answer went up as the user's turn of the same engagement, and was answered.
    assert record.received_audio().size > 0
    assert [r.status for r in record.responses] == ["completed", "completed"]
    reply = locate(run.output, await reply_pcm(ANSWER), after=round(answer_at * RATE_HZ))
    assert reply is not None
    assert reply.played == reply.length
    assert run.daemon.stats is not None
    assert run.daemon.stats.engagements == 1
