import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

_counter = itertools.count()

AlsaConf = Callable[[str], Path]


@pytest.fixture
def alsa_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AlsaConf:
    """Write an ALSA config (the standard one plus ``body``) under a fresh name and point alsa-lib at it.

    alsa-lib caches its configuration by file name and mtime (to the second), so every call gets a new name.
    """

    def write(body: str) -> Path:
        path = tmp_path / f"asound-{os.getpid()}-{next(_counter)}.conf"
        path.write_text("</usr/share/alsa/alsa.conf>\n" + body)
        monkeypatch.setenv("ALSA_CONFIG_PATH", str(path))
        return path

    return write
