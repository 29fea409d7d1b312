"""Prometheus metrics: the text exposition format (0.0.4) rendered from :class:`~earshot.stats.Stats`.

Two ways out, both off by default:

- ``metrics.textfile``: written atomically (temporary file, rename; mode 0644) every
  ``metrics.interval_s`` for node-exporter's textfile collector (the name must end in ``.prom``).
  ``earshot_last_update_timestamp_seconds`` tells a stale file from a live one.
- ``metrics.port``: ``GET /metrics`` on ``127.0.0.1:<port>`` by a tiny asyncio HTTP server
  (loopback only: put a reverse proxy in front to publish it).

Latencies are exported in seconds (the Prometheus base unit) although :class:`Stats` keeps ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from earshot.config import MetricsConfig
from earshot.stats import CONNECTION_STATES, PHASES, Histogram, Stats
from earshot.usage import atomic_write

__all__ = ["CONTENT_TYPE", "MetricsExporter", "MetricsServer", "render", "write_textfile"]

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = (
    ("wakes", "Wake-word detections."),
    ("engagements", "Engagements started (wake word, button, control socket, vad)."),
    ("turns", "User turns committed."),
    ("bargeins", "Replies interrupted by the user."),
    ("false_bargeins", "Barge-ins the user said nothing after (the engagement ended with no turn since)."),
    ("truncates", "conversation.item.truncate events sent."),
    ("reconnects", "Realtime connections lost and re-opened."),
    ("xruns", "Playback underruns."),
    ("overruns", "Capture overruns (audio dropped)."),
    ("hook_runs", "Event hook processes run."),
    ("hook_failures", "Event hooks that failed, exited non-zero or timed out."),
    ("recordings", "Debug recordings written."),
    ("timers_rung", "Timers and alarms that rang."),
)

_HISTOGRAMS = (
    ("wake_to_ready_seconds", "wake_to_ready_ms", "Engagement to Realtime session ready."),
    ("reply_start_seconds", "reply_start_ms", "End of the user's turn to the first reply audio played."),
    ("bargein_reaction_seconds", "bargein_ms", "User speech onset to the reply stopping."),
)


def render(stats: Stats, now: float, now_wall: float, device: Mapping[str, str] | None = None) -> str:
    """The metrics in the Prometheus text exposition format.

    Args:
        stats: the daemon's stats.
        now: monotonic seconds (session age).
        now_wall: Unix seconds (today's usage, the update timestamp).
        device: labels on every sample (``device``, ``room``, ``site`` from the ``device`` section),
            so a fleet's series stay apart however they are collected (scrape, textfile, federation).
    """
    out: list[str] = []
    const = dict(device or {})

    def family(name: str, kind: str, doc: str) -> None:
        out.append(f"# HELP earshot_{name} {doc}")
        out.append(f"# TYPE earshot_{name} {kind}")

    def sample(name: str, value: float, labels: dict[str, str] | None = None) -> None:
        label_text = ""
        every = {**const, **(labels or {})}
        if every:
            label_text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in every.items()) + "}"
        out.append(f"earshot_{name}{label_text} {_number(value)}")

    for attr, doc in _COUNTERS:
        family(f"{attr}_total", "counter", doc)
        sample(f"{attr}_total", getattr(stats, attr))
    family("errors_total", "counter", "Errors by class (exception class or server error code).")
    for cls, n in sorted(stats.errors.items()):
        sample("errors_total", n, {"class": cls})

    family("phase", "gauge", "Engagement phase (1 for the current phase).")
    phases = PHASES if stats.phase in PHASES else (*PHASES, stats.phase)
    for phase in phases:
        sample("phase", 1 if phase == stats.phase else 0, {"phase": phase})
    family("connected", "gauge", "1 while a Realtime session is connected.")
    sample("connected", 1 if stats.connection == "connected" else 0)
    family("connection_state", "gauge", "Connection state (1 for the current state).")
    for state in CONNECTION_STATES:
        sample("connection_state", 1 if state == stats.connection else 0, {"state": state})
    family("session_age_seconds", "gauge", "Age of the connected session (0 when none).")
    sample("session_age_seconds", stats.session_age_s(now) or 0.0)
    family("muted", "gauge", "1 while the microphone is muted.")
    sample("muted", 1 if stats.muted else 0)
    family("duplex_mode", "gauge", "Barge-in duplex mode in force (1 for the mode).")
    sample("duplex_mode", 1, {"mode": stats.duplex})
    family("connected_seconds_today", "gauge", "Seconds connected to the Realtime API today (local day).")
    sample("connected_seconds_today", stats.connected_seconds_today(now, now_wall))
    family("device_up", "gauge", "1 while the audio device of the role is open and working.")
    for role in ("input", "output"):
        if role in stats.devices:
            sample("device_up", 1 if stats.devices[role].get("state") == "ok" else 0, {"role": role})
    family("device_missing_seconds", "gauge", "Seconds the audio device of the role has been missing (0 when up).")
    for role in ("input", "output"):
        if role in stats.devices:
            sample("device_missing_seconds", stats.device_missing_s(role, now) or 0.0, {"role": role})
    family("tokens_total", "counter", "Realtime API tokens billed (response.done usage), by kind.")
    for kind, n in stats.tokens.total.as_dict().items():
        sample("tokens_total", n, {"kind": kind})
    family("cost_usd_estimate_total", "counter", "Estimated Realtime API cost in US dollars (realtime.prices).")
    sample("cost_usd_estimate_total", round(stats.tokens.total.cost_usd(stats.prices), 6))
    family("timers", "gauge", "Timers and alarms set here, by state (pending, ringing).")
    sample("timers", stats.timers_pending, {"state": "pending"})
    sample("timers", stats.timers_ringing, {"state": "ringing"})
    family("uptime_seconds", "gauge", "Seconds since the daemon started.")
    sample("uptime_seconds", max(0.0, now - stats.started_at))

    for name, attr, doc in _HISTOGRAMS:
        hist: Histogram = getattr(stats, attr)
        family(name, "histogram", doc)
        for bound_ms, count in hist.cumulative():
            le = "+Inf" if math.isinf(bound_ms) else _number(bound_ms / 1000.0)
            sample(f"{name}_bucket", count, {"le": le})
        sample(f"{name}_sum", hist.sum / 1000.0)
        sample(f"{name}_count", hist.count)

    family("last_update_timestamp_seconds", "gauge", "Unix time these metrics were rendered.")
    sample("last_update_timestamp_seconds", round(now_wall, 3))
    return "\n".join(out) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0644 (node-exporter runs as another user).

    Raises:
        OSError: the file cannot be written.
    """
    atomic_write(path, text, mode=0o644)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsServer:
    """``GET /metrics`` over HTTP/1.x on a loopback address (one request per connection).

    Args:
        render: returns the exposition text; called per request on the event loop.
        host: listen address (loopback).
        port: TCP port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(self, render: Callable[[], str], *, host: str = "127.0.0.1", port: int) -> None:
        self._render = render
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Start listening.

        Raises:
            OSError: the port is taken or cannot be bound.
        """
        self._server = await asyncio.start_server(self._serve, self._host, self._port, limit=8192)
        logger.info("metrics served on http://%s:%d/metrics", self._host, self.port)

    async def aclose(self) -> None:
        """Stop listening. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
            elif parts[0] not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif parts[1].split("?", 1)[0] != "/metrics":
                status, body, ctype = "404 Not Found", "see /metrics\n", "text/plain"
            else:
                status, body, ctype = "200 OK", self._render(), CONTENT_TYPE
            data = body.encode("utf-8")
            headers = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                + ("Allow: GET, HEAD\r\n" if status.startswith("405") else "")
                + "Connection: close\r\n\r\n"
            )
            writer.write(headers.encode("latin-1") + (b"" if parts and parts[0] == "HEAD" else data))
            async with asyncio.timeout(5.0):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            logger.debug("metrics request dropped: %r", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


class MetricsExporter:
    """Both outputs of the ``metrics`` section: the periodic textfile and the loopback server.

    ``async with MetricsExporter(config.metrics, stats):`` for the daemon's lifetime; a no-op when
    both are off. The textfile is written from a worker thread (fsync on an SD card can take tens
    of ms) and once more on exit. A failed write is logged (once per distinct error) and retried.

    Args:
        config: the ``metrics`` section.
        stats: the daemon's stats.
        clock: monotonic clock; wall: Unix clock (parameters for tests).
        port: overrides ``config.port`` (0: any free port, for tests).
        refresh: called before each render (the app refreshes the devices' status into ``stats``).
        device: the labels on every sample (:func:`earshot.config.device_labels`).
    """

    def __init__(
        self,
        config: MetricsConfig,
        stats: Stats,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        port: int | None = None,
        refresh: Callable[[], None] | None = None,
        device: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._device = dict(device or {})
        self._stats = stats
        self._refresh = refresh
        self._clock = clock
        self._wall = wall
        port = config.port if port is None else port
        self.server = MetricsServer(self.render, port=port) if port is not None else None
        self._task: asyncio.Task[None] | None = None
        self._last_problem: str | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.writes = 0

    def render(self) -> str:
        """The current exposition text."""
        if self._refresh is not None:
            self._refresh()
        return render(self._stats, self._clock(), self._wall(), self._device)

    async def write_once(self) -> None:
        """Render and write the textfile now (from a thread). Never raises ``OSError``.

        Cancellation-safe: a write already handed to the thread completes (and is counted);
        :meth:`aclose` waits for it before the last write.
        """
        path = self._config.textfile
        if path is None:
            return
        text = self.render()
        write = asyncio.ensure_future(asyncio.to_thread(write_textfile, path, text))
        write.add_done_callback(self._written)
        self._inflight = write
        with contextlib.suppress(OSError):  # reported by _written
            await asyncio.shield(write)

    def _written(self, write: asyncio.Future[None]) -> None:
        if write.cancelled():  # pragma: no cover - the thread's future is never cancelled
            return
        exc = write.exception()
        if isinstance(exc, OSError):
            problem = f"{exc.strerror or exc}"
            if problem != self._last_problem:
                logger.warning("cannot write metrics to %s: %s", self._config.textfile, problem)
            self._last_problem = problem
        elif exc is not None:
            logger.error("metrics textfile write failed", exc_info=exc)
        else:
            self._last_problem = None
            self.writes += 1

    async def _textfile_loop(self) -> None:
        while True:
            await self.write_once()
            await asyncio.sleep(self._config.interval_s)

    async def start(self) -> None:
        """Start the server and the textfile task (whichever is configured).

        Raises:
            OSError: the metrics port cannot be bound.
        """
        if self.server is not None:
            await self.server.start()
        if self._config.textfile is not None:
            self._task = asyncio.get_running_loop().create_task(self._textfile_loop(), name="earshot-metrics")

    async def aclose(self) -> None:
        """Stop both; the textfile gets a last write."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self._inflight is not None:
                await asyncio.gather(self._inflight, return_exceptions=True)
            await self.write_once()
        if self.server is not None:
            await self.server.aclose()

    async def __aenter__(self) -> MetricsExporter:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
