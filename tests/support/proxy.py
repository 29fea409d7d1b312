"""A loopback TCP proxy that injects network faults, for the resilience suite.

::

    async with FaultProxy("127.0.0.1", emulator_port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/v1/realtime"
        ...
        proxy.set_delay(0.1)          # +100 ms each way (200 ms RTT)
        proxy.throttle(4000)          # 4 kB/s each way
        proxy.blackhole()             # half-open: sockets stay up, nothing is forwarded
        proxy.cut()                   # close every connection now
        proxy.refuse("close")         # accept new connections and close them at once
        await proxy.refuse("stop")    # stop listening: connection refused
        await proxy.restore()         # back to a clean pass-through (listening again on the same port)

Modes apply at run time to existing and new connections. Counters (``bytes_up`` client→target,
``bytes_down`` target→client, ``bytes_dropped``, ``connections``, ``active``, ``refused``) and
:meth:`FaultProxy.wait_until` let tests synchronise on what happened instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["FaultProxy"]

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's and the target's streams and the pump tasks."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.target):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    """An asyncio TCP proxy on 127.0.0.1 in front of ``target_host:target_port``.

    Args:
        target_host: where connections are forwarded.
        target_port: its port.
        listen_port: the port to listen on (0: any free port; see :attr:`port`).
    """

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = listen_port
        # modes
        self.delay_up_s = 0.0
        self.delay_down_s = 0.0
        self.rate_bytes_per_s: float | None = None
        self.blackholed = False
        self.refusing: Literal["close", "stop"] | None = None
        # counters
        self.bytes_up = 0
        self.bytes_down = 0
        self.bytes_dropped = 0
        self.connections = 0
        self.refused = 0
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[object]] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FaultProxy:
        await self._listen()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and abort every connection."""
        await self._stop_listening()
        self.cut()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    # ---------------------------------------------------------------------------------- modes

    @property
    def active(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._links)

    def set_delay(self, up_s: float, down_s: float | None = None) -> None:
        """Add one-way latency: ``up_s`` client→target, ``down_s`` target→client (default: the same)."""
        self.delay_up_s = up_s
        self.delay_down_s = up_s if down_s is None else down_s

    def throttle(self, bytes_per_s: float | None) -> None:
        """Cap each direction of each connection at ``bytes_per_s`` (None: no cap)."""
        self.rate_bytes_per_s = bytes_per_s

    def blackhole(self, on: bool = True) -> None:
        """Forward nothing in either direction (and discard it), keeping every socket open: half-open.

        New connections are accepted but never reach the target (a stalled handshake).
        """
        self.blackholed = on

    def cut(self) -> None:
        """Close every current connection now (both sides, without a clean close)."""
        for link in list(self._links):
            link.abort()

    async def refuse(self, how: Literal["close", "stop"] = "close") -> None:
        """Refuse new connections: ``close`` accepts and closes at once; ``stop`` stops listening."""
        self.refusing = how
        if how == "stop":
            await self._stop_listening()

    async def restore(self) -> None:
        """Back to a clean pass-through: no delay, no cap, no blackhole, listening (on the same port)."""
        self.set_delay(0.0)
        self.throttle(None)
        self.blackhole(False)
        self.refusing = None
        if self._server is None:
            await self._listen()

    # ------------------------------------------------------------------------------ synchronise

    async def wait_until(self, predicate: Callable[[FaultProxy], bool], timeout_s: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds, re-checked on every counter change.

        Raises:
            TimeoutError: it did not hold within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------------------------- pumping

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # aclose() cancelled it. End normally: asyncio (3.11) calls task.exception() on a finished
            # client_connected_cb task and would log a cancelled one as an unhandled exception.
            writer.transport.abort()
        finally:
            self._handlers.discard(handler)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing is not None:
            self.refused += 1
            writer.transport.abort()
            await self._notify()
            return
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        await self._notify()
        try:
            if self.blackholed:
                # A stalled handshake: swallow what the client sends, never connect upstream.
                await self._swallow(reader)
                return
            try:
                t_reader, t_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                return
            link.target = t_writer
            up = asyncio.create_task(self._pump(link, reader, t_writer, up=True))
            down = asyncio.create_task(self._pump(link, t_reader, writer, up=False))
            link.tasks += [up, down]
            try:
                await asyncio.gather(up, down)
            finally:
                for task in link.tasks:
                    task.cancel()
                await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            link.abort()
            self._links.discard(link)
            await self._notify()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                self.bytes_dropped += len(data)
                await self._notify()

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        """Read one direction into a queue stamped with arrival times; a sender task releases it late.

        A clean EOF is passed on (half-close); a reset on either side aborts the whole link.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(link, queue, writer, up=up))
        try:
            try:
                while data := await reader.read(_CHUNK):
                    if self.blackholed:
                        self.bytes_dropped += len(data)
                        await self._notify()
                        continue
                    queue.put_nowait((time.monotonic(), data))
            except OSError:
                link.abort()
                return
            queue.put_nowait((time.monotonic(), b""))  # EOF, delivered in order
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(
        self, link: _Link, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while True:
                arrived, data = await queue.get()
                delay = self.delay_up_s if up else self.delay_down_s
                due = arrived + delay
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                while data:
                    rate = self.rate_bytes_per_s
                    if self.blackholed:
                        self.bytes_dropped += len(data)
                        break
                    piece = data if rate is None else data[: max(1, int(rate * 0.02))]
                    data = data[len(piece) :]
                    writer.write(piece)
                    await writer.drain()
                    if up:
                        self.bytes_up += len(piece)
                    else:
                        self.bytes_down += len(piece)
                    await self._notify()
                    if rate is not None:
                        await asyncio.sleep(len(piece) / rate)
        except OSError:
            link.abort()
