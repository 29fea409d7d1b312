"""Each new pairing of reference and capture is moved to where the converged filter works."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from earshot.audio.delay import estimate_delay
from earshot.audio.earcons import earcon
from earshot.audio.echo import EchoCanceller
from tests.echo.scenes import CHUNK, RATE_HZ, Room, mix, place, reply, speech, speech_onset


def energy_db(x: NDArray[np.float64]) -> float:
    return float(10 * np.log10(np.sum(x**2) + 1e-9))


def test_delay_of_speech_through_a_room_is_found_to_the_sample() -> None:
    reference = reply(0.6, first=2)
    room = Room(delay_ms=27.0, seed=4)
    est = estimate_delay(mix(reference=reference, room=room), reference, -CHUNK, 3200)
    assert est is not None
    assert est.lag == round(27.0 * RATE_HZ / 1000)
    assert est.confidence >= 8.0


def test_unrelated_speech_gives_no_confident_delay() -> None:
    ref = reply(0.6, first=1)
    other = speech("no, that is not what I asked", "rms")[: ref.size]
    est = estimate_delay(other, ref[: other.size], -CHUNK, 3200)
    assert est is not None
    assert est.confidence < 8.0


def test_silence_has_no_delay() -> None:
    assert estimate_delay(np.zeros(1600), np.zeros(1600), -CHUNK, 3200) is None
    assert estimate_delay(np.ones(1600), np.ones(1600), 10, 10) is None


def play(
    ec: EchoCanceller,
    reference: NDArray[np.int16],
    room: Room,
    *,
    lead_chunks: int = 3,
    user: NDArray[np.int16] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], list[bool]]:
    """One reply: the sink hands the reference ``lead_chunks`` ahead of capture (as ALSA hands the device
    buffer), then a second of silence with no reference (the sink idle). Returns mic, cleaned, settling.

    ``user``: speech from the reply's first sample on, its chunks marked ``near_end`` (the core marks
    the user's released speech running into the device's sound)."""
    near = None if user is None else place(user, at=0, n=reference.size)
    mic = mix(reference=reference, room=room, near=near)
    user_chunks = 0 if user is None else user.size // CHUNK
    n = reference.size // CHUNK
    ec.add_reference(reference[: lead_chunks * CHUNK])
    cleaned, settling = [], []
    for k in range(n):
        if k + lead_chunks < n:
            ec.add_reference(reference[(k + lead_chunks) * CHUNK : (k + lead_chunks + 1) * CHUNK])
        cleaned.append(ec.process(mic[k * CHUNK : (k + 1) * CHUNK], near_end=k < user_chunks).astype(np.float64))
        settling.append(ec.frame.settling)
    quiet = mix(reference=np.zeros(RATE_HZ, dtype=np.int16), room=room)
    for k in range(RATE_HZ // CHUNK):
        ec.process(quiet[k * CHUNK : (k + 1) * CHUNK])
    return mic[: n * CHUNK].astype(np.float64), np.concatenate(cleaned), settling


def first_words_erle(
    mic: NDArray[np.float64], cleaned: NDArray[np.float64], reference: NDArray[np.int16], settling: list[bool]
) -> float:
    """The 10th percentile of the echo reduction per 10 ms over the reply's first half second of loud
    reference, on the chunks the barge-in detector trusts (not settling): its worst moments."""
    loud = [k for k in range(reference.size // CHUNK) if np.abs(reference[k * CHUNK : (k + 1) * CHUNK]).max() > 3000]
    first = [k for k in loud if k < loud[0] + 50 and not settling[k]]
    per_chunk = [
        energy_db(mic[k * CHUNK : (k + 1) * CHUNK]) - energy_db(cleaned[k * CHUNK : (k + 1) * CHUNK]) for k in first
    ]
    return float(np.percentile(per_chunk, 10))


@pytest.mark.parametrize(
    ("second_delay_ms", "reverberant", "gain_db"),
    [(18.0, False, 6.0), (34.0, False, 4.0), (18.0, True, 8.0)],
    ids=["earlier", "later", "earlier-reverberant"],
)
def test_next_reply_is_aligned_and_cancelled_from_its_first_words(
    second_delay_ms: float, reverberant: bool, gain_db: float
) -> None:
    """A reply whose echo lies elsewhere behind its reference (a new pairing on a real device) is moved
    where the filter converged: its first words are cancelled as well as the end of the last reply."""
    first = reply(12.0, first=0)
    second = reply(3.0, first=3)
    results = {}
    for align in (20.0, None):
        ec = EchoCanceller(align_target_ms=align)
        play(ec, first, Room(delay_ms=40.0, seed=1, reverberant=reverberant))
        first_delay = ec.delay_samples
        mic, cleaned, settling = play(ec, second, Room(delay_ms=second_delay_ms, seed=1, reverberant=reverberant))
        results[align] = first_words_erle(mic, cleaned, second, settling)
        if align is not None:
            assert ec.alignments == 2
            assert ec.delay_samples is not None
            assert first_delay is not None
            # The same room's direct path, 40 ms then second_delay_ms behind the reference.
            moved = round((40.0 - second_delay_ms) * RATE_HZ / 1000)
            assert abs(first_delay - ec.delay_samples - moved) <= 1
            # Held (settling) from the first loud reference until aligned: a few chunks, then never again.
            held = [k for k, s in enumerate(settling) if s]
            assert 0 < len(held) <= 20  # 150 ms in this reverberant room, 60-70 ms on a plain delay
            assert held == list(range(held[0], held[0] + len(held)))
    assert results[20.0] >= results[None] + gain_db


def test_a_quiet_echo_path_is_not_held_for_alignment() -> None:
    """With no echo in the microphone the delay is never found: the hold gives up after 30 loud chunks."""
    ec = EchoCanceller()
    _, _, settling = play(ec, reply(3.0), Room(gain_db=-90.0))
    assert ec.alignments == 0
    assert 0 < sum(settling) <= 31


def test_a_sound_that_ends_before_it_is_aligned_releases_the_hold() -> None:
    """A short earcon (fewer loud chunks than alignment needs), then the sink keeps handing quiet
    reference: once a filter span has passed with nothing loud, the pairing stops settling. Left
    settling, the uplink guard held the capture until the next playback: the server heard nothing
    of the user's question and the engagement never ended."""
    ec = EchoCanceller()
    rng = np.random.default_rng(3)
    earcon = (rng.normal(0, 6000, 3 * CHUNK)).astype(np.int16)  # 30 ms: under the 4 loud chunks estimates need
    reference = np.concatenate([earcon, np.zeros(2 * RATE_HZ, dtype=np.int16)])
    mic = mix(reference=reference, room=Room(gain_db=-90.0))
    settling = []
    for k in range(reference.size // CHUNK):
        ec.add_reference(reference[k * CHUNK : (k + 1) * CHUNK])
        ec.process(mic[k * CHUNK : (k + 1) * CHUNK])
        settling.append(ec.frame.settling)
    assert any(settling[:5])  # it was held while the earcon could be aligned
    assert not any(settling[-50:])  # and released within the filter span after the earcon


def test_a_reply_that_follows_its_cue_quietly_is_still_aligned() -> None:
    """The end-of-turn earcon with the user's last word over it (so it is never aligned), a gap too
    short to start a new pairing, then a reply whose first 400 ms are under the loud level (a breath,
    the resampler's ramp): the PulseAudio room with earcons on.

    The quiet start counted as the end of the sound, and the pairing was left unaligned for the whole
    reply. The filter, converged where the last reply's echo was, cancelled none of this one's first
    words, and the device barged in on itself 0.3-0.5 s into every reply after the first (5 times in
    3 minutes). A quiet stretch while the sound goes on now re-arms the alignment, so the reply's own
    loud start is held, aligned and cancelled."""
    rng = np.random.default_rng(5)
    ec = EchoCanceller()
    play(ec, reply(12.0, first=0), Room(delay_ms=20.0, seed=1, reverberant=False))
    assert ec.alignments == 1
    cue = earcon("listening_end", rate_hz=RATE_HZ)
    breath = (rng.normal(0, 20, 40 * CHUNK)).astype(np.int16)  # -64 dBFS: under the loud level
    words = reply(3.0, first=3)
    reference = np.concatenate([cue, np.zeros(2 * CHUNK, dtype=np.int16), breath, words])
    user = speech("hold on please", "rms")[: cue.size + 24 * CHUNK]  # over the cue and past its echo
    mic, cleaned, settling = play(ec, reference, Room(delay_ms=85.0, seed=1, reverberant=False), user=user)
    assert ec.alignments == 2
    start = cue.size + 2 * CHUNK + breath.size
    words_settling = settling[start // CHUNK :]
    held = [k for k, s in enumerate(words_settling) if s]
    assert held  # the reply's loud start is held until aligned...
    assert held == list(range(held[0], held[0] + len(held)))  # ...once
    erle = first_words_erle(mic[start:], cleaned[start:], words, words_settling)
    assert erle >= 10.0, erle  # 11.9 dB; -2.8 dB (nothing cancelled) when the pairing stayed unaligned


def test_quiet_chunks_after_a_loud_stretch_add_no_evidence_for_a_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sound's loud stretch, then quiet reference while it goes on (the end-of-turn cue, then a reply's
    breath): a delay is estimated on new loud chunks only. Estimated again on each quiet chunk, the same
    loud chunks gave the same weak reading three times, and three readings were taken for agreement (in
    the PulseAudio room a cue came within one reading of being aligned 6 ms off the reply's echo, which
    leaves the reply's first words uncancelled)."""
    from earshot.audio import align
    from earshot.audio.delay import DelayEstimate
    from earshot.audio.echometer import FULL_SCALE_POWER, power

    loud_power = FULL_SCALE_POWER * 10.0 ** (-45.0 / 10.0)
    readings: list[int] = []

    def weak_reading(mic: NDArray[np.int16], ref: NDArray[np.int16], low: int, high: int) -> DelayEstimate:
        # Weak, and different with every loud chunk read (a tonal cue's scattered peaks).
        loud = sum(power(ref[k * CHUNK : (k + 1) * CHUNK]) >= loud_power for k in range(ref.size // CHUNK))
        readings.append(loud)
        return DelayEstimate(lag=400 + 37 * loud, confidence=6.5)

    monkeypatch.setattr(align, "estimate_delay", weak_reading)
    rng = np.random.default_rng(7)
    cue = rng.normal(0, 6000, 14 * CHUNK).astype(np.int16)  # an even count of loud chunks
    breath = rng.normal(0, 20, 15 * CHUNK).astype(np.int16)  # the sound goes on, under the loud level
    ec = EchoCanceller()
    play(ec, np.concatenate([cue, breath]), Room(delay_ms=30.0, reverberant=False))
    assert readings == [4, 6, 8, 10, 12, 14]  # one reading per second loud chunk, none on the quiet ones
    assert ec.alignments == 0


@pytest.mark.parametrize(("poor_chunks", "moves"), [(5, 0), (14, 1)])
def test_a_sub_millisecond_move_needs_a_long_poor_stretch(
    poor_chunks: int, moves: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A converged filter meets a few loud chunks it cancels poorly (here a noise burst over the echo), and the
    residual seems to say the echo moved by 10 samples: that is no output gap (never that short), and
    following it broke a filter cancelling 24.7 dB (the engaged bench's file room: the reply interrupted
    itself). A sub-millisecond move is followed only after more than 8 poor chunks in a row, as a pairing
    really put a few samples off cancels poorly chunk after chunk."""
    from earshot.audio.align import PairingAligner
    from earshot.audio.echometer import dbfs, power

    monkeypatch.setattr(PairingAligner, "_moved_to", lambda self, out, mic, ref, lag: lag + 10)
    reference = reply(8.0, first=0)
    mic = mix(reference=reference, room=Room(delay_ms=30.0, seed=1, reverberant=False)).astype(np.float64)
    loud = [
        k
        for k in range(reference.size // CHUNK)
        if k * CHUNK > 5 * RATE_HZ and dbfs(power(reference[k * CHUNK : (k + 1) * CHUNK])) > -30
    ]
    burst = loud[0]
    # A stretch of loud reference chunks in a row from the burst on, each one swamped by noise.
    rng = np.random.default_rng(11)
    for k in range(burst, burst + poor_chunks):
        mic[k * CHUNK : (k + 1) * CHUNK] += rng.normal(0, 8000, CHUNK)
    ec = EchoCanceller()
    n = reference.size // CHUNK
    ec.add_reference(reference[: 3 * CHUNK])
    for k in range(n):
        if k + 3 < n:
            ec.add_reference(reference[(k + 3) * CHUNK : (k + 4) * CHUNK])
        ec.process(np.clip(mic[k * CHUNK : (k + 1) * CHUNK], -32768, 32767).astype(np.int16))
        if k == burst - 1:
            assert ec._aligner.shifts == 0  # converged, nothing moved before the burst
        if k == burst + poor_chunks:
            break
    assert ec._aligner.shifts == moves


def _gap_scene(
    gap_ms: int, *, user: NDArray[np.int16] | None = None
) -> tuple[NDArray[np.int16], NDArray[np.int16], int]:
    """A 16 s reply whose output underran 8 s in: ``gap_ms`` of silence went out, then the rest, later by as much.

    A negative ``gap_ms`` is a skip: a sound server that underran drops what was written behind its read
    index, and the rest comes that much early. The reference is what the device was handed (the count
    pairing goes on), the microphone hears the output through a plain delay (the PulseAudio room's echo
    path), with the user's ``user`` over it 1.5 s after the gap if given. Returns (microphone, reference,
    the gap's position).
    """
    reference = reply(16.0)
    at = 8 * RATE_HZ
    gap = np.zeros(max(0, gap_ms) * RATE_HZ // 1000, np.int16)
    skip = max(0, -gap_ms) * RATE_HZ // 1000
    played = np.concatenate((reference[:at], gap, reference[at + skip :], np.zeros(skip, np.int16)))[: reference.size]
    near = None if user is None else place(user, at=at + 3 * RATE_HZ // 2, n=reference.size, gain_db=-3.0)
    mic = mix(reference=played, room=Room(reverberant=False, delay_ms=35.0), near=near)
    return mic, reference, at


@pytest.mark.parametrize(
    ("gap_ms", "switch"), [(10, "FOLLOW_MOVES"), (24, "FOLLOW_MOVES"), (-10, "FOLLOW_EARLIER"), (-20, "FOLLOW_EARLIER")]
)
def test_a_gap_or_a_skip_within_a_reply_is_followed_and_never_barges_in(
    gap_ms: int, switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap: the PulseAudio room on a loaded machine, 24 ms of silence in the output 0.5 s into a reply, the
    echo that much later behind its reference for the rest of it, and a barge-in 0.4 s later. A skip (a
    negative gap): the same room on an idle machine, and CI, where the sound server's stream underran and
    dropped what was written behind its read index, so the rest came early (3.6 ms, 1.3 s into a reply,
    then a barge-in). The canceller finds the echo's new place in the residual and moves the reference
    there; with ``switch`` off the device interrupts itself on the same scene."""
    from earshot.audio import align
    from earshot.config import BargeInConfig
    from tests.echo.scenes import run_scene

    mic, reference, at = _gap_scene(gap_ms)
    monkeypatch.setattr(align, switch, False)
    unfollowed = run_scene(mic, reference, BargeInConfig(), rearm=True)
    assert unfollowed.barge_ins, "the scene must show the failure it guards against"
    monkeypatch.setattr(align, switch, True)
    run = run_scene(mic, reference, BargeInConfig(), rearm=True)
    assert run.barge_ins == []
    moved = [i for i, f in enumerate(run.frames) if getattr(f, "settling", False) and i * CHUNK > RATE_HZ]
    echo_gap = at + 35 * RATE_HZ // 1000 + min(0, gap_ms) * RATE_HZ // 1000  # where it reaches the microphone
    assert moved
    assert echo_gap <= moved[0] * CHUNK <= echo_gap + 10 * CHUNK  # found within 10 chunks of it
    after = slice(at + RATE_HZ // 2, reference.size - RATE_HZ // 10)
    cleaned = run.cleaned[after].astype(np.float64)
    assert energy_db(mic[after].astype(np.float64)) - energy_db(cleaned) >= 25.0  # cancelled as before the gap


@pytest.mark.parametrize("gap_ms", [10, 24])
def test_a_second_gap_in_the_same_reply_is_followed_too(gap_ms: int) -> None:
    """After a move the echo lies where it was behind the moved reference, and the next move is measured
    from there: a device that underruns twice in a reply is followed twice. (Measured from the first
    move's new place instead, the second gap was taken for an echo not yet learned, and barged in.)"""
    from earshot.config import BargeInConfig
    from tests.echo.scenes import run_scene

    reference = reply(16.0)
    gap = np.zeros(gap_ms * RATE_HZ // 1000, np.int16)
    first, second = 8 * RATE_HZ, 12 * RATE_HZ
    played = np.concatenate((reference[:first], gap, reference[first:second], gap, reference[second:]))
    mic = mix(reference=played[: reference.size], room=Room(reverberant=False, delay_ms=35.0))
    run = run_scene(mic, reference, BargeInConfig(), rearm=True)
    assert run.barge_ins == []
    after = slice(second + RATE_HZ // 2, reference.size)
    cleaned = run.cleaned[after].astype(np.float64)
    assert energy_db(mic[after].astype(np.float64)) - energy_db(cleaned) >= 25.0  # cancelled after the second


def test_a_user_over_the_reply_is_not_taken_for_a_moved_echo() -> None:
    """Poorly cancelled chunks that are the user, not the echo: nothing moves, and the barge-in comes as it did."""
    from earshot.audio import align
    from earshot.config import BargeInConfig
    from tests.echo.scenes import run_scene

    user = speech("no, that is not what I asked", "rms")
    mic, reference, at = _gap_scene(0, user=user)
    run = run_scene(mic, reference, BargeInConfig())
    assert not any(getattr(f, "settling", False) for f in run.frames[RATE_HZ // CHUNK :])
    onset = at + 3 * RATE_HZ // 2 + speech_onset(user)
    assert len(run.barge_ins) == 1
    assert onset - 2 * CHUNK <= run.barge_ins[0] <= onset + RATE_HZ // 10
    align.FOLLOW_MOVES = False
    try:
        assert run_scene(mic, reference, BargeInConfig()).barge_ins == run.barge_ins
    finally:
        align.FOLLOW_MOVES = True


def test_the_canceller_output_lags_its_input_by_a_chunk_with_residual_suppression() -> None:
    """What the move's measure assumes: speexdsp's preprocessor hands each chunk out one chunk late, so
    the residual echo lies a chunk further behind the reference than the echo in the microphone."""
    rng = np.random.default_rng(1)
    near = (rng.standard_normal(300 * CHUNK) * 1000).astype(np.int16)
    reference = (rng.standard_normal(300 * CHUNK) * 3000).astype(np.int16)
    mic = np.clip(near + np.concatenate((np.zeros(320), reference[:-320] * 0.5)), -32768, 32767).astype(np.int16)
    for suppression, lag in ((True, CHUNK), (False, 0)):
        ec = EchoCanceller(residual_suppression=suppression, align_target_ms=None)
        out = []
        for k in range(0, mic.size, CHUNK):
            ec.add_reference(reference[k : k + CHUNK])
            out.append(ec.process(mic[k : k + CHUNK]))
        est = estimate_delay(np.concatenate(out)[-RATE_HZ:], near[-RATE_HZ:], -800, 800)
        assert est is not None
        assert est.lag == lag
        ec.close()
