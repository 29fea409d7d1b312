"""An idle device's capture goes to the core a period at a time; anything else, 10 ms at a time.

The core takes a whole capture period in one call only while nothing can happen between its chunks
(:meth:`ConversationCore.batchable`): idle, nothing sounding or echoing, the uplink guard settled. The
gate still sees every sample in order, so what the user says is heard and sent the same either way.
"""

from __future__ import annotations

import numpy as np

from earshot.engage import Phase
from tests.conversation.rig import CHUNK, RATE, Device, config
from tests.conversation.test_core import announcement, drive, reply24k, user

PERIOD = 10  # chunks: the idle capture period, 100 ms


def test_only_a_quiet_idle_device_takes_a_period_whole() -> None:
    dev = Device(config())
    dev.run_periods(1.0, PERIOD)
    assert all(dev.batches)
    assert dev.core.echo is not None
    assert dev.core.echo.bypassing
    # The device's own sound, and its echo tail after it: chunk by chunk.
    dev.play(announcement()[: RATE // 2])
    dev.batches.clear()
    dev.run_periods(0.5, PERIOD)
    assert not any(dev.batches)
    dev.run_periods(1.5, PERIOD)
    assert dev.batches[-1]  # quiet again, the canceller back to bypassing
    assert dev.core.phase is Phase.IDLE
    # Engaged: never whole.
    drive(dev, Phase.LISTENING)
    dev.batches.clear()
    dev.run_periods(0.5, PERIOD)
    assert dev.core.phase is Phase.LISTENING
    assert not any(dev.batches)


def test_muted_periods_go_whole_and_hear_nothing() -> None:
    dev = Device(config())
    dev.command("set_muted", True)
    dev.user, dev.user_at = user(), dev.position
    dev.run_periods(2.0, PERIOD)
    assert all(dev.batches)
    assert dev.core.phase is Phase.IDLE
    assert dev.sent.opens == 0
    assert dev.core.position == dev.position


def _engage_by_speech(period_chunks: int) -> Device:
    dev = Device(config())  # gate.mode vad: the user's speech engages; earcons on
    dev.run_periods(1.0, period_chunks)
    dev.user, dev.user_at = user("what about the weekend then, will it rain"), dev.position
    for _ in range(100):
        dev.run_periods(0.1, period_chunks)
        if dev.sent.opens:
            break
    dev.session_ready()
    dev.run_periods(3.0, period_chunks)
    return dev


def test_the_user_is_heard_and_sent_the_same_a_period_at_a_time() -> None:
    chunked, batched = _engage_by_speech(1), _engage_by_speech(PERIOD)
    assert any(batched.batches)  # the idle second went whole
    assert chunked.sent.opens == batched.sent.opens == 1
    assert chunked.core.phase is batched.core.phase is Phase.LISTENING
    engaged = [m for _, m in chunked.core.timeline if m.startswith("engaged")]
    assert engaged == [m for _, m in batched.core.timeline if m.startswith("engaged")]
    a, b = chunked.sent.pcm().astype(np.int32), batched.sent.pcm().astype(np.int32)
    assert a.size == b.size > 2 * 24000  # the question went up, from the same speech start
    # The same samples, but where the wake earcon's echo was cancelled: it starts when the core's
    # effects are carried out, a period later at most, so its residue differs within its length.
    differ = np.flatnonzero(np.abs(a - b) > 100)
    assert differ.size < a.size // 10
    if differ.size:
        assert (differ[-1] - differ[0]) / 24000 < 0.5


def test_a_reply_in_periods_still_plays_out_with_no_cancel() -> None:
    dev = Device(config())
    drive(dev, Phase.THINKING)
    dev.reply(reply24k(3.0))
    dev.run_periods(5.0, PERIOD)
    assert dev.core.phase is not Phase.SPEAKING
    assert dev.sent.interrupts == []


def test_the_wake_word_fires_the_same_a_period_at_a_time() -> None:
    """The gate with the default engine, fed 10 ms or 100 ms at a time: the same wake, its speech start
    exact, its decision at most a period later."""
    from earshot.audio.backend import CaptureChunk
    from earshot.config import parse_config
    from earshot.gate.gate import Gate, Wake
    from earshot.gate.wakeword import MicroWakeWordEngine
    from tests.support.speech import concat, read_wav, silence, synth

    cfg = parse_config("gate:\n  mode: wakeword\n")
    wake_pcm, _ = read_wav(synth("hey jarvis, what is the time"))
    pcm = concat(silence(1.0), wake_pcm, silence(1.0))

    def wakes(step: int) -> list[Wake]:
        gate = Gate(cfg.gate, wakeword=MicroWakeWordEngine("hey_jarvis"))
        out: list[Wake] = []
        for i in range(0, pcm.size - step + 1, step):
            out += [ev for ev in gate.process(CaptureChunk(pcm[i : i + step], i)) if isinstance(ev, Wake)]
        return out

    chunked, batched = wakes(CHUNK), wakes(PERIOD * CHUNK)
    assert len(chunked) == len(batched) == 1
    assert batched[0].start_position == chunked[0].start_position
    assert 0 <= batched[0].position - chunked[0].position < PERIOD * CHUNK
