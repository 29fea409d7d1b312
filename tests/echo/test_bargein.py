"""Local barge-in detection over the echo, and the duplex policy."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import pytest

from earshot.audio.echo import EchoCanceller, EchoFrame
from earshot.config import BargeInConfig
from earshot.gate.bargein import BargeInDetector, DuplexMode, choose_duplex
from tests.echo.scenes import (
    RATE_HZ,
    USER_PHRASES,
    USER_VOICE,
    Room,
    Run,
    mix,
    place,
    reply,
    run_scene,
    speech,
    speech_onset,
)

CONFIG = BargeInConfig()


@pytest.mark.parametrize(
    ("erle_db", "mode"),
    [
        (35.0, DuplexMode.FULL),
        (18.0, DuplexMode.FULL),
        (17.9, DuplexMode.GATED),
        (6.0, DuplexMode.GATED),
        (5.9, DuplexMode.HALF),
        (0.0, DuplexMode.HALF),
        (-3.0, DuplexMode.HALF),
        (None, DuplexMode.GATED),
    ],
)
def test_auto_duplex_follows_the_measured_echo_reduction(erle_db: float | None, mode: DuplexMode) -> None:
    """Good cancellation gives FULL, poor GATED, none HALF; unmeasured starts GATED."""
    decision = choose_duplex(CONFIG, erle_db)
    assert decision.mode is mode
    assert decision.reason
    assert str(decision).startswith(mode.value)


def test_duplex_without_a_canceller_is_half() -> None:
    """No canceller (or echo_cancel off) always means HALF, whatever was configured."""
    assert choose_duplex(CONFIG, 40.0, canceller=False).mode is DuplexMode.HALF
    off = dataclasses.replace(CONFIG, echo_cancel=False, duplex="full")
    assert choose_duplex(off, 40.0).mode is DuplexMode.HALF


@pytest.mark.parametrize("duplex", ["full", "gated", "half"])
def test_configured_duplex_is_obeyed(duplex: Literal["full", "gated", "half"]) -> None:
    """A configured mode wins over the measurement."""
    cfg = dataclasses.replace(CONFIG, duplex=duplex)
    assert choose_duplex(cfg, 0.0).mode.value == duplex
    assert choose_duplex(cfg, 50.0).reason == "configured"


def test_no_barge_in_over_a_long_echo_only_reply() -> None:
    """Seventy seconds of the device's own voice through the room never barges in."""
    reference = reply(70.0)
    run = run_scene(mix(reference=reference, room=Room()), reference, CONFIG, rearm=True)
    assert run.barge_ins == []
    assert run.erle_db is not None
    assert run.erle_db >= CONFIG.full_duplex_erle_db  # so most of it ran in FULL duplex


def _interruptions() -> list[tuple[str, int, Run]]:
    """Each of USER_PHRASES spoken over a reply, 3 s in: (phrase, its first sound's position, the run).

    A previous reply has warmed the canceller up, as in a running daemon; each phrase has its own room
    (delay, response) and level.
    """
    warm = 8 * RATE_HZ
    out = []
    for i, phrase in enumerate(USER_PHRASES):
        reference = np.concatenate([reply(7.0, first=i), np.zeros(RATE_HZ, np.int16), reply(8.0, first=i + 2)])
        user = speech(phrase, USER_VOICE)
        at = warm + 3 * RATE_HZ + i * 2400
        near = place(user, at=at, n=reference.size, gain_db=-6.0 + (i % 4 - 2))
        mic = mix(reference=reference, room=Room(delay_ms=20 + 4 * i, seed=i), near=near)
        out.append((phrase, at + speech_onset(user), run_scene(mic, reference, CONFIG, start_position=warm)))
    return out


def test_user_is_heard_over_the_echo() -> None:
    """A different voice talking over the reply barges in, at its onset, in at least 10 of 12 trials."""
    results = [(phrase, truth, run.barge_ins) for phrase, truth, run in _interruptions()]
    onset_errors_ms = [(b[0] - t) * 1000 / RATE_HZ for _, t, b in results if b]
    summary = f"onset errors (ms): {onset_errors_ms}; results: {results}"
    assert len(onset_errors_ms) >= 10, summary
    # Never before the user started (that would be the echo), and within the first word.
    assert all(-50 <= e <= 500 for e in onset_errors_ms), summary
    assert all(len(b) <= 1 for _, _, b in results), summary


@pytest.mark.parametrize(
    ("delay_ms", "gain_db", "rt60_ms"), [(20.0, -6.0, 350.0), (45.0, -2.0, 150.0), (30.0, 0.0, 300.0)]
)
def test_no_barge_in_over_a_loudspeaker_in_a_room(delay_ms: float, gain_db: float, rt60_ms: float) -> None:
    """A minute of the device's own voice through a soft-clipping loudspeaker and a reverberant room.

    The harder echo path (the file backend's and the PulseAudio room's): the residual's nonlinear
    part is what a linear filter cannot remove, and the detector must not take it for a user.
    """
    from earshot.audio.room import EchoPath

    reference = reply(60.0, first=3)
    room = EchoPath(rate_hz=RATE_HZ, delay_ms=delay_ms, gain_db=gain_db, rt60_ms=rt60_ms, drive_db=6.0)
    rng = np.random.default_rng(int(delay_ms))
    noise = rng.standard_normal(reference.size) * 32768.0 * 10 ** (-62 / 20)
    heard = np.concatenate([room.process(reference[i : i + 160]) for i in range(0, reference.size, 160)])[
        : reference.size
    ]
    mic = np.clip(np.round(heard + noise), -32768, 32767).astype(np.int16)
    run = run_scene(mic, reference, CONFIG, rearm=True)
    assert run.barge_ins == []
    assert run.erle_db is not None


def test_speech_in_the_hold_off_is_not_a_barge_in() -> None:
    """Speech inside the hold-off after playback starts is ignored; speech after it counts from then on."""
    user = speech("no no no, stop talking right now please", USER_VOICE)
    det = BargeInDetector(dataclasses.replace(CONFIG, holdoff_ms=1000, duplex="full"))
    det.start(RATE_HZ, erle_db=30.0)
    onset = _feed(det, user, margin_db=30.0, erle=30.0)
    assert onset is not None
    assert onset >= 2 * RATE_HZ
    det = BargeInDetector(dataclasses.replace(CONFIG, holdoff_ms=0, duplex="full"))
    det.start(RATE_HZ, erle_db=30.0)
    early = _feed(det, user, margin_db=30.0, erle=30.0)
    assert early is not None
    assert early < onset


def test_settling_frames_are_held_off_like_the_start_of_a_reply() -> None:
    """While the canceller says its new pairing is not aligned yet (settling), no speech counts; after it, it does."""
    user = speech("no no no, stop talking right now please", USER_VOICE)
    det = BargeInDetector(dataclasses.replace(CONFIG, holdoff_ms=0, duplex="full"))
    det.start(RATE_HZ, erle_db=30.0)
    settle_until = RATE_HZ + RATE_HZ // 2  # the first half second of the phrase
    onset = None
    for pos in range(0, user.size - 160, 160):
        chunk = user[pos : pos + 160]
        level = 10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) / 32768.0**2 + 1e-12)
        frame = dataclasses.replace(
            _frame(cleaned=level, residual=level - 30.0, erle=30.0), settling=pos + RATE_HZ < settle_until
        )
        event = det.process(chunk, chunk, frame, pos + RATE_HZ)
        if event is not None:
            onset = event.position
            break
    assert onset is not None
    assert onset >= settle_until


def test_half_duplex_never_barges_in_and_mutes_the_mic() -> None:
    """In HALF duplex the detector stays silent and reports the microphone muted while speaking."""
    det = BargeInDetector(dataclasses.replace(CONFIG, duplex="half"))
    decision = det.start(0, erle_db=40.0)
    assert decision.mode is DuplexMode.HALF
    assert not det.mic_open
    user = speech("stop stop stop please stop", USER_VOICE)
    frame = _frame(cleaned=-20.0, residual=-80.0, erle=40.0)
    for pos in range(0, user.size - 160, 160):
        assert det.process(user[pos : pos + 160], user[pos : pos + 160], frame, pos + RATE_HZ) is None
    det.stop()
    assert det.mic_open


def _frame(*, cleaned: float, residual: float, erle: float | None) -> EchoFrame:
    return EchoFrame(
        mic_dbfs=cleaned,
        cleaned_dbfs=cleaned,
        reference_dbfs=-20.0,
        echo_dbfs=residual + (erle or 0.0),
        residual_echo_dbfs=residual,
        noise_floor_dbfs=-90.0,
        erle_db=erle,
        reference_active=True,
        bypassed=False,
    )


def _feed(det: BargeInDetector, pcm: np.ndarray, *, margin_db: float, erle: float | None) -> int | None:
    """Feed real speech with frames saying the cleaned level is ``margin_db`` over the residual echo."""
    for pos in range(0, pcm.size - 160, 160):
        chunk = pcm[pos : pos + 160]
        level = 10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) / 32768.0**2 + 1e-12)
        event = det.process(chunk, chunk, _frame(cleaned=level, residual=level - margin_db, erle=erle), pos + RATE_HZ)
        if event is not None:
            return event.position
    return None


def test_gated_duplex_needs_clearly_louder_speech() -> None:
    """GATED barges in only when the speech stands energy_margin_db over the residual echo; FULL needs less."""
    user = np.concatenate([np.zeros(1600, np.int16), speech("wait, stop there please", USER_VOICE)])
    gated = dataclasses.replace(CONFIG, duplex="gated")
    for margin, expected in ((9.0, False), (CONFIG.energy_margin_db + 1.0, True)):
        det = BargeInDetector(gated)
        det.start(0, erle_db=10.0)
        assert (_feed(det, user, margin_db=margin, erle=10.0) is not None) is expected
    det = BargeInDetector(dataclasses.replace(CONFIG, duplex="full"))
    det.start(0, erle_db=30.0)
    onset = _feed(det, user, margin_db=9.0, erle=30.0)
    assert onset is not None
    assert onset >= RATE_HZ + 1600 - 160


def test_quiet_speech_under_the_residual_echo_is_not_a_barge_in() -> None:
    """Speech-like frames that the residual echo explains never count, even in FULL duplex."""
    user = speech("wait, stop there please", USER_VOICE)
    det = BargeInDetector(dataclasses.replace(CONFIG, duplex="full"))
    det.start(0, erle_db=30.0)
    assert _feed(det, user, margin_db=0.0, erle=30.0) is None


def test_auto_duplex_upgrades_mid_reply_once_measured() -> None:
    """The first reply starts GATED and moves to FULL once the canceller reports a good ERLE."""
    det = BargeInDetector(CONFIG)
    assert det.start(0, erle_db=None).mode is DuplexMode.GATED
    silence = np.zeros(160, np.int16)
    modes = []
    for pos, erle in enumerate((10.0, 25.0, 16.0, 2.0), start=1):
        det.process(silence, silence, _frame(cleaned=-90.0, residual=-70.0, erle=erle), pos * 160)
        modes.append(det.duplex.mode)
    # Up at 18 dB, down only below 15 dB (hysteresis), and never HALF mid-reply.
    assert modes == [DuplexMode.GATED, DuplexMode.FULL, DuplexMode.FULL, DuplexMode.GATED]
    assert det.mic_open


def test_detector_is_quiet_when_not_speaking_and_after_a_barge_in() -> None:
    """Unarmed, or once it has fired, the detector returns nothing until the next start."""
    user = speech("stop, stop, stop, stop", USER_VOICE)
    det = BargeInDetector(dataclasses.replace(CONFIG, duplex="full"))
    assert _feed(det, user, margin_db=30.0, erle=30.0) is None
    det.start(0, erle_db=30.0)
    assert _feed(det, user, margin_db=30.0, erle=30.0) is not None
    assert not det.armed
    assert _feed(det, user, margin_db=30.0, erle=30.0) is None


def test_odd_chunks_are_not_speech() -> None:
    """Wrongly sized chunks and a missing echo frame never crash the detector."""
    det = BargeInDetector(dataclasses.replace(CONFIG, duplex="full"))
    det.start(0, erle_db=30.0)
    for pcm in (np.zeros(0, np.int16), np.ones(7, np.int16), np.ones(480, np.int16)):
        assert det.process(pcm, pcm, None, 10 * RATE_HZ) is None


def test_full_duplex_tests_against_the_peak_bound_once_measured() -> None:
    """Speech well over the average residual prediction but under the measured peak bound is echo."""
    user = np.concatenate([np.zeros(1600, np.int16), speech("wait, stop there please", USER_VOICE)])

    def feed(bound_margin: float) -> int | None:
        det = BargeInDetector(dataclasses.replace(CONFIG, duplex="full"))
        det.start(0, erle_db=30.0)
        for pos in range(0, user.size - 160, 160):
            chunk = user[pos : pos + 160]
            level = 10 * np.log10(np.mean(chunk.astype(np.float64) ** 2) / 32768.0**2 + 1e-12)
            frame = dataclasses.replace(
                _frame(cleaned=level, residual=level - 20.0, erle=30.0), residual_peak_dbfs=level - bound_margin
            )
            event = det.process(chunk, chunk, frame, pos + RATE_HZ)
            if event is not None:
                return event.position
        return None

    assert feed(0.0) is None  # 20 dB over the average, at the bound: the residual's own swing
    assert feed(6.0) is not None


def _underrunning_reply(*, sounding: bool) -> tuple[list[float], int]:
    """A reply the device plays with gaps, its reference handed over as the sink does; the detector judges it.

    The speaker underruns for 60 ms after every 200 ms of the reply from 1 s on (a core too slow for its
    buffer). The sink hands over what it wrote, up to 80 ms ahead of the device, and nothing for a gap,
    so the reference falls behind its echo by the gaps once they pass that lead. ``sounding`` is what
    the canceller is told (``Playback.active``). Returns the barge-in onsets (s) and the chunks marked
    reference-short.
    """
    audio = reply(8.0)
    first, step, gap, lead = RATE_HZ, RATE_HZ // 5, RATE_HZ * 60 // 1000, RATE_HZ * 80 // 1000
    pieces: list[np.ndarray] = []
    starts: list[tuple[int, int, int]] = []  # (played position, reply position, length) of each piece
    played = taken = 0
    while taken < audio.size:
        n = min(first if taken == 0 else step, audio.size - taken)
        starts.append((played, taken, n))
        pieces.append(audio[taken : taken + n])
        played, taken = played + n, taken + n
        if taken < audio.size:
            pieces.append(np.zeros(gap, dtype=np.int16))
            played += gap
    out = np.concatenate(pieces)
    mic = mix(reference=out, room=Room(seed=3))
    det = BargeInDetector(CONFIG)
    ec = EchoCanceller(filter_ms=CONFIG.echo_filter_ms)
    det.start(0, erle_db=None)
    handed = 0
    onsets: list[float] = []
    for pos in range(0, mic.size - 160, 160):
        device = max(r + min(pos - p, n) for p, r, n in starts if p <= pos)  # reply samples played by now
        upto = min(audio.size, device + lead)
        if upto > handed:
            ec.add_reference(audio[handed:upto])
            handed = upto
        chunk = mic[pos : pos + 160]
        cleaned = ec.process(chunk, near_end=det.user_speaking, sounding=sounding and pos < out.size)
        event = det.process(cleaned, chunk, ec.frame, pos)
        if event is not None:
            onsets.append(event.position / RATE_HZ)
            det.start(pos, erle_db=ec.erle_db)
    ec.close()
    return onsets, ec.reference_short_frames


def test_an_underrunning_speakers_echo_is_not_the_user() -> None:
    """Reference that falls behind a sound still playing leaves its echo unknown, not silent.

    Told nothing of the sound, the canceller takes the run-dry reference for silence, passes the echo
    through, and the reply interrupts itself (inside one Pi Zero core: 3 runs of 3 at the first reply).
    """
    blind, blind_short = _underrunning_reply(sounding=False)
    assert blind, "the scene no longer runs the reference dry: it tests nothing"
    assert blind_short == 0
    onsets, short = _underrunning_reply(sounding=True)
    assert onsets == []
    assert short > 0
