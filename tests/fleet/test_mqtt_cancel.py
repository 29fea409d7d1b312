"""The MQTT bridge stops when it is told to, even when its client swallows the cancel.

aiomqtt waits for a broker's answer with ``asyncio.wait_for``. In Python 3.11 a cancel that lands in the
tick the answer arrives is swallowed there (CPython gh-86296). The daemon's stop once hung on it: the
publisher went back to waiting for news while its task group waited for it. This client makes that tick
happen on purpose.
"""

from __future__ import annotations

import asyncio
from typing import Any

from earshot.config import parse_config
from earshot.mqttlink import MqttBridge


class AnswersAsItIsCancelled:
    """A client whose publish waits the way aiomqtt's does; the test answers it and cancels in one tick."""

    def __init__(self) -> None:
        self.waiting: asyncio.Future[None] | None = None
        self.publishing = asyncio.Event()
        self.published = 0

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.waiting = asyncio.get_running_loop().create_future()
        self.publishing.set()
        await asyncio.wait_for(self.waiting, 10.0)
        self.published += 1


async def answer(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


async def test_a_cancel_that_lands_as_the_broker_answers_still_stops_the_publisher() -> None:
    cfg = parse_config("mqtt: {url: 'mqtt://broker', discovery: false}\n")
    bridge = MqttBridge(cfg, status=lambda: {"phase": "idle"}, answer=answer, environ={}, version="t")
    client = AnswersAsItIsCancelled()
    publisher = asyncio.create_task(bridge._publisher(client))
    await client.publishing.wait()  # the state, the first thing it publishes
    assert client.waiting is not None
    client.waiting.set_result(None)  # the broker's answer and the stop, in the same tick
    publisher.cancel()
    async with asyncio.timeout(5.0):
        done, _ = await asyncio.wait({publisher})
    assert publisher in done
    assert publisher.cancelled()
    assert client.published == 1  # the answer did arrive: wait_for returned it instead of the cancel
