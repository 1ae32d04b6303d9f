"""Heartbeat while an activity awaits something slow, so a dead worker is noticed fast."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

# Well inside the heartbeat timeout the workflows set on model and tool calls.
HEARTBEAT_EVERY_SECONDS = 2.0


@contextlib.asynccontextmanager
async def heartbeating(every: float = HEARTBEAT_EVERY_SECONDS) -> AsyncIterator[None]:
    """Send a heartbeat every `every` seconds for as long as the block runs."""

    async def beat() -> None:
        # The first beat waits a period: the attempt has just started, so one sent at
        # once only costs an RPC on every call, most of which finish within a period.
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
