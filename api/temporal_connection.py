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
from pathlib import Path

from temporalio.client import Client

from core.temporal import API_RETRY, connect

log = logging.getLogger("loopllama.api")

RETRY_SECONDS = 1.0


class TemporalConnection:
    """Holds the client once it exists."""

    def __init__(
        self, address: str, namespace: str, blob_dir: Path, client: Client | None = None
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.blob_dir = blob_dir
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
                self.client = await connect(
                    self.address, self.namespace, blob_dir=self.blob_dir, retry=API_RETRY
                )
            except RuntimeError:
                if not warned:
                    log.warning("Temporal at %s is not reachable yet; retrying.", self.address)
                    warned = True
                await asyncio.sleep(RETRY_SECONDS)
        if warned:
            log.info("Connected to Temporal at %s.", self.address)
