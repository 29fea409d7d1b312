"""The duplex policy with no echo in the microphone (the canceller measures ERL as well as ERLE).

A run with no echo at all once went HALF ("echo reduction 6.0 dB < 6 dB"): with nothing to cancel,
the echo reduction is meaningless, and muting the microphone while speaking made barge-in impossible.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from earshot.audio.echo import EchoCanceller
from earshot.config import BargeInConfig
from earshot.gate.bargein import QUIET_ECHO_ERL_DB, BargeInDetector, DuplexMode, choose_duplex
from tests.support.speech import read_wav, synth

CONFIG = BargeInConfig()


def _run(mic: NDArray[np.int16], reference: NDArray[np.int16]) -> EchoCanceller:
    ec = EchoCanceller()
    for pos in range(0, min(mic.size, reference.size) - 160, 160):
        ec.add_reference(reference[pos : pos + 160])
        ec.process(mic[pos : pos + 160])
    return ec


def _reference() -> NDArray[np.int16]:
    speech, _ = read_wav(synth("the city is known for its museums, its cafes, and its long avenues"))
    return speech


def test_silent_microphone_measures_a_quiet_echo_path_and_picks_full() -> None:
    """Digital silence while the speaker plays: ERL very large, ERLE unknown, FULL duplex."""
    reference = _reference()
    ec = _run(np.zeros_like(reference), reference)
    assert ec.erl_db is not None
    assert ec.erl_db >= QUIET_ECHO_ERL_DB
    assert ec.frame.erl_db == ec.erl_db
    decision = choose_duplex(CONFIG, ec.erle_db, erl_db=ec.erl_db)
    assert decision.mode is DuplexMode.FULL, decision
    assert "quiet" in decision.reason


def test_room_noise_only_is_full_duplex_even_with_a_low_erle() -> None:
    """Only room noise in the microphone: the suppressor's few dB of "echo reduction" do not force HALF."""
    reference = _reference()
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(reference.size) * 10.0).astype(np.int16)  # about -70 dBFS
    ec = _run(noise, reference)
    assert ec.erl_db is not None
    assert ec.erl_db >= QUIET_ECHO_ERL_DB
    assert choose_duplex(CONFIG, 5.9).mode is DuplexMode.HALF  # what ERLE alone decided
    assert choose_duplex(CONFIG, ec.erle_db, erl_db=ec.erl_db).mode is DuplexMode.FULL


def test_a_real_echo_path_is_still_judged_by_its_echo_reduction() -> None:
    """Echo at -6 dB: the ERL is small, so the ERLE decides (poor cancellation still gates or mutes)."""
    reference = _reference()
    mic = (reference.astype(np.float32) * 0.5).astype(np.int16)
    ec = _run(mic, reference)
    assert ec.erl_db is not None
    assert 3.0 <= ec.erl_db <= 9.0
    assert choose_duplex(CONFIG, 10.0, erl_db=ec.erl_db).mode is DuplexMode.GATED
    assert choose_duplex(CONFIG, 3.0, erl_db=ec.erl_db).mode is DuplexMode.HALF
    assert choose_duplex(CONFIG, 25.0, erl_db=ec.erl_db).mode is DuplexMode.FULL


def test_detector_follows_a_quiet_echo_path_mid_reply() -> None:
    """Armed GATED before anything was measured, the detector goes FULL once the ERL shows no echo."""
    reference = _reference()
    det = BargeInDetector(CONFIG)
    assert det.start(0, erle_db=None, erl_db=None).mode is DuplexMode.GATED
    ec = EchoCanceller()
    silent = np.zeros(160, dtype=np.int16)
    for pos in range(0, reference.size - 160, 160):
        ec.add_reference(reference[pos : pos + 160])
        cleaned = ec.process(silent)
        assert det.process(cleaned, silent, ec.frame, pos) is None
    assert det.duplex.mode is DuplexMode.FULL, det.duplex


def test_configured_and_no_canceller_rules_still_win() -> None:
    """A quiet echo path does not override ``duplex: half`` nor the lack of a canceller."""
    assert choose_duplex(BargeInConfig(duplex="half"), None, erl_db=90.0).mode is DuplexMode.HALF
    assert choose_duplex(CONFIG, None, canceller=False, erl_db=90.0).mode is DuplexMode.HALF
