"""The audio backend factory: the devices ``audio.backend`` names (ALSA, or the file backend).

Apart from :mod:`earshot.audio.backend` (the interfaces and their data), so that a module that only
needs the types, the playback task for one, never reaches the device modules through it.
"""

from __future__ import annotations

from earshot.audio.backend import AudioSink, AudioSource
from earshot.config import AudioConfig

__all__ = ["open_audio"]


def open_audio(config: AudioConfig) -> tuple[AudioSource, AudioSink]:
    """Build the source and sink for ``config.backend``.

    Opening never blocks on a missing ALSA device: the device threads retry in the background and
    report it through ``status``.

    Returns:
        (source, sink). For the file backend both are views of one :class:`~earshot.audio.wavfile.FileAudio`.
    """
    if config.backend == "file":
        from earshot.audio.wavfile import FileAudio

        audio = FileAudio(config)
        return audio.source, audio.sink
    from earshot.audio.alsa import AlsaSink, AlsaSource

    return AlsaSource(config.input, reopen_max_s=config.reopen_max_s), AlsaSink(
        config.output, reopen_max_s=config.reopen_max_s
    )
