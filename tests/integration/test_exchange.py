"""The real daemon against the emulator: a spoken turn in, the reply in the output WAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earshot.emulator import Emulator, EmulatorOptions
from tests.support.daemon import run_daemon
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
