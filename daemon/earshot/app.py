"""The supervisor: builds the parts from config, runs them in one TaskGroup, handles signals.

``serve(config)`` is what ``earshot run`` calls. Startup order: audio opened (a missing device
does not block: the source reopens it in the background), READY=1, then the tasks: capture →
:class:`~earshot.pipeline.Conversation`, playback, the Realtime link (connects only while
engaged), timers, the watchdog, the control socket and metrics.

Stopping: SIGTERM/SIGINT set a stop event; the TaskGroup is torn down, the connection closed
and the audio devices released within a bounded time, and the process exits 0. SIGHUP reloads
the config (RELOADING=1 … READY=1); an invalid new config keeps the old one and logs why.
With the file backend the daemon exits 0 when the input WAV has ended and the exchange in
progress has finished (reply played, or a timeout). Status, the control socket's commands, the
button and the reload are in :mod:`earshot.appcontrol` (a base of :class:`Daemon`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from earshot import __version__, children, doctor
from earshot.appcontrol import OperatorSide
from earshot.audio.backend import DeviceState
from earshot.audio.ledger import PlaybackFinished
from earshot.audio.playback import Playback
from earshot.capturefeed import CaptureFeed
from earshot.compose import build
from earshot.config import Config, device_labels
from earshot.control import ControlServer, answer, default_socket_path
from earshot.engage import Phase
from earshot.errors import EX_CONFIG, ConfigError
from earshot.feed import EventFeed
from earshot.gpio import GpioInputs
from earshot.hooks import Hooks
from earshot.metrics import MetricsExporter
from earshot.mqttlink import MqttBridge
from earshot.pipeline import HOOK_FOR_PHASE, Conversation
from earshot.process import bound_malloc
from earshot.realtime.auth import connection_secret, credential_mtime, headers_for
from earshot.realtime.connection import ConnectFn, Link, LinkDown
from earshot.realtime.outputs import ResponseDone, SessionReady
from earshot.realtime.session import build_session_config
from earshot.recordings import Recorder
from earshot.stats import Stats
from earshot.summary import engagement_summary
from earshot.systemd import Health, Notifier, run_watchdog
from earshot.timerservice import TIMERS_FILE, TimerService
from earshot.volume import Volume

__all__ = ["Daemon", "serve"]

logger = logging.getLogger(__name__)
_TIMER_MAX_S = 1.0
"""Longest sleep of the timer loop while it has work: deadlines while no capture runs, and the credential
file check while the daemon rests after an authentication failure."""
_TIMER_QUIET_S = 10.0
"""Its longest sleep otherwise: while capture delivers (its chunks run the deadlines) and nothing waits for a
credential. An idle event loop is woken for little else, and each wake-up costs a Pi core more than
the work it does; what makes the work come back (the microphone lost, a rest begun, the input ended)
wakes the timer loop at once (:meth:`Daemon._kick_timers`)."""


class _Stop(Exception):
    """Raised inside the TaskGroup to end it cleanly."""


def serve(config: Config, *, config_path: Path | None = None) -> int:
    """Run the daemon until SIGTERM (or, with the file backend, the end of the input). Returns the exit code.

    A configuration problem found while building the parts (e.g. the template wake-word engine with
    nothing enrolled) exits 78 like any config error, so systemd does not restart into it.
    """
    # Descendants of tools and hooks that escape (setsid, then their parent exits) come back to this
    # process instead of PID 1, so that each run's cleanup finds and kills them (earshot.children).
    children.become_subreaper()
    bound_malloc()  # again, for a caller that did not go through the CLI (idempotent)
    environ = dict(os.environ)  # the daemon's own copy: the key is read from it for every connection
    children.seal_secrets()
    try:
        return asyncio.run(Daemon(config, config_path=config_path, environ=environ).run())
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("%s", problem)
        return EX_CONFIG


def state_dir(config: Config, environ: dict[str, str] | None = None) -> Path:
    """Where state lives: ``state_dir``, else ``$STATE_DIRECTORY`` (systemd), else ~/.local/state/earshot."""
    env = os.environ if environ is None else environ
    if config.state_dir is not None:
        return config.state_dir
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "state" / "earshot"


class Daemon(OperatorSide):
    """One running earshot. Build with a config; :meth:`run` until stopped.

    Args:
        config: the validated configuration.
        config_path: where it came from (SIGHUP reloads it).
        notifier: sd_notify sender (default: from ``$NOTIFY_SOCKET``).
        environ: environment for credentials and paths (default ``os.environ``).
        audio: ``(source, sink)`` instead of the configured devices (see :func:`earshot.compose.build`).
        connect: opens the WebSocket instead of the default (see :func:`earshot.compose.build`).
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        environ: dict[str, str] | None = None,
        audio: tuple[Any, Any] | None = None,
        connect: ConnectFn | None = None,
    ) -> None:
        self.config = config
        self._audio = audio
        self._connect = connect
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.environ = dict(os.environ if environ is None else environ)
        self.conversation: Conversation | None = None
        self.stats: Stats | None = None
        self.disabled: dict[str, str] = {}
        """Native parts not loaded because they crashed in ``earshot doctor`` here (name -> why)."""
        self.hooks: Hooks | None = None
        self.link: Link | None = None
        self.timers: TimerService | None = None
        self.volume: Volume | None = None
        self.mqtt: MqttBridge | None = None
        """State and commands over the fleet's MQTT broker (``mqtt.url``), or None."""
        self._ducked = False
        self.feed = EventFeed()
        """What ``earshot follow`` streams: every hook event."""
        self._unduck_handle: asyncio.TimerHandle | None = None
        self._stop_event: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._tool_calls: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._credential_mtime: float | None = None
        self._playback: Playback | None = None
        self._source: Any = None
        self._sink: Any = None
        self._timer_kick = asyncio.Event()
        self._capture_ended = False
        self._health: Health | None = None
        self._device_lost_wall: dict[str, float] = {}
        self._discarded_seen = 0
        self.exit_code = 0

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until stopped; returns the process exit code. Cancelling is safe."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, f"signal {sig.name}")
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        cfg = self.config
        sdir = state_dir(cfg, self.environ)
        try:
            sdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("state directory %s unusable (%s): counters and enrolment are not kept", sdir, exc)
        self.stats = Stats(state_dir=sdir, now=loop.time(), now_wall=time.time())
        self.stats.prices = cfg.realtime.prices
        self.hooks = Hooks(cfg.hooks, stats=self.stats, env=self.environ)
        self.recorder = Recorder(cfg.recordings, sdir, stats=self.stats)
        # What crashed in `earshot doctor` on this machine is not loaded again (a segfault is uncatchable).
        self.disabled = doctor.refusals(doctor.load_record(sdir), cfg)
        self.timers = TimerService(
            cfg.timers,
            sdir / TIMERS_FILE,
            ring=self._ring,
            busy=lambda: self.conversation is None or not self.conversation.idle,
            on_hook=self._fire_hook,
            on_quiet=lambda: self.conversation.ring_ended() if self.conversation is not None else None,
            stats=self.stats,
        )
        parts = build(
            cfg,
            _DaemonApp(self),
            state_dir=sdir,
            environ=self.environ,
            stats=self.stats,
            audio=self._audio,
            connect=self._connect,
            refused=self.disabled,
            timers=self.timers,
        )
        source, sink = parts.source, parts.sink
        source.set_low_latency(False)  # idle: long capture periods until someone engages
        self._source = source
        health = Health(time.monotonic())
        self._health = health
        # A device that goes away is reported (STATUS=, status, metrics) and, for the microphone,
        # is a known gap for the watchdog: a restart cannot bring a USB microphone back.
        for role, device in (("input", source), ("output", sink)):
            if hasattr(device, "on_status"):
                device.on_status = functools.partial(self._on_device_status, role)
        playback = parts.playback
        self._playback = playback
        playback.on_sound = self._duck
        self._sink = sink
        self.tools = parts.tools
        self.volume = parts.volume
        self.link = parts.link
        conv = parts.conversation
        cap = cfg.gate.daily_cap_minutes
        if cap is not None:
            stats = self.stats
            conv.daily_cap_reached = lambda now: stats.connected_minutes_today(now, time.time()) >= cap
        self.conversation = conv
        self._credential_mtime = credential_mtime(cfg.realtime.auth, self.environ)
        control: ControlServer | None = ControlServer(
            default_socket_path(cfg.control, self.environ), cfg.control.group, self, feed=self.feed
        )
        metrics = MetricsExporter(
            cfg.metrics, self.stats, clock=loop.time, refresh=self._refresh_devices, device=device_labels(cfg.device)
        )
        try:
            await control.start()  # type: ignore[union-attr]
        except OSError as exc:
            logger.warning("control socket unavailable (%s): earshot engage/status will not reach this daemon", exc)
            control = None
        await metrics.start()
        if cfg.mqtt.url is not None:
            self.mqtt = MqttBridge(
                cfg,
                status=self.status,
                answer=functools.partial(answer, self),
                environ=self.environ,
                version=__version__,
            )
        self.notifier.ready(self._status_text())
        logger.info(
            "earshot started: gate %s, audio %s, %s",
            cfg.gate.mode,
            cfg.audio.backend,
            cfg.realtime.url,
            extra={"event": "started", "data": {"gate": cfg.gate.mode, "audio": cfg.audio.backend}},
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._capture_loop(source), name="capture")
                tg.create_task(playback.run(), name="playback")
                tg.create_task(self.link.run(), name="realtime")
                tg.create_task(self._link_events(self.link, conv), name="realtime events")
                tg.create_task(self._timer_loop(), name="timers")
                tg.create_task(self.timers.run(), name="timer service")
                self._spawn(parts.volume.restore(), "volume restore", self._background)
                tg.create_task(run_watchdog(self.notifier, health), name="watchdog")
                tg.create_task(self._wait_stop(), name="stop")
                gpio = GpioInputs(cfg.gate.gpio, on_action=self._on_gpio, is_engaged=lambda: conv.engagement.engaged)
                if gpio.enabled:
                    tg.create_task(gpio.run(), name="gpio")
                if self.mqtt is not None:
                    tg.create_task(self.mqtt.run(), name="mqtt")
        except* _Stop:
            pass
        finally:
            self._tg = None
            self.notifier.stopping("Stopping")
            await self._shutdown(source, sink, control, metrics)
        logger.info("earshot stopped")
        return self.exit_code

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the daemon to stop (idempotent; safe from signal handlers)."""
        if self._stop_event is not None and not self._stop_event.is_set():
            logger.info("stopping: %s", reason)
            self._stop_event.set()

    async def _wait_stop(self) -> None:
        assert self._stop_event is not None
        await self._stop_event.wait()
        raise _Stop

    async def _shutdown(self, source: Any, sink: Any, control: ControlServer | None, metrics: MetricsExporter) -> None:
        """Release everything within a bounded time (inside systemd's TimeoutStopSec)."""
        for task in (*self._background, *self._tool_calls):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                if control is not None:
                    await control.aclose()
                await metrics.aclose()
                if self.hooks is not None:
                    await self.hooks.aclose()
                for obj in (source, sink):
                    for name in ("aclose", "close"):
                        closer = getattr(obj, name, None)
                        if closer is not None:
                            result = closer()
                            if asyncio.iscoroutine(result):
                                await result
                            break
        late_ms = getattr(source, "late_max_ms", None)
        if isinstance(late_ms, float):
            logger.info(
                "event loop: max lateness %d ms taking captured audio",
                round(late_ms),
                extra={"event": "loop_late", "data": {"ms": round(late_ms), "max": True}},
            )
        if self.stats is not None:
            loop = asyncio.get_running_loop()
            self.stats.save_usage(loop.time(), time.time())

    # ------------------------------------------------------------------ loops

    async def _capture_loop(self, source: Any) -> None:
        conv = self.conversation
        assert conv is not None
        loop = asyncio.get_running_loop()
        health = self._health
        assert health is not None
        feed = CaptureFeed(conv, self._sink)
        async for chunk in source.chunks():
            health.capture_progress(time.monotonic())  # every chunk: a long catch-up is progress too
            feed.chunk(chunk.pcm, chunk.position, loop.time(), backlog=source.backlog)
        feed.flush(loop.time())
        self._capture_ended = True
        self._kick_timers()  # no chunk runs the deadlines any more
        # Only the file backend's input ends: finish the exchange in progress, then stop.
        logger.info("input ended; finishing the exchange in progress", extra={"event": "finishing"})
        await self._finish_exchange()
        self.stop("input ended")

    async def _finish_exchange(self) -> None:
        conv = self.conversation
        assert conv is not None
        assert self._playback is not None
        loop = asyncio.get_running_loop()
        limit = self.config.realtime.reply_timeout_s + self.config.realtime.ready_timeout_s
        deadline = loop.time() + limit
        while loop.time() < deadline:
            if not conv.busy():
                return
            await asyncio.sleep(0.02)
        logger.warning("the exchange did not finish within %.0f s", limit)

    async def _timer_loop(self) -> None:
        conv = self.conversation
        assert conv is not None
        loop = asyncio.get_running_loop()
        kick = self._timer_kick
        while True:
            # Capture runs the deadlines with every chunk it delivers; this loop only covers a capture
            # that stopped (a missing device, the file backend's input ended) and the credential check
            # while resting: no polling of an idle daemon.
            now = loop.time()
            deadline = conv.engagement.next_deadline()
            longest = _TIMER_MAX_S if self._timers_have_work() else _TIMER_QUIET_S
            wait = longest if deadline is None else min(longest, max(0.01, deadline - now))
            kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await kick.wait()
            conv.tick(loop.time())
            self._check_credential()

    def _timers_have_work(self) -> bool:
        """Whether the timer loop must look every second: capture is not delivering, or the daemon rests."""
        conv = self.conversation
        if self._capture_ended or (conv is not None and conv.resting_reason):
            return True
        status = getattr(self._source, "status", None)
        return status is None or status.state is not DeviceState.OK

    def _kick_timers(self) -> None:
        """Wake the timer loop now: what it covers may have work from now on (see :data:`_TIMER_QUIET_S`)."""
        self._timer_kick.set()

    # ------------------------------------------------------------------ callbacks

    async def _headers(self) -> dict[str, str]:
        assert self.link is not None
        session = self.link.asked_session or build_session_config(self.config.realtime, self.tools.specs())
        secret = await connection_secret(self.config.realtime.auth, self.environ, session)
        return headers_for(secret)

    async def _link_events(self, link: Link, conv: Conversation) -> None:
        """The one task that takes the link's events, in order (the link never calls back)."""
        loop = asyncio.get_running_loop()
        async for ev in link.events():
            resting = conv.resting_reason
            conv.on_link_event(ev, loop.time())
            if conv.resting_reason and not resting:
                self._kick_timers()  # the credential file is watched every second while resting
            if self.mqtt is not None and isinstance(ev, SessionReady | LinkDown | ResponseDone):
                self.mqtt.poke()  # the connection state and today's usage

    def _on_playback_event(self, ev: Any) -> None:
        if self.conversation is not None:
            self.conversation.on_playback_event(ev, asyncio.get_running_loop().time())
        if self.timers is not None:
            self.timers.poke()  # a timer that waited for the device to be free may ring now
        if isinstance(ev, PlaybackFinished) and self._ducked:
            self._schedule_unduck()

    def _duck(self) -> None:
        """Something is about to sound: the ``duck`` hook, once until the device has been quiet a while."""
        if self._unduck_handle is not None:
            self._unduck_handle.cancel()
            self._unduck_handle = None
        if not self._ducked:
            self._ducked = True
            self._fire_hook("duck", {})

    def _schedule_unduck(self) -> None:
        if self._unduck_handle is not None:
            self._unduck_handle.cancel()
        loop = asyncio.get_running_loop()
        self._unduck_handle = loop.call_later(self.config.hooks.unduck_after_s, self._unduck)

    def _unduck(self) -> None:
        self._unduck_handle = None
        if not self._ducked:
            return
        if self._playback is not None and self._playback.active:
            self._schedule_unduck()  # still sounding: its end will be waited for
            return
        self._ducked = False
        self._fire_hook("unduck", {})

    def _on_phase(self, old: Phase, new: Phase, reason: str) -> None:
        self.notifier.status(self._status_text())
        if self.stats is not None:
            self.stats.set_phase(new.value)
        self._fire_hook(HOOK_FOR_PHASE[new], {"phase": new.value, "previous": old.value, "reason": reason})
        if new is Phase.IDLE and self.stats is not None and self.stats.last_engagement is not None:
            message, fields = engagement_summary(self.stats.last_engagement, asyncio.get_running_loop().time())
            logger.info("%s", message, extra=fields)

    def _ring(self) -> None:
        if self.conversation is not None:
            self.conversation.ring_timer(self.config.timers.volume_db, asyncio.get_running_loop().time())

    def _stop_ring(self, by: str) -> None:
        if self.timers is not None:
            self.timers.stop_ringing(by)

    def _cancel_tools(self) -> None:
        for task in self._tool_calls:
            task.cancel()

    def _fire_hook(self, event: str, data: dict[str, Any]) -> None:
        if self.hooks is not None:
            self.hooks.fire(event, data)
        self.feed.publish(event, data)  # `earshot follow`
        if self.mqtt is not None:
            self.mqtt.poke()
            if event == "transcript":
                self.mqtt.transcript(data)

    def _run_tool(self, call_id: str, name: str, arguments: str) -> None:
        async def call() -> None:
            output = await self.tools.run(name, arguments)
            if self.link is not None:
                self.link.tool_result(call_id, output, asyncio.get_running_loop().time())
            if self.mqtt is not None:
                self.mqtt.poke()  # a tool may have changed the volume

        self._spawn(call(), f"tool {name}", self._tool_calls)

    def _record(self, kind: str, pcm: Any, info: dict[str, Any]) -> None:
        """Write a debug recording (off by default) without blocking the loop."""
        recorder = self.recorder
        if not recorder.enabled:
            return
        stats = self.stats
        engagement = stats.engagement.engagement_id if stats is not None and stats.engagement else None
        if kind == "wake":
            coro = recorder.wake(pcm, engine=str(info["engine"]), score=float(info["score"]), engagement_id=engagement)
        else:
            coro = recorder.turn(pcm, engagement_id=engagement, turn=int(info["turn"]))
        self._spawn(coro, f"record {kind}", self._background)

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str, bucket: set[asyncio.Task[Any]]) -> None:
        """Run ``coro`` as a task of the supervisor's TaskGroup (no task lives outside it).

        A failure is logged and stays in the task: one tool or recording must not stop the daemon.
        """

        async def guarded() -> None:
            try:
                await coro
            except Exception:  # the task's own failure, not the daemon's
                logger.exception("%s failed", name)

        tg = self._tg
        task = (
            tg.create_task(guarded(), name=name)
            if tg is not None
            else asyncio.get_running_loop().create_task(guarded(), name=name)
        )
        bucket.add(task)
        task.add_done_callback(bucket.discard)


class _DaemonApp:
    """The daemon as the :class:`earshot.compose.App` its parts report to."""

    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    def on_phase(self, old: Phase, new: Phase, reason: str) -> None:
        self._d._on_phase(old, new, reason)

    def on_hook(self, name: str, data: dict[str, Any]) -> None:
        self._d._fire_hook(name, data)

    def run_tool(self, call_id: str, name: str, arguments: str) -> None:
        self._d._run_tool(call_id, name, arguments)

    def on_record(self, kind: str, pcm: Any, info: dict[str, Any]) -> None:
        self._d._record(kind, pcm, info)

    def on_playback_event(self, ev: Any) -> None:
        self._d._on_playback_event(ev)

    def stop_ring(self, by: str) -> None:
        self._d._stop_ring(by)

    def cancel_tools(self) -> None:
        self._d._cancel_tools()

    async def headers(self) -> dict[str, str]:
        return await self._d._headers()
