"""Large payloads live outside Temporal's history: the claim-check pattern.

Temporal refuses a payload over 2 MB, a memo over 2 MB and a history over 50 MB. A crew
whose agents write long reports passes those quickly: every model call carries the step
input (all earlier outputs) and the tool conversation so far. So every payload at or
above `OFFLOAD_THRESHOLD` bytes (activity inputs and results, memo entries, update
arguments, the run's result) is written to a content-addressed file store, and the
history holds a small reference instead. This uses the Temporal SDK's own external
storage hook (`DataConverter.external_storage`), so the worker, the API, the replayer
and the Temporal UI's codec path all resolve references the same way.

The store is a directory that every LoopLlama process of a deployment must reach: the
data directory under `loopllama dev`, a shared volume in a cluster. Files are written
once under the SHA-256 of their content (so a retry writes nothing new) via a rename
of a partial file of their own, so a reader never sees half a file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

# Small payloads stay inline, readable in the Temporal UI. At 16 KiB a 20-agent run's
# memo stays under 350 KiB, and a history grows by a ~200-byte reference per large text.
OFFLOAD_THRESHOLD = 16 * 1024
DRIVER_NAME = "loopllama-files"


class BlobMissingError(RuntimeError):
    """A reference points at a file this process cannot read."""


class FileBlobStore(StorageDriver):
    """Payloads as files named by their SHA-256, under one directory."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def name(self) -> str:
        """The name references carry; the same in every process of a deployment."""
        return DRIVER_NAME

    def path_for(self, digest: str) -> Path:
        """Where the payload with this SHA-256 lives."""
        return self._root / digest[:2] / digest

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Write each payload once; return the claims that find it again."""
        return await asyncio.to_thread(self._store_all, payloads)

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Read the payloads back."""
        return await asyncio.to_thread(self._retrieve_all, claims)

    def _store_all(self, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        claims = []
        for payload in payloads:
            data = payload.SerializeToString(deterministic=True)
            digest = hashlib.sha256(data).hexdigest()
            path = self.path_for(digest)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                # One partial file per write: threads of one process store at once, and
                # two of them may hold the same content.
                partial = path.with_name(f"{digest}.{uuid.uuid4().hex}.partial")
                partial.write_bytes(data)
                os.replace(partial, path)
            claims.append(StorageDriverClaim(claim_data={"sha256": digest}))
        return claims

    def _retrieve_all(self, claims: Sequence[StorageDriverClaim]) -> list[Payload]:
        payloads = []
        for claim in claims:
            digest = claim.claim_data["sha256"]
            try:
                data = self.path_for(digest).read_bytes()
            except FileNotFoundError:
                raise BlobMissingError(
                    f"Large payload {digest} is not in the blob store at {self._root}; every "
                    "LoopLlama process must share LOOPLLAMA_BLOB_DIR."
                ) from None
            payload = Payload()
            payload.ParseFromString(data)
            payloads.append(payload)
        return payloads
