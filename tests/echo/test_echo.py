"""The echo canceller on real speech through a synthetic room."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad

from earshot.audio.echo import EchoCanceller
from earshot.config import BargeInConfig
from earshot.gate.bargein import DuplexMode, choose_duplex
from tests.echo.scenes import RATE_HZ, Room, chunks, mix, reply


def cancel(mic: np.ndarray, reference: np.ndarray, *, filter_ms: int = 200) -> tuple[np.ndarray, EchoCanceller]:
    ec = EchoCanceller(filter_ms=filter_ms)
    out = []
    for _, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        out.append(ec.process(m))
    return np.concatenate(out), ec


def energy_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9))


@pytest.mark.parametrize(
    "room",
    [Room(delay_ms=20, seed=1), Room(delay_ms=40, seed=2), Room(delay_ms=60, seed=3, noise_dbfs=-55.0)],
    ids=["20ms", "40ms", "60ms-noisy"],
)
def test_erle_after_convergence(room: Room) -> None:
    """After convergence the echo is reduced by at least 20 dB, and the running estimate agrees."""
    reference = reply(30.0)
    mic = mix(reference=reference, room=room)
    cleaned, ec = cancel(mic, reference)
    settled = 10 * RATE_HZ
    true_erle = energy_db(mic[settled : cleaned.size]) - energy_db(cleaned[settled:])
    assert true_erle >= 20.0
    assert ec.erle_db is not None
    assert ec.erle_db >= 20.0
    assert abs(ec.erle_db - true_erle) < 6.0
    assert ec.erl_db is not None
    assert 0.0 < ec.erl_db < 20.0  # -6 dB gain through a unit-energy room response: a few dB of loss


def test_vad_rarely_fires_on_cancelled_echo() -> None:
    """webrtcvad mode 3 calls at most 1 % of echo-only cancelled chunks speech."""
    reference = reply(60.0)
    cleaned, _ = cancel(mix(reference=reference, room=Room()), reference)
    vad = webrtcvad.Vad(3)
    frames = [c for pos, (c,) in chunks(cleaned) if pos >= 5 * RATE_HZ]
    fired = sum(vad.is_speech(c.tobytes(), RATE_HZ) for c in frames)
    raw_fired = sum(vad.is_speech(c.tobytes(), RATE_HZ) for _, (c,) in chunks(mix(reference=reference, room=Room())))
    assert raw_fired > len(frames) // 2  # the uncancelled echo is speech to the VAD
    assert fired <= 0.01 * len(frames)


def test_bypass_passes_capture_untouched() -> None:
    """With no reference the canceller returns the microphone as is and never runs the filter."""
    rng = np.random.default_rng(0)
    ec = EchoCanceller(align_target_ms=None)  # a loud first reference would be held for alignment
    for _ in range(50):
        mic = rng.integers(-3000, 3000, 160).astype(np.int16)
        assert np.array_equal(ec.process(mic), mic)
    assert ec.processed_frames == 0
    assert ec.frame.bypassed
    assert not ec.active
    ec.add_reference(np.full(160, 8000, dtype=np.int16))
    ec.process(np.zeros(160, dtype=np.int16))
    assert ec.processed_frames == 1
    assert ec.active


def test_bypass_resumes_after_the_filter_span() -> None:
    """After playback ends the canceller keeps running over the echo tail, then bypasses."""
    ec = EchoCanceller(filter_ms=200, bypass_after_ms=500)
    ec.add_reference(reply(1.0))
    for _ in range(100):
        ec.process(np.zeros(160, dtype=np.int16))
    silent_chunks = 0
    while ec.active:
        ec.process(np.zeros(160, dtype=np.int16))
        silent_chunks += 1
        assert silent_chunks < 100
    assert 20 <= silent_chunks <= 60


def test_reference_underflow_is_zero_padded_and_counted() -> None:
    """Capture running ahead of the reference consumes zeros and counts them."""
    ec = EchoCanceller(align_target_ms=None)  # the FIFO alone (alignment would hold the loud chunks)
    ec.add_reference(np.full(1000, 5000, dtype=np.int16))
    for _ in range(7):
        assert ec.process(np.zeros(160, dtype=np.int16)).size == 160
    assert ec.reference_queued == 0
    assert ec.underflow_samples == 7 * 160 - 1000


def test_reference_short_while_sounding_is_marked_not_taken_for_silence() -> None:
    """A chunk without reference is marked only while its sound plays and after that sound's reference began."""
    ec = EchoCanceller(align_target_ms=None)  # the FIFO alone (alignment would hold the loud chunks)
    silence = np.zeros(160, dtype=np.int16)
    tone = (np.sin(np.arange(160) * 0.2) * 8000).astype(np.int16)
    ec.process(silence, sounding=True)  # the sound is queued, nothing of it played yet: no reference owed
    assert not ec.frame.reference_short
    for _ in range(3):
        ec.add_reference(tone)
        ec.process(silence, sounding=True)
        assert not ec.frame.reference_short
    dry = ec._bypass_after_frames + 10  # past bypass_after: still the sound's, never taken for silence
    for _ in range(dry):
        ec.process(silence, sounding=True)
        assert ec.frame.reference_short
    assert ec.reference_short_frames == dry
    ec.process(silence, sounding=False)  # the sound ended: a dry reference is silence again
    assert not ec.frame.reference_short
    ec.process(silence, sounding=True)  # a new sound, its reference not begun yet
    assert not ec.frame.reference_short
    ec.add_reference(tone)
    ec.process(silence, sounding=True)
    ec.reset()  # playback dropped: nothing more is owed
    ec.process(silence, sounding=True)
    assert not ec.frame.reference_short
    assert ec.reference_short_frames == dry


def test_late_reference_keeps_its_slots_instead_of_shifting_the_rest() -> None:
    """Reference that arrives after its capture chunks went by (zero-padded) is dropped, not queued behind."""
    ec = EchoCanceller(align_target_ms=None)  # the FIFO alone (alignment would hold the loud chunks)
    tone = (np.sin(np.arange(160) * 0.2) * 8000).astype(np.int16)
    for _ in range(5):  # playing: the canceller is active
        ec.add_reference(tone)
        ec.process(np.zeros(160, dtype=np.int16))
    for _ in range(2):  # two chunks go by before the device pointer moves
        ec.process(np.zeros(160, dtype=np.int16))
    assert ec.underflow_samples == 320
    ec.add_reference(np.concatenate([tone, tone, tone]))  # the late burst: chunks 6, 7 and 8
    ec.process(np.zeros(160, dtype=np.int16))
    assert ec.reference_queued == 0  # chunk 8 paired with its own samples; 6 and 7 were too late
    ec.add_reference(tone)
    ec.process(np.zeros(160, dtype=np.int16))
    assert ec.reference_queued == 0


def test_reference_overflow_drops_the_oldest() -> None:
    """A full reference FIFO drops its oldest samples and counts them."""
    ec = EchoCanceller(max_reference_ms=100)
    ec.add_reference(np.arange(1000, dtype=np.int16))
    ec.add_reference(np.arange(1000, 2000, dtype=np.int16))
    assert ec.reference_queued == 1600
    assert ec.dropped_reference_samples == 400
    ec.add_reference(np.zeros(5000, dtype=np.int16))
    assert ec.reference_queued == 1600
    assert ec.dropped_reference_samples == 400 + 1600 + 5000 - 1600


def test_reference_fifo_keeps_play_order_across_wraparound() -> None:
    """Reference added in odd sizes comes out in order, one chunk per capture chunk."""
    reference = reply(4.0)
    room = Room(delay_ms=10, noise_dbfs=None)
    mic = mix(reference=reference, room=room)
    # Feed the reference in irregular pieces ahead of capture (like a sink's periods).
    ec = EchoCanceller(max_reference_ms=300)
    out = []
    fed = 0
    sizes = [441, 93, 1024, 160, 7]
    k = 0
    for pos, (m,) in chunks(mic):
        while fed < min(pos + 2000, reference.size):
            n = sizes[k % len(sizes)]
            k += 1
            ec.add_reference(reference[fed : fed + n])
            fed += n
        out.append(ec.process(m))
    cleaned = np.concatenate(out)
    # Ahead by up to ~2000 samples (125 ms): still inside the 200 ms filter, so it cancels.
    assert ec.dropped_reference_samples == 0
    assert energy_db(mic[2 * RATE_HZ : cleaned.size]) - energy_db(cleaned[2 * RATE_HZ :]) >= 15.0


def test_misaligned_reference_is_measured_as_poor_and_picks_half_duplex() -> None:
    """An echo path longer than the filter is not cancelled; the measurement says so and auto picks HALF."""
    reference = reply(20.0)
    mic = mix(reference=reference, room=Room(delay_ms=400.0, seed=4))
    _, ec = cancel(mic, reference, filter_ms=100)
    assert ec.erle_db is not None
    assert ec.erle_db < BargeInConfig().gated_erle_db
    assert choose_duplex(BargeInConfig(), ec.erle_db).mode is DuplexMode.HALF


def test_erle_unknown_before_any_playback() -> None:
    """Nothing is reported before echo-only audio was measured."""
    ec = EchoCanceller()
    for _ in range(300):
        ec.process(np.zeros(160, dtype=np.int16))
    assert ec.erle_db is None
    assert ec.erl_db is None
    assert ec.frame.erle_db is None


def test_near_end_chunks_stay_out_of_the_measurement() -> None:
    """Chunks flagged as near-end speech do not change the ERLE estimate."""
    reference = reply(12.0)
    mic = mix(reference=reference, room=Room())
    ec = EchoCanceller()
    for _, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        ec.process(m)
    before = ec.erle_db
    # Quiet chunks that the energy double-talk test would not catch: only the flag keeps them out.
    quiet = np.zeros(160, dtype=np.int16)
    for _ in range(200):
        ec.add_reference(reference[RATE_HZ : RATE_HZ + 160])
        ec.process(quiet, near_end=True)
    assert ec.erle_db == before
    for _ in range(200):
        ec.add_reference(reference[RATE_HZ : RATE_HZ + 160])
        ec.process(quiet)
    assert ec.erle_db != before


def test_odd_input_never_crashes() -> None:
    """Short, long, float and empty chunks come back as 160 int16 samples."""
    ec = EchoCanceller()
    ec.add_reference(np.ones((300, 1), dtype=np.float64) * 4000.0)  # type: ignore[arg-type]  # odd input on purpose
    ec.add_reference(np.array([], dtype=np.int16))
    for mic in (np.zeros(100, np.int16), np.ones(500, np.int16), np.full(160, 1e9), np.array([], np.int16)):
        out = ec.process(mic)
        assert out.dtype == np.int16
        assert out.size == 160
    ec.close()
    assert ec.process(np.ones(160, np.int16)).size == 160


def test_peak_bound_holds_on_unseen_echo_where_the_average_prediction_does_not() -> None:
    """The residual-peak bound learned on one reply is exceeded by few frames of the next; the average is not a bound.

    Only frames whose cleaned level stands above the noise floor count (the ones a VAD could take for
    speech). The average prediction (``residual_echo_dbfs``) is crossed by a good share of them,
    which is what made the device barge in on itself; the peak bound by about its percentile.
    """
    first, second = reply(20.0, first=0), reply(20.0, first=3)
    reference = np.concatenate([first, second])
    mic = mix(reference=reference, room=Room(delay_ms=20, seed=4))
    ec = EchoCanceller()
    over_peak = over_average = counted = 0
    for pos, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        ec.process(m)
        f = ec.frame
        if pos < first.size:
            continue
        assert f.residual_peak_dbfs is not None  # measured on the first reply
        if f.reference_active and f.cleaned_dbfs >= f.noise_floor_dbfs + 6.0:
            counted += 1
            over_peak += f.cleaned_dbfs > f.residual_peak_dbfs
            over_average += f.cleaned_dbfs > f.residual_echo_dbfs + 3.0
    assert counted > 500
    assert over_peak <= 0.05 * counted
    assert over_average >= 3 * max(over_peak, 1)
    assert ec.peak_gap_db is not None
    assert ec.peak_gap_db > 0.0


def test_peak_gap_needs_echo_only_frames_and_ignores_near_end() -> None:
    """No gap before enough converged echo-only frames; near-end chunks never move it."""
    reference = reply(12.0)
    mic = mix(reference=reference, room=Room())
    ec = EchoCanceller()
    seen_none_while_active = False
    for _, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        ec.process(m)
        if ec.frame.reference_active and ec.peak_gap_db is None:
            seen_none_while_active = True
            assert ec.frame.residual_peak_dbfs is None
    assert seen_none_while_active
    before = ec.peak_gap_db
    assert before is not None
    loud = (np.sin(np.arange(160) * 0.3) * 20000).astype(np.int16)  # far louder than any echo
    for _ in range(400):
        ec.add_reference(reference[RATE_HZ : RATE_HZ + 160])
        ec.process(loud, near_end=True)
    assert ec.peak_gap_db == before
    for _ in range(400):
        ec.add_reference(reference[RATE_HZ : RATE_HZ + 160])
        ec.process(loud)
    assert ec.peak_gap_db is not None
    assert ec.peak_gap_db != before  # unflagged, the same chunks do enter it


def _no_echo_scene(
    reference: np.ndarray, user_until: int, **canceller: object
) -> tuple[np.ndarray, np.ndarray, EchoCanceller]:
    """A user talking over what plays, into a microphone that does not hear the speaker; reference handed
    only while something plays (as both sinks do), near_end while the user talks (as the core says)."""
    from tests.echo.scenes import speech

    user = speech("hey jarvis, what is the weather like tomorrow", "rms")
    mic = np.random.default_rng(0).standard_normal(reference.size) * 3.0  # a quiet room, no echo path at all
    mic[: user.size] += user
    mic16 = np.clip(mic, -32768, 32767).astype(np.int16)
    ec = EchoCanceller(**canceller)  # type: ignore[arg-type]
    cleaned = []
    for pos, (m, ref) in chunks(mic16, reference):
        if ref.any():
            ec.add_reference(ref)
        cleaned.append(ec.process(m, near_end=pos < min(user.size, user_until)))
    return mic16, np.concatenate(cleaned), ec


def _rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def test_a_cue_the_user_talked_over_teaches_the_filter_nothing() -> None:
    """The user talks over the wake earcon, no echo path: the reply then comes out of a silent microphone silent.

    Run through the filter, that double talk taught it the user's voice as the earcon's echo: it then
    subtracted a "predicted echo" of the reply from a silent microphone (-53 dBFS, peaks of 512 LSB, out of
    -82 dBFS), loud enough for the barge-in detector to take for the user, and the reply interrupted itself.
    """
    from earshot.audio.earcons import earcon

    wake = earcon("wake")
    reference = np.zeros(8 * RATE_HZ, np.int16)
    reference[: wake.size] = wake
    reply_at = 3 * RATE_HZ
    answer = reply(4.0)
    reference[reply_at : reply_at + answer.size] = answer
    mic, out, _ = _no_echo_scene(reference, user_until=reference.size)
    during = slice(reply_at + RATE_HZ // 2, reply_at + answer.size)
    assert _rms(out[during]) <= 1.5 * _rms(mic[during])
    assert int(np.abs(out[during]).max()) <= 64
    # and the user's words over the earcon went on as they were said
    assert np.array_equal(out[: wake.size], mic[: wake.size])


def test_a_diverged_filter_passes_the_microphone_through_and_starts_afresh() -> None:
    """A filter that learned the user's voice all the same (no alignment, no word of the double talk) never
    plays the reply into a silent microphone: its louder-than-input chunks go through raw, and it restarts.
    Without the guard the same scene comes out at -67 dBFS from a -82 dBFS microphone."""
    reference = reply(6.0)
    mic, out, ec = _no_echo_scene(reference, user_until=0, align_target_ms=None)
    during = slice(int(3.5 * RATE_HZ), reference.size)
    assert _rms(out[during]) <= 1.5 * _rms(mic[during])
    assert ec.filter_resets >= 1
    assert ec.diverged_frames >= ec.filter_resets


@pytest.mark.parametrize(
    "room",
    [Room(delay_ms=20, seed=1), Room(delay_ms=60, seed=3, noise_dbfs=-55.0)],
    ids=["20ms", "60ms-noisy"],
)
def test_the_systems_libspeexdsp_cancels_where_pyaec_has_no_wheel(room: Room) -> None:
    """Raspberry Pi OS armhf: no pyaec wheel, but Debian's libspeexdsp1 is there. The same canceller on
    it reduces the room's echo by 20 dB and more once converged (24-40 dB measured)."""
    reference = reply(30.0)
    mic = mix(reference=reference, room=room)
    ec = EchoCanceller(library="speexdsp")
    assert ec.library == "speexdsp"
    out = []
    for _, (m, r) in chunks(mic, reference):
        ec.add_reference(r)
        out.append(ec.process(m))
    cleaned = np.concatenate(out)
    settled = 10 * RATE_HZ
    assert energy_db(mic[settled : cleaned.size]) - energy_db(cleaned[settled:]) >= 20.0
    assert ec.erle_db is not None
    assert ec.erle_db >= 20.0
    ec.close()


def test_without_pyaec_the_canceller_falls_back_to_the_system_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from earshot.errors import AudioDeviceError

    monkeypatch.setitem(sys.modules, "pyaec", None)  # import pyaec raises ImportError, as on armhf
    assert EchoCanceller().library == "speexdsp"
    with pytest.raises(AudioDeviceError, match="pyaec unavailable"):
        EchoCanceller(library="pyaec")
