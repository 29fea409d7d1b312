"""The volume from outside, end to end (issue 19): kept across restarts, moved from the command line,
and what the speaker plays is the reply at that gain, sample for sample."""

from __future__ import annotations

import json
from pathlib import Path

from earshot.app import Daemon
from earshot.audio.dsp import apply_gain_db
from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from earshot.volume import VolumeState, gain_db
from tests.integration.replies import RATE_HZ, check_events, locate, reply_pcm
from tests.support.cli import earshot_cli
from tests.support.daemon import run_daemon
from tests.support.speech import concat, read_wav, silence, synth

REPLY = "It is sunny today, with a light wind."


async def test_a_kept_volume_and_a_change_from_the_command_line_set_what_the_speaker_plays(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "volume.json").write_text(json.dumps({"volume": 50, "muted": False}))  # set before a restart
    question, _ = read_wav(synth("what is the weather like"))
    said: list[str] = []

    async def operator(daemon: Daemon) -> None:
        socket = tmp_path / "control.sock"
        said.append(await earshot_cli(socket, "volume"))  # what the last run left
        said.append(await earshot_cli(socket, "volume", "up"))

    async with Emulator(EmulatorOptions(strict=True, script=DefaultScript(replies=[REPLY]))) as emu:
        run = await run_daemon(tmp_path, concat(silence(1.5), question, silence(6.0)), url=emu.url, during=operator)
        check_events(emu)
    assert run.exit_code == 0
    assert said == ["volume 50% (software)\n", "volume 60% (software)\n"]
    assert json.loads((state / "volume.json").read_text()) == {"volume": 60, "muted": False}
    # The reply played at 60 %: the emulator's samples through exactly that gain, none at another.
    reply = await reply_pcm(REPLY)
    played = locate(run.output, apply_gain_db(reply, gain_db(VolumeState(60))), after=RATE_HZ)
    assert played is not None
    assert played.played == played.length
    assert locate(run.output, reply, after=RATE_HZ) is None
    assert run.daemon.stats is not None
    assert run.daemon.stats.bargeins == 0  # the canceller heard the quieter speaker as what sounds
