"""The daemon's MQTT edge: its state to the broker, the broker's commands to the daemon.

One task (:meth:`MqttBridge.run`) for the daemon's life. It connects to ``mqtt.url`` with a last
will (``offline`` on the availability topic), publishes ``online``, Home Assistant discovery and
the state, and takes commands. What it says and takes is :mod:`earshot.mqttstate`; commands go
through the control socket's own checks (:func:`earshot.control.answer`).

Whatever the broker does never reaches the audio or the watchdog:

- the daemon only calls :meth:`~MqttBridge.poke` (something changed) and
  :meth:`~MqttBridge.transcript`, which never block; the state is rendered at most every
  :data:`COALESCE_S` and published only when it changed;
- what waits for the broker is the byte-bounded :class:`~earshot.mqttstate.Outbox` (the newest
  state replaces the one waiting); incoming messages are bounded by aiomqtt's queue, and a
  payload over ``mqtt.max_payload_bytes`` is dropped;
- a broker that is down, refuses, or stops answering (publish or connect over
  :data:`TIMEOUT_S`) is retried with full-jitter backoff up to ``mqtt.reconnect_max_s``.

The broker password comes from ``$CREDENTIALS_DIRECTORY/mqtt-password`` or ``mqtt.password_file``;
it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from earshot.config import Config, device_id
from earshot.mqttstate import Outbox, Topics, discovery_messages, parse_command, state_document
from earshot.realtime.auth import client_tls, read_secret_file

__all__ = ["COALESCE_S", "TIMEOUT_S", "MqttBridge"]

logger = logging.getLogger(__name__)

COALESCE_S = 0.25
"""A burst of changes (a phase, a hook, a phase) is one state message."""
TIMEOUT_S = 10.0
"""A connect or publish the broker has not answered by then counts as a lost broker."""
CREDENTIAL_NAME = "mqtt-password"
MAX_INCOMING = 64


class MqttBridge:
    """State out, commands in, over one MQTT broker (see the module docstring).

    Args:
        config: the daemon's config (``mqtt`` and ``device``).
        status: the control socket's ``status`` (the state is made from it).
        answer: answers a control request (``{"cmd", "args"}``) as the control socket does.
        environ: the process environment (``$CREDENTIALS_DIRECTORY``).
        version: earshot's version (Home Assistant's device page).
    """

    def __init__(
        self,
        config: Config,
        *,
        status: Callable[[], Mapping[str, Any]],
        answer: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
        environ: Mapping[str, str],
        version: str,
        rng: random.Random | None = None,
    ) -> None:
        self.mqtt = config.mqtt
        self.device = config.device
        self.device_id = device_id(config.device)
        self.topics = Topics.of(self.mqtt.prefix, self.device_id, self.mqtt.discovery_prefix)
        self.outbox = Outbox(self.mqtt.queue_max_bytes)
        self._status = status
        self._answer = answer
        self._environ = environ
        self._version = version
        self._rng = rng or random.Random()
        self._changed = asyncio.Event()
        self._last_state: bytes | None = None
        self._results = 0
        self._last_problem: str | None = None
        self.connected = False
        self.connects = 0
        self.published = 0
        self.commands = 0
        self.refused = 0
        """Messages dropped: oversize, malformed, not a command."""

    # ------------------------------------------------------------------ what the daemon calls

    def poke(self) -> None:
        """Something the state shows may have changed (a phase, a hook event, mute, volume)."""
        self._changed.set()

    def transcript(self, data: Mapping[str, Any]) -> None:
        """A transcript (published, retained, only with ``mqtt.transcripts``)."""
        if not self.mqtt.transcripts:
            return
        doc = {k: data.get(k) for k in ("role", "item_id", "text", "final")}
        self.outbox.put(self.topics.transcript, json.dumps(doc, separators=(",", ":")), retain=True)
        self._changed.set()

    def report(self) -> dict[str, Any]:
        """For status: the broker, whether connected, and what went through."""
        return {
            "broker": self._where(),
            "topic": self.topics.base,
            "connected": self.connected,
            "connects": self.connects,
            "published": self.published,
            "commands": self.commands,
            "refused": self.refused,
            "queued_bytes": self.outbox.size,
            "dropped": self.outbox.dropped,
        }

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Connect, serve, reconnect; until cancelled. Publishes ``offline`` on the way out.

        Nothing the broker does ends it (or the daemon): every failure is logged once and retried.
        """
        try:
            import aiomqtt
        except ImportError:
            logger.error("MQTT: mqtt.url is set but aiomqtt is not installed (pip install 'earshot[fleet]')")
            return
        attempt = 0
        while True:
            try:
                client = self._client(aiomqtt)
                async with asyncio.timeout(TIMEOUT_S):
                    await client.__aenter__()
            except Exception as exc:  # noqa: BLE001 - refused, unreachable, bad TLS files, a broker that never answers
                self._problem(f"cannot connect to {self._where()}: {_why(exc)}")
            else:
                attempt = 0
                try:
                    await self._serve(client)
                except Exception as exc:  # noqa: BLE001 - lost, or misbehaving (the serving tasks' errors, grouped)
                    self._problem(f"lost {self._where()}: {_why(exc)}")
                finally:
                    self.connected = False
                    await self._close(client)
            cap = min(self.mqtt.reconnect_max_s, self.mqtt.reconnect_initial_s * 2**attempt)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(self._rng.uniform(0.0, cap))

    def _client(self, aiomqtt: Any) -> Any:
        url = urllib.parse.urlsplit(self.mqtt.url or "")
        tls = self._tls() if url.scheme == "mqtts" else None
        username = self.mqtt.username
        password = self._password()
        if password is not None and username is None:
            username = self.device_id
        return aiomqtt.Client(
            url.hostname or "localhost",
            url.port or (8883 if tls is not None else 1883),
            username=username,
            password=password,
            identifier=f"earshot-{self.device_id}",
            will=aiomqtt.Will(self.topics.availability, b"offline", qos=1, retain=True),
            keepalive=self.mqtt.keepalive_s,
            timeout=TIMEOUT_S,
            tls_context=tls,
            max_queued_incoming_messages=MAX_INCOMING,
            max_queued_outgoing_messages=256,
            logger=logging.getLogger("earshot.mqtt.client"),
        )

    async def _close(self, client: Any) -> None:
        with contextlib.suppress(Exception):  # best effort: the broker may be gone already
            async with asyncio.timeout(2.0):
                if _still_connected(client):
                    await client.publish(self.topics.availability, b"offline", qos=1, retain=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await client.__aexit__(None, None, None)

    async def _serve(self, client: Any) -> None:
        self.connects += 1
        # The cancels this task already carries (3.11's TaskGroup leaves one behind when a serving task
        # failed, and the connection was served again): only one more is a stop.
        carried = _cancels()
        self.connected = True
        self._last_problem = None
        logger.info("MQTT: connected to %s as %s", self._where(), self.topics.base)
        async with asyncio.timeout(TIMEOUT_S):
            await client.publish(self.topics.availability, b"online", qos=1, retain=True)
            _still_running(carried)
            for topic in self.topics.subscriptions:
                await client.subscribe(topic, qos=1)
                _still_running(carried)
        if self.mqtt.discovery:
            name = self.device.name or f"earshot {self.device_id}"
            for topic, payload in discovery_messages(
                self.topics, name=name, room=self.device.room, version=self._version
            ):
                self.outbox.put(topic, payload, retain=True)
        self._last_state = None  # a broker that lost its retained state gets it again
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._publisher(client), name="mqtt-out")
            tasks.create_task(self._commands(client), name="mqtt-in")

    async def _publisher(self, client: Any) -> None:
        self._changed.set()
        while True:
            await self._changed.wait()
            await asyncio.sleep(COALESCE_S)
            self._changed.clear()
            self._render_state()
            while (item := self.outbox.peek()) is not None:
                key, topic, payload, retain = item
                async with asyncio.timeout(TIMEOUT_S):
                    await client.publish(topic, payload, qos=1, retain=retain)
                _still_running()
                self.outbox.done(key, payload)
                self.published += 1

    def _render_state(self) -> None:
        try:
            doc = state_document(self._status())
        except Exception:  # the status of a daemon starting or stopping; the next poke renders again
            logger.debug("MQTT: no state yet", exc_info=True)
            return
        payload = json.dumps(doc, separators=(",", ":"), sort_keys=True, default=str).encode()
        if payload != self._last_state:
            self.outbox.put(self.topics.state, payload, retain=True)
            self._last_state = payload

    async def _commands(self, client: Any) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload or "").encode()
            topic = str(message.topic)
            if len(payload) > self.mqtt.max_payload_bytes:
                self.refused += 1
                logger.warning("MQTT: dropped %d bytes on %s (over mqtt.max_payload_bytes)", len(payload), topic)
                continue
            request, why = parse_command(self.topics, topic, bytes(payload))
            if request is None:
                self.refused += 1
                logger.info("MQTT: ignored a message on %s: %s", topic, why)
                if topic == f"{self.topics.base}/cmd":
                    self._result({"ok": False, "error": why}, None)
                continue
            self.commands += 1
            response = await self._answer({"cmd": request.get("cmd"), "args": request.get("args", {})})
            if topic == f"{self.topics.base}/cmd":
                self._result(response, request.get("id"))
            self.poke()

    def _result(self, response: dict[str, Any], request_id: Any) -> None:
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            response = {**response, "id": request_id}
        self._results += 1
        payload = json.dumps(response, separators=(",", ":"), default=str)
        self.outbox.put(self.topics.result, payload, retain=False, key=f"result {self._results}")
        self._changed.set()

    # ------------------------------------------------------------------ helpers

    def _where(self) -> str:
        url = urllib.parse.urlsplit(self.mqtt.url or "")
        return f"{url.scheme}://{url.hostname}:{url.port or ''}".rstrip(":")

    def _problem(self, text: str) -> None:
        if text != self._last_problem:  # once per distinct problem, not once per retry
            logger.warning("MQTT: %s; retrying", text)
            self._last_problem = text

    def _password(self) -> str | None:
        """The broker password: ``$CREDENTIALS_DIRECTORY/mqtt-password``, else ``mqtt.password_file``."""
        creds = self._environ.get("CREDENTIALS_DIRECTORY")
        candidates = [Path(creds) / CREDENTIAL_NAME] if creds else []
        candidates += [self.mqtt.password_file] if self.mqtt.password_file is not None else []
        for path in candidates:
            try:
                return read_secret_file(path).reveal()
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:  # the text never quotes the content
                self._problem(f"the broker password file {path} is unusable: {exc}")
        return None

    def _tls(self) -> ssl.SSLContext:
        mqtt = self.mqtt
        return client_tls(mqtt.ca_file, mqtt.client_cert_file, mqtt.client_key_file)


def _still_connected(client: Any) -> bool:
    """The session is still up (``offline`` can be said before leaving)."""
    inner = getattr(client, "_client", None)
    return bool(inner is not None and inner.is_connected())


def _cancels() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _still_running(carried: int = 0) -> None:
    """Raise the cancel that aiomqtt may have swallowed.

    aiomqtt waits for the broker's answer with ``asyncio.wait_for``. In Python 3.11, a cancel that lands in
    the tick the answer arrives is swallowed (CPython gh-86296): the call returns as if nothing happened,
    and the task goes on while its task group waits for it, forever (the daemon's stop hung there).
    Called after every such wait in a task that loops. ``carried``: the cancels the task had before the
    wait that were not a stop.
    """
    if _cancels() > carried:
        raise asyncio.CancelledError


def _why(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "…"
