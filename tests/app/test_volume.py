"""The volume from outside (issue 19): the pure commands and state, and the control that applies it."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from earshot.errors import DaemonError, ToolError
from earshot.volume import Volume, VolumeState, gain_db, parse_command


@pytest.mark.parametrize(
    ("start", "command", "end"),
    [
        (VolumeState(50), "70", VolumeState(70)),
        (VolumeState(50), "70%", VolumeState(70)),
        (VolumeState(50), "up", VolumeState(60)),
        (VolumeState(95), "up", VolumeState(100)),
        (VolumeState(5), "down", VolumeState(0)),
        (VolumeState(50), "+15", VolumeState(65)),
        (VolumeState(50), "-80", VolumeState(0)),
        (VolumeState(50), "mute", VolumeState(50, True)),
        (VolumeState(50, True), "unmute", VolumeState(50)),
        (VolumeState(50, True), "up", VolumeState(60)),  # louder unmutes
        (VolumeState(50, True), " Mute ", VolumeState(50, True)),
    ],
)
def test_commands(start: VolumeState, command: str, end: VolumeState) -> None:
    assert parse_command(start, command) == end


@pytest.mark.parametrize("command", ["101", "loud", "", "0x10", "1e2", "50.5"])
def test_a_command_that_is_not_one_is_refused_in_words(command: str) -> None:
    with pytest.raises(DaemonError, match="volume"):
        parse_command(VolumeState(), command)


def test_the_curve_is_perceptual_and_mute_is_silence() -> None:
    assert gain_db(VolumeState(100)) == 0.0
    assert gain_db(VolumeState(50)) == pytest.approx(-12.04, abs=0.01)
    assert gain_db(VolumeState(0)) == -math.inf
    assert gain_db(VolumeState(80, True)) == -math.inf


@pytest.mark.parametrize(
    "data", [None, [], {"volume": "50"}, {"volume": 101}, {"volume": True}, {"volume": -1}, {"muted": True}]
)
def test_a_damaged_state_gives_the_default(data: Any) -> None:
    assert VolumeState.from_json(data) == VolumeState()


class _Sink:
    gain_db = -3.0


class _Mixer:
    def __init__(self) -> None:
        self.set: list[int] = []

    async def get_percent(self) -> int:
        return self.set[-1] if self.set else 100

    async def set_percent(self, percent: int) -> int:
        self.set.append(percent)
        return percent


def test_the_software_control_is_kept_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "volume.json"
    sink = _Sink()
    volume = Volume(sink, base_db=-3.0, path=path)
    assert asyncio.run(volume.command("50")) == {"volume": 50, "muted": False, "control": "software"}
    assert sink.gain_db == pytest.approx(-3.0 - 12.04, abs=0.01)
    asyncio.run(volume.command("mute"))
    assert sink.gain_db == -math.inf
    assert json.loads(path.read_text()) == {"volume": 50, "muted": True}
    again = _Sink()
    restarted = Volume(again, base_db=-3.0, path=path)
    asyncio.run(restarted.restore())
    assert again.gain_db == -math.inf
    assert asyncio.run(restarted.get_percent()) == 0  # what the model is told while muted
    assert asyncio.run(restarted.set_percent(40)) == 40  # the model's set_volume unmutes
    assert again.gain_db == pytest.approx(-3.0 + 40 * math.log10(0.4))


def test_the_mixer_control_moves_the_mixer_and_mutes_it_at_zero(tmp_path: Path) -> None:
    mixer = _Mixer()
    volume = Volume(None, base_db=0.0, mixer=mixer, path=tmp_path / "volume.json")
    asyncio.run(volume.command("70"))
    asyncio.run(volume.command("mute"))
    asyncio.run(volume.command("unmute"))
    assert mixer.set == [70, 0, 70]
    assert volume.report()["control"] == "mixer"


class _BrokenMixer(_Mixer):
    async def set_percent(self, percent: int) -> int:
        raise ToolError("mixer 'Master' on 'default': Unable to find simple control")


def test_a_failing_mixer_changes_nothing_and_does_not_stop_the_start(tmp_path: Path) -> None:
    volume = Volume(None, base_db=0.0, mixer=_BrokenMixer(), path=tmp_path / "volume.json")
    asyncio.run(volume.restore())  # logged, not raised: the daemon starts anyway
    with pytest.raises(ToolError):
        asyncio.run(volume.command("30"))
    assert volume.state == VolumeState()
    assert not (tmp_path / "volume.json").exists()
