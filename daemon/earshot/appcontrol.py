"""What operators and the system see of the daemon, and what they can do to it.

:class:`OperatorSide` is a base of :class:`~earshot.app.Daemon` (the supervisor, in two modules for
length): the STATUS= line and the status snapshot, the devices' state as it changes, the control
socket's commands (engage, cancel, mute, unmute, status, stop, timers), the push-to-talk button and mute switch,
SIGHUP's reload, and a changed credential file. Everything here runs on the daemon's loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from earshot.audio.backend import DeviceState, DeviceStatus
from earshot.config import Config, load_config
from earshot.engage import Phase
from earshot.errors import ConfigError, DaemonError, ToolError
from earshot.hooks import Hooks
from earshot.pipeline import PHASE_STATUS
from earshot.realtime.auth import credential_mtime

if TYPE_CHECKING:
    from earshot.mqttlink import MqttBridge
    from earshot.pipeline import Conversation
    from earshot.realtime.connection import Link
    from earshot.stats import Stats
    from earshot.systemd import Health, Notifier
    from earshot.timerservice import TimerService
    from earshot.volume import Volume

__all__ = ["OperatorSide"]

logger = logging.getLogger("earshot.app")


class OperatorSide:
    """Status, commands and reloads (see the module docstring)."""

    if TYPE_CHECKING:  # what the daemon itself provides
        config: Config
        config_path: Path | None
        environ: dict[str, str]
        notifier: Notifier
        conversation: Conversation | None
        stats: Stats | None
        hooks: Hooks | None
        link: Link | None
        timers: TimerService | None
        volume: Volume | None
        mqtt: MqttBridge | None
        disabled: dict[str, str]
        _source: Any
        _sink: Any
        _health: Health | None
        _device_lost_wall: dict[str, float]
        _discarded_seen: int
        _credential_mtime: float | None

        def _fire_hook(self, event: str, data: dict[str, Any]) -> None: ...

        def _kick_timers(self) -> None: ...

    def _status_text(self) -> str:
        """The STATUS= line: the phase (or muted, or resting), then every device that is not working."""
        conv = self.conversation
        phase = conv.phase if conv is not None else Phase.IDLE
        if conv is not None and conv.muted:
            text = "Microphone muted"
        else:
            text = PHASE_STATUS[phase]
            if conv is not None and conv.resting_reason and phase is Phase.IDLE:
                text = f"{text}; not connecting for now: {conv.resting_reason}"
        for role, device in (("input", self._source), ("output", self._sink)):
            status: DeviceStatus | None = getattr(device, "status", None)
            if status is None or status.state in (DeviceState.OK, DeviceState.CLOSED):
                continue
            lost = self._device_lost_wall.get(role)
            since = time.strftime("%H:%M:%S", time.localtime(lost)) if lost is not None else "start"
            what = "microphone" if role == "input" else "speaker"
            error = f" ({status.error[:80]})" if status.error else ""
            text += f"; {what} {status.device} {status.state.value} since {since}{error}"
        return text

    def _on_device_status(self, role: str, status: DeviceStatus) -> None:
        """A device opened, went missing or is being reopened (called on the loop by the device)."""
        if status.state in (DeviceState.OK, DeviceState.CLOSED):
            self._device_lost_wall.pop(role, None)
        else:
            self._device_lost_wall.setdefault(role, time.time())
        if self.stats is not None:
            self.stats.update_device(role, status, asyncio.get_running_loop().time())
        if role == "input" and self._health is not None:
            # While the microphone is away no frames can come: the watchdog keeps being fed.
            self._health.expecting_gap(status.state in (DeviceState.MISSING, DeviceState.REOPENING), time.monotonic())
        if role == "input":
            self._kick_timers()  # no chunks now (or again): the timer loop runs the deadlines meanwhile
        if role == "output" and status.state is DeviceState.OK:
            discarded = getattr(self._sink, "discarded_samples", 0)
            if discarded > self._discarded_seen and self.conversation is not None:
                # Something was said to nobody while the speaker was away: say so once it is back.
                logger.info("speaker back: %.1f s of audio was lost while it was away", discarded / 24000)
                self.conversation.play_earcon("offline", asyncio.get_running_loop().time())
            self._discarded_seen = discarded
        self.notifier.status(self._status_text())

    def _refresh_devices(self) -> None:
        """Copy the devices' status (xruns, overruns, state) into the stats (for status and metrics)."""
        if self.stats is None:
            return
        now = asyncio.get_running_loop().time()
        for role, device in (("input", self._source), ("output", self._sink)):
            status = getattr(device, "status", None)
            if status is not None:
                self.stats.update_device(role, status, now)

    def _check_credential(self) -> None:
        mtime = credential_mtime(self.config.realtime.auth, self.environ)
        if mtime != self._credential_mtime:
            self._credential_mtime = mtime
            logger.info("the credential changed: retrying at once")
            self._retry_now()

    def _retry_now(self) -> None:
        if self.conversation is not None:
            self.conversation.retry_now()
        if self.link is not None:
            self.link.wake_now()

    def _reload(self) -> None:
        """SIGHUP: reload the config; keep the old one when the new one is invalid; retry at once."""
        self.notifier.reloading()
        self._retry_now()
        if self.config_path is None:
            self.notifier.ready("Reload: no config file; retried the connection")
            return
        new: Config | None = None
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                logger.error("reload: %s", problem)
        finally:
            if new is None:
                # Whatever went wrong (a config error, or anything the parser let escape), systemd was
                # told RELOADING=1 and must hear READY=1 again, or it waits on a reload for ever.
                logger.error("reload failed: keeping the running configuration")
                self.notifier.ready("Reload failed: kept the running configuration")
        if new is None:
            return
        if new.audio != self.config.audio or new.gate != self.config.gate or new.realtime != self.config.realtime:
            logger.warning("reload: audio, gate and realtime changes take effect after a restart")
        self.config = dataclasses.replace(self.config, hooks=new.hooks, logging=new.logging, bargein=new.bargein)
        if self.hooks is not None:
            self.hooks = Hooks(new.hooks, stats=self.stats, env=self.environ)
        logger.info("configuration reloaded")
        self.notifier.ready(self._status_text())

    # ------------------------------------------------------------------ control socket

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        """Serve one control-socket command: engage, cancel, status, mute, unmute, stop, timers, volume, say."""
        conv = self.conversation
        if conv is None:
            raise DaemonError("starting up")
        now = asyncio.get_running_loop().time()
        if cmd == "engage":
            if conv.muted:
                raise DaemonError("muted: unmute first")
            ok = conv.engage(now, source="control")
            return {"engaged": ok, "phase": conv.phase.value}
        if cmd == "cancel":
            conv.cancel(now, "cancelled by earshot cancel")
            return {"phase": conv.phase.value}
        if cmd in ("mute", "unmute"):
            self._set_muted(cmd == "mute", now)
            return {"muted": conv.muted}
        if cmd == "status":
            return self.status()
        if cmd == "say":
            text, listen, interrupt = args.get("text"), args.get("listen", False), args.get("interrupt", False)
            if not isinstance(text, str) or not isinstance(listen, bool) or not isinstance(interrupt, bool):
                raise DaemonError('say: give {"text": "...", "listen": false, "interrupt": false}')
            try:
                place = conv.announce(text, now, listen=listen, interrupt=interrupt)
            except ValueError as exc:
                raise DaemonError(f"say: {exc}") from None
            return {"queued": place, "phase": conv.phase.value}
        if cmd == "follow":
            raise DaemonError("follow streams: use `earshot follow`")  # served by the control server itself
        if cmd == "volume":
            if self.volume is None:
                raise DaemonError("starting up")
            wanted = args.get("set")
            if wanted is None:
                return self.volume.report()
            if not isinstance(wanted, str | int) or isinstance(wanted, bool):
                raise DaemonError("volume: give 0-100, up, down, mute or unmute")
            try:
                return await self.volume.command(str(wanted))
            except ToolError as exc:  # the ALSA mixer failed: said, not an internal error
                raise DaemonError(f"volume: {exc}") from None
        if cmd == "timers":
            return {"timers": self.timers.snapshot() if self.timers is not None else []}
        if cmd == "stop":
            # What sounds stops: a ringing timer (through the core, as the wake word would), else the
            # engagement (its reply) in progress.
            timers = self.timers.snapshot() if self.timers is not None else []
            stopped = [t for t in timers if t["state"] == "ringing"]
            if stopped:
                conv.stop_ring(now, "earshot stop")
            elif conv.phase is not Phase.IDLE:
                conv.cancel(now, "stopped by earshot stop")
            return {"stopped": stopped, "phase": conv.phase.value}
        raise DaemonError(f"unknown command {cmd!r}")

    def _set_muted(self, muted: bool, now: float) -> None:
        """Privacy mute: the microphone path is closed (nothing reaches the gate or the uplink)."""
        conv = self.conversation
        assert conv is not None
        if conv.muted == muted:
            return
        conv.set_muted(muted, now)
        logger.info("microphone %s", "muted" if muted else "unmuted")
        self._fire_hook("muted", {"muted": muted})
        if self.stats is not None:
            self.stats.set_muted(muted)
        self.notifier.status(self._status_text())

    def _on_gpio(self, action: str) -> None:
        """A push-to-talk button or mute switch action (see :mod:`earshot.gpio`)."""
        conv = self.conversation
        if conv is None:
            return
        now = asyncio.get_running_loop().time()
        if action == "engage" and not conv.muted:
            conv.engage(now, source="button")
        elif action == "cancel":
            conv.cancel(now, "cancelled by the button")
        elif action == "end_turn":
            conv.end_turn(now)
        elif action in ("mute", "unmute"):
            self._set_muted(action == "mute", now)

    def status(self) -> dict[str, Any]:
        """The status snapshot (never contains the key)."""
        loop = asyncio.get_running_loop()
        self._refresh_devices()
        snap: dict[str, Any] = self.stats.snapshot(loop.time(), time.time()) if self.stats is not None else {}
        conv = self.conversation
        if conv is not None:
            snap["phase"] = conv.phase.value
            snap["muted"] = conv.muted
            if conv.bargein is not None:
                snap["duplex_reason"] = conv.bargein.duplex.reason
            if conv.resting_reason:
                snap["resting"] = conv.resting_reason
            gate, engine = conv.core.gate, conv.core.gate.engine
            snap["listening"] = {
                "wake_words": list(getattr(engine, "names", [engine.name])) if engine is not None else [],
                "stop_word": gate.stop_engine.name if gate.stop_engine is not None else None,
                "profile": conv.core.profile,
            }
        if self.timers is not None:
            snap["timers"] = self.timers.snapshot()
        if self.volume is not None:
            snap["volume"] = self.volume.report()
        if self.disabled:
            snap["disabled"] = dict(self.disabled)
        if self.mqtt is not None:
            snap["mqtt"] = self.mqtt.report()
        return snap
