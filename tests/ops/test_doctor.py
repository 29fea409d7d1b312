"""``earshot doctor``: each native part tried in a real child process, the record, and the daemon obeying it.

The crash is real: a microWakeWord model whose TFLite flatbuffer is garbage makes TFLite's C code
segfault while loading it, in the child. The daemon, given the record, must never load it (if it did,
the test process running it would die).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from earshot import doctor
from earshot.config import load_config
from earshot.control import format_status
from earshot.doctor import Finding, interpret, refusals, subject
from tests.support.daemon import DEFAULT_GATE, run_daemon
from tests.support.speech import concat, read_wav, silence, synth, write_wav


def _config(tmp_path: Path, **extra: Any) -> Path:
    write_wav(tmp_path / "in.wav", silence(1.0), 16000)
    cfg: dict[str, Any] = {
        "audio": {
            "backend": "file",
            "input": {"file": str(tmp_path / "in.wav")},
            "output": {"file": str(tmp_path / "out.wav")},
        },
        "state_dir": str(tmp_path / "state"),
        "realtime": {"url": "ws://127.0.0.1:9/v1/realtime"},
        **extra,
    }
    path = tmp_path / "earshot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _broken_model(tmp_path: Path) -> Path:
    """A microWakeWord manifest whose .tflite keeps its header and is garbage after it."""
    models = resources.files("pymicro_wakeword").joinpath("models")
    manifest = json.loads(models.joinpath("hey_jarvis.json").read_text())
    data = bytearray(models.joinpath("hey_jarvis.tflite").read_bytes())
    rng = random.Random(1)
    for i in range(64, len(data)):
        data[i] = rng.randrange(256)
    (tmp_path / "broken.tflite").write_bytes(bytes(data))
    manifest["model"] = "broken.tflite"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(manifest))
    return path


def _doctor(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earshot", "doctor", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


# -------------------------------------------------------------------------------------- pure


def test_a_child_killed_by_a_signal_is_a_crash_named_by_its_signal() -> None:
    f = interpret("wakeword", "microwakeword x", returncode=-signal.SIGSEGV, stdout=b"", stderr=b"", timeout_s=60)
    assert (f.status, f.detail) == ("crashed", "the process died of SIGSEGV while loading it")
    f = interpret("vad", "webrtcvad", returncode=-signal.SIGILL, stdout=b"", stderr=b"", timeout_s=60)
    assert f.status == "crashed"
    assert "SIGILL" in f.detail


def test_no_exit_in_time_is_a_hang() -> None:
    f = interpret("canceller", "speexdsp", returncode=None, stdout=b"", stderr=b"", timeout_s=12)
    assert f.status == "hung"
    assert "12 s" in f.detail


def test_the_answer_is_the_last_json_line_and_anything_else_is_a_failure() -> None:
    out = b'TFLite says hello\n{"status": "ok", "detail": "loaded"}\n'
    assert interpret("wakeword", "s", returncode=0, stdout=out, stderr=b"", timeout_s=1).status == "ok"
    f = interpret("wakeword", "s", returncode=1, stdout=b"not json", stderr=b"Traceback\nImportError: x\n", timeout_s=1)
    assert (f.status, f.detail) == ("failed", "exit 1, no answer: ImportError: x")
    odd = b'{"status": "fine, thanks", "detail": "' + b"x" * 5000 + b'"}'
    f = interpret("wakeword", "s", returncode=0, stdout=odd, stderr=b"", timeout_s=1)
    assert f.status == "failed"  # an unknown status is not taken for ok
    assert len(f.detail) <= 300


def _record(cfg_path: Path, status: str, **over: Any) -> dict[str, Any]:
    cfg = load_config(cfg_path)
    finding = Finding("wakeword", subject("wakeword", cfg) or "", status, "the process died of SIGSEGV")
    return {**doctor.record_of([finding], 1_767_000_000.0), **over}


def test_only_a_crash_or_hang_of_the_same_subject_and_version_is_refused(tmp_path: Path) -> None:
    path = _config(tmp_path)
    cfg = load_config(path)
    assert set(refusals(_record(path, "crashed"), cfg)) == {"wakeword"}
    assert set(refusals(_record(path, "hung"), cfg)) == {"wakeword"}
    assert refusals(_record(path, "failed"), cfg) == {}  # a Python error is reported by the daemon itself
    assert refusals(_record(path, "ok"), cfg) == {}
    assert refusals(_record(path, "crashed", earshot="0.0.0"), cfg) == {}  # an upgrade may have fixed it
    record = _record(path, "crashed")
    (tmp_path / "other").mkdir()
    other = load_config(_config(tmp_path / "other", gate={"wakeword": {"model": "okay_nabu"}}))
    assert refusals(record, other) == {}  # another model was never tried
    for junk in (None, {}, {"findings": "x"}, {"earshot": "?", "findings": [1, None]}):
        assert refusals(junk, cfg) == {}


def test_the_record_round_trips_and_a_corrupt_one_is_no_record(tmp_path: Path) -> None:
    f = Finding("vad", "webrtcvad", "ok", "fine")
    doctor.save_record(tmp_path, doctor.record_of([f], 1_767_000_000.0))
    rec = doctor.load_record(tmp_path)
    assert rec is not None
    assert rec["findings"] == [{"name": "vad", "subject": "webrtcvad", "status": "ok", "detail": "fine"}]
    assert rec["time"] == "2025-12-29T09:20:00Z"
    (tmp_path / doctor.RECORD_NAME).write_text("{half")
    assert doctor.load_record(tmp_path) is None


def test_the_clock_before_2025_is_not_set() -> None:
    assert doctor._clock_check(0.0).status == "failed"
    assert doctor._clock_check(1_767_000_000.0).status in ("ok", "warning")


# ------------------------------------------------------------------------------ real children


def test_doctor_on_the_default_config_finds_every_part_working(tmp_path: Path) -> None:
    path = _config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = _doctor(path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rec = doctor.load_record(tmp_path / "state")
    assert rec is not None
    status = {f["name"]: f["status"] for f in rec["findings"]}
    assert status == {
        "wakeword": "ok",
        "vad": "ok",
        "canceller": "ok",
        "capture": "ok",
        "playback": "ok",
        "key": "missing",
        "clock": status["clock"],
        "state": "ok",
    }
    detail = {f["name"]: f["detail"] for f in rec["findings"]}
    assert "NumpySilero" in detail["vad"]
    assert status["clock"] in ("ok", "warning")


def test_a_native_crash_in_the_engine_is_caught_in_its_child_and_recorded(tmp_path: Path) -> None:
    path = _config(tmp_path, gate={"wakeword": {"model": str(_broken_model(tmp_path))}})
    done = _doctor(path, "--json")
    assert done.returncode == 1
    rec = json.loads(done.stdout)
    wake = next(f for f in rec["findings"] if f["name"] == "wakeword")
    assert wake["status"] == "crashed"
    assert "SIGSEGV" in wake["detail"] or "SIGABRT" in wake["detail"]
    assert {f["name"]: f["status"] for f in rec["findings"]}["vad"] == "ok"  # the rest still probed
    saved = doctor.load_record(tmp_path / "state")
    assert saved is not None
    assert saved["findings"] == rec["findings"]


def _spy(tmp_path: Path, main: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put an ``earshot`` package whose ``__main__`` is ``main`` first on the probe child's path."""
    spy = tmp_path / "spy" / "earshot"
    spy.mkdir(parents=True)
    (spy / "__init__.py").write_text("")
    (spy / "__main__.py").write_text(main)
    monkeypatch.setenv("PYTHONPATH", str(spy.parent))


def test_the_probe_child_never_sees_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The child's environment is the parent's without the key's sources: a probe that printed its
    # environment would show no key. Checked by running a probe child with a spy in its place.
    _spy(
        tmp_path,
        "import json, os\n"
        "names = ('OPENAI_API_KEY', 'CREDENTIALS_DIRECTORY')\n"
        "print(json.dumps({'status': 'ok', 'detail': ','.join(k for k in names if k in os.environ)}))\n",
        monkeypatch,
    )
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    f = doctor.probe("vad", "webrtcvad", tmp_path / "none.yaml", tmp_path, timeout_s=60)
    assert (f.status, f.detail) == ("ok", "")


def test_a_hung_child_is_killed_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _spy(tmp_path, "import threading\nthreading.Event().wait()\n", monkeypatch)
    f = doctor.probe("canceller", "echo canceller", tmp_path / "none.yaml", tmp_path, timeout_s=2)
    assert f.status == "hung"


# --------------------------------------------------------------------------------- the daemon


def test_the_daemon_does_not_load_an_engine_that_crashed_there(tmp_path: Path) -> None:
    # In a child process of its own: if the daemon loaded the broken model, the child would segfault.
    model = _broken_model(tmp_path)
    path = _config(tmp_path, gate={"mode": "wakeword", "wakeword": {"model": str(model)}})
    assert _doctor(path).returncode == 1
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-key", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-m", "earshot", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "not loading the wakeword" in run.stderr
    assert "SIGSEGV" in run.stderr


async def test_status_says_what_is_disabled_and_the_rest_still_runs(tmp_path: Path) -> None:
    from earshot.emulator import DefaultScript, Emulator, EmulatorOptions

    # The default engine recorded as crashed: the wake word is not heard, the button still engages.
    (tmp_path / "state").mkdir()
    cfg_path = _config(tmp_path, gate=DEFAULT_GATE)
    finding = Finding("wakeword", subject("wakeword", load_config(cfg_path)) or "", "crashed", "SIGSEGV")
    doctor.save_record(tmp_path / "state", doctor.record_of([finding], 1_767_000_000.0))
    wake, _ = read_wav(synth("hey jarvis, what time is it"))
    async with Emulator(EmulatorOptions(script=DefaultScript(replies=["Noon."]))) as emu:
        pcm = concat(silence(0.5), wake, silence(3.0))
        run = await run_daemon(tmp_path, pcm, url=emu.url, config={"gate": DEFAULT_GATE})
        sessions = len(emu.sessions)
    assert run.exit_code == 0
    assert set(run.daemon.disabled) == {"wakeword"}
    assert "crashed in earshot doctor" in run.daemon.disabled["wakeword"]
    status = run.daemon.status()
    assert status["disabled"] == run.daemon.disabled
    assert "wakeword OFF:   microwakeword hey_jarvis crashed" in format_status(status)
    assert not run.marks("engaged by")
    assert sessions == 0


def test_with_a_broker_configured_the_doctor_says_whether_the_mqtt_client_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from earshot.config import parse_config

    plain = parse_config("realtime: {model: gpt-realtime}\n")
    assert [f.name for f in doctor.host_checks(plain, {}, tmp_path, 1_800_000_000.0)] == ["key", "clock", "state"]
    cfg = parse_config("device: {id: hall}\nmqtt: {url: 'mqtt://broker.lan'}\n")
    found = doctor.host_checks(cfg, {}, tmp_path, 1_800_000_000.0)[-1]
    assert (found.name, found.subject, found.status) == ("mqtt", "mqtt://broker.lan as earshot/hall", "ok")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiomqtt" else real(name, *a))
    found = doctor.host_checks(cfg, {}, tmp_path, 1_800_000_000.0)[-1]
    assert found.status == "missing"
    assert "earshot[fleet]" in found.detail
