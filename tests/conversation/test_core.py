"""The conversation core without an event loop: what goes upstream in every phase, playback state and turn mode.

The device's speaker reaches its microphone through a room (soft clip, reflections, a 150 ms tail) and
nothing else does unless a test puts a user in the room: every sample the core sends up that is not
digital silence is then the device hearing itself.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.audio.resample import resample
from earshot.conversation import effects as fx
from earshot.conversation.appliance import MAX_ANNOUNCEMENTS
from earshot.engage import Phase
from earshot.gate import gate as gt
from earshot.gate.bargein import DuplexMode
from earshot.realtime import session as rs
from earshot.realtime.linkevents import LinkDown
from earshot.realtime.policy import Verdict
from tests.conversation.rig import RATE, Device, config
from tests.support.speech import read_wav, synth

SELF_NOISE = 18
"""−65 dBFS, the canceller's reference floor: a sound quieter than that is not counted as sound, and its
echo (6 dB down) is below a microphone's own noise. The first milliseconds of a soft onset come back at
up to 12 LSB; the echo itself, sent up, peaks at thousands."""
PHASES = list(Phase)
TURNS = ["server_vad", "none"]
SOUNDS = ["earcon", "announcement"]


@cache
def _voice(text: str, voice: str) -> NDArray[np.int16]:
    pcm, rate = read_wav(synth(text, voice=voice, rate_hz=RATE))
    assert rate == RATE
    return pcm


def announcement() -> NDArray[np.int16]:
    """Two seconds of the device's own voice that the core is not told about (a timer, a tool's sound)."""
    return _voice("Your pasta timer is done. The water should be boiling now.", "slt")


def reply24k(seconds: float) -> NDArray[np.int16]:
    """The server's reply at the wire rate: the assistant speaking for ``seconds``."""
    one = _voice("Here is the forecast for the rest of the week, mostly sunny and warm.", "slt")
    reps = int(np.ceil(seconds * RATE / one.size))
    speech = np.tile(one, reps)[: int(seconds * RATE)] // 4  # the volume: 12 dB below full scale
    return resample(speech.astype(np.int16), RATE, 24000)


def user(text: str = "what about the weekend then") -> NDArray[np.int16]:
    return _voice(text, "rms")


def drive(dev: Device, phase: Phase) -> None:
    """Bring the core to ``phase`` the way a real exchange does (the earcons play on the way)."""
    if phase is Phase.IDLE:
        return
    dev.command("engage")
    dev.run(0.5)
    if phase is Phase.CONNECTING:
        return
    dev.session_ready()
    dev.run(0.5)
    if phase is Phase.LISTENING:
        return
    dev.command("end_turn")
    dev.run(0.5)
    if phase is Phase.THINKING:
        return
    dev.reply(reply24k(12.0 if phase is Phase.SPEAKING else 1.0))
    for _ in range(1500):
        dev.step()
        if dev.core.phase is phase:
            break
    dev.run(0.5)


def _upstream_peak(dev: Device) -> int:
    pcm = dev.sent.pcm()
    return int(np.abs(pcm.astype(np.int32)).max()) if pcm.size else 0


@pytest.mark.parametrize("turns", TURNS)
@pytest.mark.parametrize("sound", SOUNDS)
@pytest.mark.parametrize("phase", PHASES, ids=lambda p: p.name)
def test_nothing_the_device_plays_goes_upstream_or_moves_the_conversation(phase: Phase, sound: str, turns: str) -> None:
    """In every phase, over an earcon or an announcement, with server or local turn detection."""
    dev = Device(config(turns))
    drive(dev, phase)
    assert dev.core.phase is phase
    commits = dev.sent.commits
    if sound == "earcon":
        dev.command("play_earcon", "wake")
    else:
        dev.play(announcement())
    dev.run(0.3)
    assert dev.sounding or sound == "earcon", "the sound plays"
    dev.run(2.2 if sound == "announcement" else 0.6)
    assert dev.core.phase is phase, "the device's own sound moved the conversation"
    assert dev.sent.interrupts == [], "the device interrupted itself"
    assert dev.sent.commits == commits, "the device's own sound ended a turn"
    assert _upstream_peak(dev) <= SELF_NOISE, "the device's own sound went upstream"
    if phase is Phase.IDLE:
        assert dev.sent.opens == 0
        assert dev.sent.audio == []


@pytest.mark.parametrize("turns", TURNS)
def test_without_a_canceller_the_sound_and_its_tail_stay_local(turns: str) -> None:
    dev = Device(config(turns), canceller=False)
    drive(dev, Phase.LISTENING)
    dev.play(announcement())
    dev.run(3.0)
    assert dev.core.phase is Phase.LISTENING
    assert _upstream_peak(dev) <= SELF_NOISE


def test_the_user_in_a_quiet_room_goes_upstream() -> None:
    """The counter-test: the same rig sends the user's voice (so the silence above is the rule's doing)."""
    dev = Device(config())
    drive(dev, Phase.LISTENING)
    dev.user, dev.user_at = user(), dev.position
    dev.run(2.5)
    pcm = dev.sent.pcm()
    assert _upstream_peak(dev) > 3000
    voiced = resample(dev.user, RATE, 24000)
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 0.3 * np.sqrt(np.mean(voiced.astype(np.float64) ** 2))


def test_the_user_talking_over_an_announcement_still_goes_upstream() -> None:
    """The user is not lost: confirmed over the sound by local detection, or heard on past its end."""
    dev = Device(config())
    drive(dev, Phase.LISTENING)
    dev.play(announcement())
    dev.run(1.0)
    words = "no wait, tell me about the weekend instead please, and then what about next monday"
    dev.user, dev.user_at = user(words), dev.position
    dev.run(6.0)
    assert _upstream_peak(dev) > 3000
    assert dev.core.phase is Phase.LISTENING


def test_the_user_over_the_reply_interrupts_and_the_turn_goes_up() -> None:
    dev = Device(config())
    drive(dev, Phase.SPEAKING)
    dev.run(2.5)  # the canceller has had a few seconds of the reply
    assert dev.sent.interrupts == []
    words = "stop, stop, tell me something else instead"
    dev.user, dev.user_at = user(words), dev.position
    for _ in range(dev.user.size // 160):
        dev.step()
        if dev.sent.interrupts:
            break
    assert dev.sent.interrupts, "the user's barge-in was not heard"
    hit = dev.sent.interrupts[0]
    assert hit.local
    assert hit.reaction_ms is not None
    assert dev.core.phase is Phase.LISTENING
    dev.run(1.5)
    assert _upstream_peak(dev) > 3000, "the interrupting turn did not go upstream"


@pytest.mark.parametrize("turns", TURNS)
def test_a_reply_plays_to_its_end_without_cancels_or_truncates(turns: str) -> None:
    """20 engagements in a row, earcons on, a realistic room: nothing the device plays cancels or truncates."""
    dev = Device(config(turns))
    for _ in range(20):
        drive(dev, Phase.FOLLOW_UP)
        assert dev.core.phase is Phase.FOLLOW_UP
        dev.run(7.0)  # the follow-up window closes
        assert dev.core.phase is Phase.IDLE
    assert dev.sent.interrupts == []
    assert _upstream_peak(dev) <= SELF_NOISE


def test_server_speech_start_while_a_reply_waits_drops_the_unheard_reply() -> None:
    """The user went on talking: the server's speech start in THINKING drops the reply not yet heard."""
    dev = Device(config())
    drive(dev, Phase.THINKING)
    dev.link(rs.ResponseStarted("resp_1"))
    dev.link(rs.PlayAudio("item_1", 0, "resp_1", reply24k(2.0)))
    assert dev.sounding
    dev.link(rs.SpeechStarted(0, "item_2"))
    assert any(isinstance(e, fx.StopPlayback) for e in dev.effects)
    assert dev.core.phase is Phase.LISTENING


def test_a_fatal_link_error_rests_and_closes_in_every_engaged_phase() -> None:
    for phase in (Phase.CONNECTING, Phase.LISTENING, Phase.THINKING):
        dev = Device(config())
        drive(dev, phase)
        dev.link(LinkDown("AuthenticationError: bad key", Verdict.FATAL_FOR_NOW, 60.0, 1))
        assert dev.core.phase is Phase.IDLE
        assert dev.sent.closes >= 1
        assert dev.core.resting_reason
        assert dev.command("engage") is False, "engaged while resting"
        assert any(isinstance(e, fx.ConnectionState) and e.state == "resting" for e in dev.effects)


def test_mute_ends_the_engagement_and_hears_nothing() -> None:
    dev = Device(config())
    drive(dev, Phase.LISTENING)
    dev.core.set_muted(True, dev.now)
    dev.run(0.01)
    assert dev.core.phase is Phase.IDLE
    sent = len(dev.sent.audio)
    dev.user, dev.user_at = user(), dev.position
    dev.run(2.0)
    assert len(dev.sent.audio) == sent
    assert dev.command("engage") is False


def test_the_core_decides_the_capture_period_and_the_end_of_tool_calls() -> None:
    """Short capture periods from the engagement on, long ones back in IDLE, and tool calls cancelled then:
    decisions of the phase, so the core's (the daemon only carries them out)."""
    dev = Device(config())
    drive(dev, Phase.LISTENING)
    assert fx.CaptureLatency(low=True) in dev.effects
    assert not any(isinstance(e, fx.CancelTools) for e in dev.effects)
    dev.effects.clear()
    dev.core.cancel(dev.now, "cancelled")
    dev.run(0.01)
    assert dev.core.phase is Phase.IDLE
    assert fx.CaptureLatency(low=False) in dev.effects
    assert fx.CancelTools() in dev.effects
    assert not dev.core.busy(playback_active=False)
    assert dev.core.busy(playback_active=True)


# ------------------------------------------------------------------------------ a ringing timer


def _ring(dev: Device, seconds: float, *, every_s: float = 2.0) -> None:
    """A timer ringing for ``seconds``: one ring cue every ``every_s`` until answered, as the service plays it."""
    answered = len(_stops(dev))
    for _ in range(round(seconds / every_s)):
        if len(_stops(dev)) == answered:
            dev.core.ring_timer(-10.0)
        dev._carry_out()
        dev.run(every_s)


def _stops(dev: Device) -> list[str]:
    return [e.by for e in dev.effects if isinstance(e, fx.StopRing)]


def test_a_ringing_timer_never_hears_itself() -> None:
    """The ring is the device's own sound: it stops nothing and engages nothing, whatever the gate."""
    dev = Device(config(mode="vad"))
    _ring(dev, 10.0)
    assert _stops(dev) == []
    assert dev.core.phase is Phase.IDLE
    assert dev.sent.opens == 0
    assert dev.core.ringing


@pytest.mark.parametrize("mode", ["wakeword", "vad"])
def test_speech_over_a_ringing_timer_stops_it_and_asks_nothing(mode: str) -> None:
    """In vad mode too: the speech that answered the ring does not engage."""
    dev = Device(config(mode=mode))
    _ring(dev, 4.0)
    dev.user, dev.user_at = user("okay okay, I am coming"), dev.position
    _ring(dev, 4.0)
    assert _stops(dev) == ["speech"]
    assert not dev.core.ringing
    assert dev.core.phase is Phase.IDLE
    assert dev.sent.opens == 0


def test_the_button_or_the_wake_word_answer_a_ring_instead_of_engaging() -> None:
    dev = Device(config(mode="wakeword"))
    _ring(dev, 2.0)
    assert dev.command("engage", source="button") is False
    assert _stops(dev) == ["button"]
    assert dev.core.phase is Phase.IDLE
    _ring(dev, 2.0)
    dev.core._on_gate_event(gt.Wake(dev.position, 0.9, "test", dev.position - 8000), dev.now)
    dev._carry_out()
    assert _stops(dev) == ["button", "wake word"]
    assert dev.core.phase is Phase.IDLE
    # Once it is quiet, the button engages again.
    dev.core.ring_ended()
    assert dev.command("engage", source="button") is True
    assert dev.core.phase is Phase.CONNECTING


# ------------------------------------------------------------------------------ announcements


def _announced(dev: Device) -> list[str]:
    return [e.text for e in dev.effects if isinstance(e, fx.Announce)]


def test_an_announcement_waits_for_the_engagement_then_is_said_without_a_turn() -> None:
    dev = Device(config())
    drive(dev, Phase.LISTENING)
    assert dev.core.announce("the laundry   is done", dev.now) == 1  # one engagement before it
    dev._carry_out()
    assert _announced(dev) == []
    dev.command("cancel")
    assert _announced(dev) == ["the laundry is done"]  # the session is still open: asked at once
    assert dev.core.phase is Phase.THINKING
    uplink_before = len(dev.sent.audio)
    dev.reply(reply24k(1.0))
    for _ in range(300):
        dev.step()
        if dev.core.phase is Phase.IDLE:
            break
    assert dev.core.phase is Phase.IDLE  # said, and over: no follow-up window without listen
    assert len(dev.sent.audio) == uplink_before  # nothing of the microphone went up


def test_an_interrupting_announcement_cuts_the_reply_and_the_queue_is_bounded() -> None:
    dev = Device(config())
    drive(dev, Phase.SPEAKING)
    dev.core.announce("fire alarm", dev.now, interrupt=True)
    dev._carry_out()
    assert dev.sent.interrupts  # the reply in progress was stopped (and truncated)
    assert _announced(dev) == ["fire alarm"]
    with pytest.raises(ValueError, match="nothing to say"):
        dev.core.announce(" \n ", dev.now)
    for i in range(MAX_ANNOUNCEMENTS):
        dev.core.announce(f"note {i}", dev.now)
    with pytest.raises(ValueError, match="waiting"):
        dev.core.announce("one too many", dev.now)


@pytest.mark.parametrize("duplex", ["full", "gated"])
def test_silero_rests_over_a_full_duplex_reply_and_the_user_is_still_heard(duplex: str) -> None:
    """Over a FULL duplex reply the gate's VAD runs webrtcvad alone (the guard holds its echo anyway).

    In GATED duplex the wake word interrupts, so the VAD's starts wake the engine and Silero stays on.
    Either way the user talking over the reply interrupts it and their turn goes upstream, with Silero.
    """
    dev = Device(config(extra=f"bargein:\n  duplex: {duplex}\n"))
    vad = dev.core.gate.vad
    assert vad.silero is not None, "the default config has the Silero stage"
    drive(dev, Phase.SPEAKING)
    dev.run(1.0)
    mode = dev.core.bargein.duplex.mode if dev.core.bargein is not None else None
    assert mode is DuplexMode(duplex)
    calls, rested = vad.silero.calls, vad.rested_frames
    dev.run(1.5)  # the canceller has had a few seconds of the reply
    assert dev.core.phase is Phase.SPEAKING
    if mode is DuplexMode.FULL:
        assert vad.silero.calls == calls, "Silero ran on the reply's echo"
        assert vad.rested_frames - rested == round(1.5 * 1000 / dev.config.gate.vad.frame_ms)
    else:
        assert vad.rested_frames == rested, "Silero rested where the VAD wakes the wake-word engine"
    words = "stop, stop, tell me something else instead"
    dev.user, dev.user_at = user(words), dev.position
    for _ in range(dev.user.size // 160):
        dev.step()
        if dev.sent.interrupts or dev.core.phase is not Phase.SPEAKING:
            break
    assert dev.core.phase is Phase.LISTENING, "the user's barge-in was not heard"
    calls = vad.silero.calls
    dev.run(1.5)
    assert vad.silero.calls > calls, "the user's turn is judged with Silero again"
    assert _upstream_peak(dev) > 3000, "the interrupting turn did not go upstream"
