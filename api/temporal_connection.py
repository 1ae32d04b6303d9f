"""The API process's one Temporal client, connected in the background.

The API must start (and answer 503, not crash) while Temporal is down, so the lifespan
does not block on connecting: it keeps trying until the server answers. Once connected,
the client reconnects by itself after outages; calls made meanwhile fail with RPC
errors that the error handlers turn into 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from temporalio.client import Client, Interceptor

from core.settings import Settings
from core.temporal import API_RETRY, connect_as

log = logging.getLogger("loopllama.api")

RETRY_SECONDS = 1.0


class TemporalConnection:
    """Holds the client once it exists."""

    def __init__(self, settings: Settings, client: Client | None = None, *,
                 interceptors: Sequence[Interceptor] = ()) -> None:
        self.settings = settings
        self.interceptors = interceptors  # tracing (core/tracing.py), if on
        self.address = settings.temporal_address or ""
        self.client = client
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin connecting in the background (no-op when a client was given)."""
        if self.client is None and self._task is None:
            self._task = asyncio.create_task(self._connect_until_done())

    async def stop(self) -> None:
        """Stop trying to connect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _connect_until_done(self) -> None:
        warned = False
        while self.client is None:
            try:
                self.client = await connect_as(self.settings, self.address, retry=API_RETRY,
                                               interceptors=self.interceptors)
            except RuntimeError:
                if not warned:
                    log.warning("Temporal at %s is not reachable yet; retrying.", self.address)
                    warned = True
                await asyncio.sleep(RETRY_SECONDS)
        if warned:
            log.info("Connected to Temporal at %s.", self.address)
