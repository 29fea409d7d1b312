"""The WebSocket edge: the only module importing ``websockets`` (asyncio API, websockets >= 14).

:func:`open_websocket` opens one connection the way PROTOCOL.md §1 asks (``Authorization:
Bearer``, compression off, pings, an open timeout, TLS verified with the default context for
``wss://``, plain ``ws://`` refused except to loopback) and maps websockets' exceptions
into ``earshot.errors`` (:class:`HandshakeError` keeps the HTTP status, :class:`ConnectionLost`
the close code) for :func:`earshot.realtime.policy.classify`.

:class:`Link` is what the app drives: ``open()`` when engaged, ``close()`` when done; while open
it keeps a connection up, one :class:`RealtimeSession` per connection, reconnecting with backoff
(full jitter, reset after a connection that became ready; a slow retry when fatal-for-now;
``wake_now()`` retries at once). Across a reconnect the new session gets the conversation as text
and the audio of the user turn the drop interrupted. Sending never blocks the caller: frames go
through a bounded queue to a writer task. Whether the network is stalled is judged from the socket
(:class:`~earshot.realtime.stall.SocketWatch`: bytes the kernel accepted; the pings), never from
that queue: a queue over its bound while the socket takes bytes is a loop catching up after a slow
moment, and may grow to ``_HARD_FACTOR`` times the bound. A stalled socket, or a queue past that,
drops the connection, which is re-established with the unanswered turn replayed.

Inbound messages are bounded by :data:`MAX_MESSAGE_BYTES` (PROTOCOL.md §4.3), where the SDK has no
limit: a bigger one is refused while it arrives (close 1009) and the link reconnects as after any drop.
One over :data:`PARSE_OFF_LOOP_BYTES` is parsed and its audio decoded in a worker thread, in order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import websockets
from numpy.typing import NDArray
from websockets.asyncio.client import ClientConnection

from earshot.config import ProfileConfig, RealtimeConfig
from earshot.errors import ConfigError, ConnectionLost, RealtimeError
from earshot.realtime import events as ev
from earshot.realtime.linkevents import LinkDown, LinkEvent, OfflineOverflow
from earshot.realtime.linkqueues import EventQueue, SendQueue
from earshot.realtime.policy import Reconnector, Verdict
from earshot.realtime.session import MAX_REPLAY_S, HistoryItem, RealtimeSession, SessionReady
from earshot.realtime.sessionconfig import build_session_config, with_profile
from earshot.realtime.stall import SocketWatch
from earshot.realtime.toolspec import ToolSpec
from earshot.realtime.websocket import CLOSE_TIMEOUT_S, MAX_MESSAGE_BYTES, lost, open_websocket, realtime_url

__all__ = [
    "MAX_MESSAGE_BYTES",
    "Link",
    "LinkDown",
    "LinkEvent",
    "LinkState",
    "OfflineOverflow",
    "SendQueue",
    "open_websocket",
    "realtime_url",
]

logger = logging.getLogger(__name__)

PARSE_OFF_LOOP_BYTES = 256 * 1024
"""Messages bigger than this are parsed and decoded in a worker thread (a normal delta is ~6 kB)."""
_FRAME_HEADER = 8
"""Bytes of WebSocket framing counted per frame sent (a client text frame's header: 6–14)."""
_HARD_FACTOR = 4
"""While the socket takes bytes, the audio queue may grow to this many times ``send_queue_ms``."""
MAX_QUEUED_EVENT_BYTES = 4 * 1024 * 1024
"""Events waiting for the app's task (two minutes of reply audio): over it, the reader stops taking
messages from the socket until the app catches up (TCP holds the rest; nothing is dropped)."""


HeadersFn = Callable[[], Awaitable[Mapping[str, str]]]
McpToolsFn = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]
"""The remote MCP servers' tool entries for a new session (:func:`earshot.realtime.mcp.session_tools`)."""
ConnectFn = Callable[[str, Mapping[str, str], RealtimeConfig], Awaitable[ClientConnection]]
"""Opens one WebSocket: ``(url, headers, config)``; :func:`open_websocket` unless a test or tool injects one."""


class LinkState(enum.Enum):
    """Where the link is; the one variable its loop decides on."""

    CLOSED = "closed"
    """Not wanted: no connection, none attempted (:meth:`Link.open` not called, or closed since)."""
    CONNECTING = "connecting"
    """An attempt is under way: credentials, the handshake, the session's setup."""
    OPEN = "open"
    """A session is ready."""
    ROTATING = "rotating"
    """The session is being replaced on purpose (:meth:`Link.rotate`); the next one keeps the history."""
    WAITING = "waiting"
    """Backing off before the next attempt (:meth:`Link.wake_now` cuts it short)."""


class Link:
    """The app's handle on the Realtime connection (run :meth:`run` as one task).

    Everything it has to say (every session event, :class:`LinkDown`, :class:`OfflineOverflow`) waits
    in order for one task of the app to take it (:meth:`events`, :meth:`recv`, as websockets' ``recv``):
    the link never calls back, so nothing of the app runs in the middle of one of its methods.

    Args:
        config: the ``realtime`` section.
        headers: called before every connection attempt for fresh auth headers (an ephemeral
            secret is minted per connection); may raise ``AuthenticationError``.
        tools: tools declared in every session.
        rng: jitter source (seeded in tests).
        connect: opens the WebSocket (default :func:`open_websocket`).
    """

    def __init__(
        self,
        config: RealtimeConfig,
        *,
        headers: HeadersFn,
        tools: Sequence[ToolSpec] = (),
        rng: random.Random | None = None,
        connect: ConnectFn | None = None,
        mcp_tools: McpToolsFn | None = None,
    ) -> None:
        self._config = config
        self._headers = headers
        self._mcp_tools = mcp_tools
        self._connect = connect or open_websocket
        self._events = EventQueue(MAX_QUEUED_EVENT_BYTES)
        self._tools = tuple(tools)
        self._profile: ProfileConfig | None = None
        self.asked_session: dict[str, Any] | None = None
        """The session the next connection asks for (its profile's): what a token URL mints it with."""
        self._reconnector = Reconnector(
            initial_s=config.reconnect.initial_s,
            max_s=config.reconnect.max_s,
            slow_retry_s=config.reconnect.slow_retry_s,
            rng=rng or random.Random(),
        )
        rate = ev.WIRE_RATE_HZ[config.format]
        bytes_per_sample = 2 if config.format == "pcm16" else 1
        frame_overhead = 64
        per_ms = rate * bytes_per_sample / 1000 * 4 / 3 + frame_overhead / config.append_ms
        self._queue = SendQueue(int(config.send_queue_ms * per_ms))
        self._per_ms = per_ms
        # A replayed turn plus what arrived while reconnecting always fits, whatever the bound.
        replay_s = max(MAX_REPLAY_S, config.reconnect.offline_buffer_s) + config.reconnect.offline_buffer_s
        self._hard_limit = max(_HARD_FACTOR * self._queue.max_audio_chars, int(1.1 * replay_s * 1000 * per_ms))
        self._socket: SocketWatch | None = None
        self._sent = 0
        self._behind_warned = False
        self._max_offline_samples = int(config.reconnect.offline_buffer_s * rate)
        self._changed = asyncio.Event()
        self.state = LinkState.CLOSED
        """The one variable the loop decides on (:class:`LinkState`)."""
        self._ws: ClientConnection | None = None
        self._abort: RealtimeError | None = None
        self._session: RealtimeSession | None = None
        self._history: list[HistoryItem] = []
        self._replay: NDArray[np.int16] | None = None
        self._replay_offline = 0  # samples of the replay that arrived while disconnected
        self._replay_decision: bool | None = None  # the app's word on a replay not created yet
        self._offline: deque[NDArray[np.int16]] = deque()
        self._offline_samples = 0
        self._offline_overflowed = False
        self._tasks: set[asyncio.Task[None]] = set()
        # One worker for large messages: each thread of a pool would get a malloc arena of its own,
        # and the peaks of several arenas stay in the RSS of a daemon that runs for months.
        self._parser: concurrent.futures.ThreadPoolExecutor | None = None
        self.last_error: str | None = None
        self.verdict: Verdict | None = None

    # ------------------------------------------------------------------------------- app side

    @property
    def session(self) -> RealtimeSession | None:
        """The current session (None between connections)."""
        return self._session

    @property
    def engaged(self) -> bool:
        """:meth:`open` was called and :meth:`close` not since."""
        return self.state is not LinkState.CLOSED

    async def recv(self) -> LinkEvent:
        """The next event (session events, :class:`LinkDown`, :class:`OfflineOverflow`), in order."""
        return await self._events.get()

    async def events(self) -> AsyncIterator[LinkEvent]:
        """Every event, in order, for as long as the caller iterates."""
        while True:
            yield await self._events.get()

    @property
    def queued_events(self) -> int:
        """Events waiting for the app's task."""
        return len(self._events)

    def open(self) -> None:
        """Connect (and keep reconnecting) until :meth:`close`."""
        if self.state is LinkState.CLOSED:
            self.state = LinkState.CONNECTING
            self._offline_overflowed = False
            self._changed.set()

    def close(self) -> None:
        """Close the connection and forget the conversation; :meth:`open` starts a new one."""
        self.state = LinkState.CLOSED
        self._history = []
        self._replay, self._replay_offline = None, 0
        self._replay_decision = None
        self._offline.clear()
        self._offline_samples = 0
        self._changed.set()
        self._close_ws()

    def rotate(self) -> None:
        """Replace the session now (while idle, before the server's 60-minute cap), keeping the history."""
        if self._ws is not None and self.state is LinkState.OPEN:
            self.state = LinkState.ROTATING
            self._close_ws()

    def wake_now(self) -> None:
        """Retry at once (SIGHUP, a changed credential): forget the backoff."""
        self._reconnector.reset()
        if self.state is LinkState.WAITING:
            self.state = LinkState.CONNECTING
            self._changed.set()

    def send_audio(self, pcm: NDArray[np.int16], now: float) -> None:
        """Microphone audio at the session's input rate. Never blocks.

        Between connections it is kept (up to ``reconnect.offline_buffer_s``, then
        :class:`OfflineOverflow` is reported once) and sent first on the next session.
        """
        if self.state is LinkState.CLOSED:
            return
        session = self._session
        if session is not None:
            session.append_audio(pcm, now)
            self._check_offline_bound(session)
            self._pump()
            return
        self._offline.append(np.asarray(pcm, dtype=np.int16).reshape(-1))
        self._offline_samples += pcm.size
        while self._offline_samples > self._max_offline_samples and self._offline:
            self._offline_samples -= self._offline.popleft().size
            if not self._offline_overflowed:
                self._offline_overflowed = True
                self._events.put(OfflineOverflow())

    def _check_offline_bound(self, session: RealtimeSession) -> None:
        """Report OfflineOverflow once when audio waiting for a session exceeded the offline bound."""
        if not session.ready and session.dropped_audio_samples and not self._offline_overflowed and self.engaged:
            # Still (re)connecting, and the turn waiting for the session reached reconnect.offline_buffer_s.
            self._offline_overflowed = True
            self._events.put(OfflineOverflow())

    def flush_audio(self, now: float) -> None:
        """Send the partial audio batch now."""
        if self._session is not None:
            self._session.flush_audio(now)
            self._pump()

    def commit_turn(self, now: float) -> None:
        """Local end of turn (see :meth:`RealtimeSession.commit_turn`)."""
        if self._session is not None:
            self._session.commit_turn(now)
            self._pump()

    def announce(self, text: str, now: float) -> None:
        """Say ``text`` out of band (see :meth:`RealtimeSession.announce`); dropped without a session."""
        if self._session is not None:
            self._session.announce(text, now)
            self._pump()

    def discard_turn(self) -> None:
        """Forget the user's turn sent or kept so far (see :meth:`RealtimeSession.discard_turn`)."""
        self._offline.clear()
        self._offline_samples = 0
        self._replay, self._replay_offline = None, 0
        if self._session is not None:
            self._session.discard_turn()
            self._pump()

    def use_profile(self, profile: ProfileConfig | None) -> None:
        """Sessions from the next connection on use ``profile`` (instructions, voice, tools); None: the config's."""
        self._profile = profile

    def interrupt(self, *, heard_samples: Mapping[str, int], local: bool, now: float) -> None:
        """Barge-in (see :meth:`RealtimeSession.interrupt`)."""
        if self._session is not None:
            self._session.interrupt(heard_samples=heard_samples, local=local, now=now)
            self._pump()

    def replay_turn(self, replay: bool) -> None:
        """The app's decision, after a :class:`LinkDown`: send the unanswered turn again, or not.

        The link never decides it: the next session holds the turn, and everything said since,
        until told (:meth:`RealtimeSession.decide_replay`).
        """
        session = self._session
        if session is None:
            self._replay_decision = replay  # between connections: for the session the next one makes
        elif session.replay_undecided:
            session.decide_replay(replay)
            self._pump()
        # else the session after the drop had nothing to replay: a decision kept for a later one would
        # be stale (that drop's LinkDown brings its own)

    def tool_result(self, call_id: str, output: str, now: float) -> None:
        """A tool's output (see :meth:`RealtimeSession.tool_result`)."""
        if self._session is not None:
            self._session.tool_result(call_id, output, now)
            self._pump()

    # ---------------------------------------------------------------------------------- loop

    async def run(self) -> None:
        """Keep a connection while engaged. Runs until cancelled; network faults never end it.

        Cancelling is safe: the open connection is closed (bounded by the close timeout).
        """
        loop = asyncio.get_running_loop()
        try:
            while True:
                while self.state is LinkState.CLOSED:
                    self._changed.clear()
                    await self._changed.wait()
                self.state = LinkState.CONNECTING
                error, stayed_up = await self._connect_once(loop)
                if self.state is LinkState.CLOSED:  # close() ran meanwhile
                    self._reconnector.reset()
                    continue
                if self.state is LinkState.ROTATING and error is None:
                    self._reconnector.reset()
                    continue
                self.state = LinkState.WAITING
                failure: BaseException = error or ConnectionLost("the server closed the connection")
                delay = self._reconnector.failed(failure, stayed_up=stayed_up)
                self.last_error, self.verdict = _one_line(failure), delay.verdict
                log = logger.warning if delay.verdict is Verdict.FATAL_FOR_NOW or delay.attempt > 3 else logger.info
                log(
                    "realtime connection lost (%s); %s in %.1f s",
                    self.last_error,
                    "slow retry" if delay.verdict is Verdict.FATAL_FOR_NOW else "reconnecting",
                    delay.seconds,
                )
                retry_at = loop.time() + delay.seconds
                self._events.put(LinkDown(self.last_error, delay.verdict, delay.seconds, delay.attempt, retry_at))
                del error, failure  # not kept through the wait (up to slow_retry_s)
                await self._sleep(loop, retry_at)
        finally:
            self._close_ws()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
            if self._parser is not None:
                self._parser.shutdown(wait=False, cancel_futures=True)
                self._parser = None

    async def _sleep(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        while self.state is LinkState.WAITING and (left := until - loop.time()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    async def _connect_once(self, loop: asyncio.AbstractEventLoop) -> tuple[BaseException | None, bool]:
        mcp = await self._mcp_tools() if self._mcp_tools is not None else ()
        config, tools, mcp = with_profile(self._config, self._tools, mcp, self._profile)
        self.asked_session = build_session_config(config, tools, mcp=mcp)
        session = RealtimeSession(
            config,
            tools=tools,
            mcp_tools=mcp,
            history=self._history,
            replay_audio=self._replay,
            replay_offline_samples=self._replay_offline,
        )
        self._replay, self._replay_offline = None, 0
        if self._replay_decision is not None:
            session.decide_replay(self._replay_decision)
            self._replay_decision = None
        while self._offline:
            session.append_audio(self._offline.popleft(), loop.time())
        self._offline_samples = 0
        self._check_offline_bound(session)
        self._session = session
        self._abort = None
        error: BaseException | None = None
        try:
            headers = await self._headers()
            ws = await self._connect(realtime_url(self._config.url, self._config.model), headers, self._config)
            self._ws = ws
            try:
                await self._serve(ws, session, loop)
            finally:
                self._ws = None
                with contextlib.suppress(Exception):  # best effort: the peer may be gone already
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await ws.close()
        except (RealtimeError, ConfigError, OSError) as exc:  # TimeoutError is an OSError
            error = _without_tracebacks(exc)
        was_ready = session.ready
        session.connection_lost(loop.time())
        self._session = None
        self._drop_queue()
        self._history = session.history
        if self.state is not LinkState.CLOSED:
            self._replay = session.unsettled_audio()
            self._replay_offline = min(session.offline_samples(), self._replay.size)
        return error, was_ready

    async def _serve(self, ws: ClientConnection, session: RealtimeSession, loop: asyncio.AbstractEventLoop) -> None:
        session.connection_opened(loop.time())
        self._socket = SocketWatch(self._config.ping_timeout_s, loop.time())
        self._sent = 0
        self._behind_warned = False
        writer = asyncio.create_task(self._writer(ws))
        try:
            while True:
                deadline = session.next_deadline()
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._events.room()  # the app is behind: TCP holds the rest meanwhile
                        raw = await ws.recv()  # cancel-safe in websockets' asyncio API
                except TimeoutError:
                    session.tick(loop.time())
                    self._pump()
                except websockets.ConnectionClosedOK as exc:
                    if self._abort is not None:
                        raise self._abort from exc
                    if self.state in (LinkState.CLOSED, LinkState.ROTATING):
                        return
                    raise lost(exc) from exc
                except websockets.ConnectionClosed as exc:
                    raise (self._abort or lost(exc)) from exc
                else:
                    if len(raw) > PARSE_OFF_LOOP_BYTES:  # a large one would block the loop (audio, watchdog)
                        if self._parser is None:
                            self._parser = concurrent.futures.ThreadPoolExecutor(1, "earshot-parse")
                        parsed = await loop.run_in_executor(self._parser, session.parse, raw)
                        session.receive_parsed(parsed, loop.time())
                    else:
                        session.receive_message(raw, loop.time())
                    self._pump()
                if session.failure is not None:
                    raise session.failure
                if self._abort is not None:
                    raise self._abort
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _writer(self, ws: ClientConnection) -> None:
        queue = self._queue
        try:
            while True:
                await queue.ready.wait()
                while (frame := queue.pop()) is not None:
                    self._sent += len(frame) + _FRAME_HEADER
                    await ws.send(frame)
                    self._watch_socket()
        except websockets.ConnectionClosed:
            return  # the reader sees the close too

    def _watch_socket(self) -> None:
        ws, watch = self._ws, self._socket
        if ws is None or watch is None:
            return
        try:
            buffered = ws.transport.get_write_buffer_size()
        except (AttributeError, RuntimeError):  # the transport is gone: the reader sees the close
            return
        watch.sample(asyncio.get_running_loop().time(), sent=self._sent, buffered=buffered)

    def _pump(self) -> None:
        session = self._session
        if session is None:
            return
        now = asyncio.get_running_loop().time()
        self._watch_socket()
        for frame in session.messages_to_send():
            if self._queue.put(frame) or self._abort is not None:
                continue
            # Our queue is over its bound: a stalled network, or a loop that is catching up.
            watch = self._socket
            if watch is not None and not watch.stalled(now) and self._queue.put(frame, limit=self._hard_limit):
                if not self._behind_warned:
                    self._behind_warned = True
                    logger.warning(
                        "realtime: uplink behind the microphone (%d ms queued) but the socket is taking bytes: "
                        "catching up",
                        self._config.send_queue_ms,
                    )
                continue
            stalled = watch.stalled_for(now) if watch is not None else 0.0
            self._abort = ConnectionLost(
                f"the network is stalled: the socket took no bytes for {stalled:.1f} s"
                if stalled > (watch.stall_s if watch is not None else 0.0)
                else f"send queue over {self._hard_limit / self._per_ms:.0f} ms of audio: the uplink is too slow"
            )
            logger.warning("realtime: %s", self._abort)
            self._abort_ws()
        for event in session.events_received():
            if isinstance(event, SessionReady) and self.state is LinkState.CONNECTING:
                self.state = LinkState.OPEN
            self._events.put(event)
        if session.failure is not None and self._abort is None:
            self._abort = session.failure
            self._close_ws()

    def _drop_queue(self) -> None:
        while self._queue.pop() is not None:
            pass

    def _close_ws(self) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(ws.close())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _abort_ws(self) -> None:
        ws = self._ws
        if ws is not None:
            ws.transport.abort()


def _without_tracebacks(error: BaseException) -> BaseException:
    """``error`` with the tracebacks of it and its causes dropped (only its one-line text is ever used).

    A traceback keeps every frame it passed through alive: the failed attempt's websockets
    connection and transport, the session with the user's turn, and :meth:`Link._connect_once`'s
    own frame, which refers back to the error (a cycle only the cyclic collector would free).
    """
    seen: set[int] = set()
    chain: list[BaseException | None] = [error]
    while chain:
        link = chain.pop()
        if link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            chain += (link.__cause__, link.__context__)
    return error


def _one_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
