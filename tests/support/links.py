"""Running a Link in tests as the daemon does: its loop, and one task taking its events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from earshot.realtime.connection import Link, LinkEvent


async def run_with(link: Link, on_event: Callable[[LinkEvent], None]) -> None:
    """``link.run()`` and a task handing every event to ``on_event`` in order, until cancelled."""

    async def drain() -> None:
        async for event in link.events():
            on_event(event)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run())
        tg.create_task(drain())
