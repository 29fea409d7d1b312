"""ALSA capture and playback: the only package importing ``alsaaudio``.

- :mod:`~earshot.audio.alsa.common`: opening a PCM, the device thread's lifecycle (one thread per
  generation that only does blocking ``read``/``write``, reopen with backoff, stall watch), status;
- :mod:`~earshot.audio.alsa.source`: :class:`AlsaSource`, the microphone;
- :mod:`~earshot.audio.alsa.sink`: :class:`AlsaSink`, the loudspeaker;
- :mod:`~earshot.audio.alsa.listing`: :func:`list_devices` for ``earshot devices``.
"""

from __future__ import annotations

from earshot.audio.alsa.common import name_os_thread, probe_device
from earshot.audio.alsa.listing import DeviceInfo, list_devices
from earshot.audio.alsa.sink import AlsaSink
from earshot.audio.alsa.source import AlsaSource

__all__ = ["AlsaSink", "AlsaSource", "DeviceInfo", "list_devices", "name_os_thread", "probe_device"]
