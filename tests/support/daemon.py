"""Run the real daemon (``earshot.app.Daemon``) in-process with the file backend.

``await run_daemon(tmp_path, input_pcm, url=emu.url, config={...})`` writes the input WAV and a
real YAML config (loaded through ``load_config``), runs the daemon until the input has ended and
the exchange finished (exit 0), and returns what came out: the speaker WAV on the input's clock,
the timeline, the stats and the exit code.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from earshot.app import Daemon
from earshot.config import load_config
from earshot.systemd import Notifier
from tests.support.speech import read_wav, write_wav

DEFAULT_GATE: dict[str, Any] = {"mode": "wakeword", "earcons": {"enabled": True}}
"""The gate as a plain install has it (wake word, earcons on), for tests that override BASE_CONFIG's."""

BASE_CONFIG: dict[str, Any] = {
    "audio": {"backend": "file"},
    "gate": {"mode": "vad", "follow_up_s": 1.0, "earcons": {"enabled": True}},
    "realtime": {"idle_close_s": 0.0, "reconnect": {"initial_s": 0.05, "max_s": 0.5}},
    "bargein": {"duplex": "auto"},
}


@dataclass
class DaemonRun:
    """What one run of the daemon produced."""

    exit_code: int
    output: NDArray[np.int16]
    """The speaker timeline at 24 kHz (same clock as the input)."""
    timeline: list[tuple[float, str]]
    daemon: Daemon
    config_path: Path

    def marks(self, text: str) -> list[str]:
        """Timeline entries containing ``text``."""
        return [what for _, what in self.timeline if text in what]


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


async def run_daemon(
    tmp_path: Path,
    input_pcm: NDArray[np.int16],
    *,
    url: str,
    config: dict[str, Any] | None = None,
    environ: dict[str, str | None] | None = None,
    timeout_s: float = 90.0,
    notifier: Notifier | None = None,
    during: Callable[[Daemon], Awaitable[None]] | None = None,
) -> DaemonRun:
    """Run the daemon on ``input_pcm`` (16 kHz mono) against the Realtime server at ``url``.

    ``environ`` adds to the daemon's environment; a None value removes the variable.
    ``during``, if given, runs beside the daemon (with it) while it runs: a test's operator.
    """
    in_wav = write_wav(tmp_path / "in.wav", input_pcm, 16000)
    out_wav = tmp_path / "out.wav"
    cfg = merge(
        BASE_CONFIG,
        {
            "audio": {"input": {"file": str(in_wav)}, "output": {"file": str(out_wav)}},
            "realtime": {"url": url},
            "state_dir": str(tmp_path / "state"),
            "control": {"socket": str(tmp_path / "control.sock")},
        },
    )
    cfg = merge(cfg, config or {})
    path = tmp_path / "earshot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    daemon = Daemon(
        load_config(path),
        config_path=path,
        environ={
            k: v
            for k, v in {"OPENAI_API_KEY": "sk-test-key", "HOME": str(tmp_path), **(environ or {})}.items()
            if v is not None  # None: not set at all
        },
        notifier=notifier or Notifier({}),
    )
    async with asyncio.timeout(timeout_s):
        if during is None:
            code = await daemon.run()
        else:
            code, _ = await asyncio.gather(daemon.run(), during(daemon))
    output, rate = read_wav(out_wav)
    assert rate == 24000
    timeline = list(daemon.conversation.timeline) if daemon.conversation is not None else []
    return DaemonRun(code, output, timeline, daemon, path)
