"""The blob store on its own: content-addressed files, written once, read back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import StorageDriverRetrieveContext, StorageDriverStoreContext

from core.blob_store import BlobMissingError, FileBlobStore


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


async def test_the_same_payload_stored_at_once_from_many_threads_is_one_file(
    tmp_path: Path,
) -> None:
    # A workflow task's completion stores its payloads in threads; two of them with the
    # same content (a memo entry and a result) once raced on one partial file name.
    store = FileBlobStore(tmp_path)
    for round_ in range(20):
        same = payload(f"round {round_} " + "x" * 64 * 1024)
        claims = await asyncio.gather(*(
            store.store(StorageDriverStoreContext(), [same]) for _ in range(16)))
        assert len({str(c[0].claim_data) for c in claims}) == 1
        (back,) = await store.retrieve(StorageDriverRetrieveContext(), claims[0])
        assert back == same
    files = await asyncio.to_thread(lambda: [f for f in tmp_path.rglob("*") if f.is_file()])
    assert len(files) == 20 and not any(f.name.endswith(".partial") for f in files)


async def test_a_missing_blob_says_where_it_was_looked_for(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "one")
    claims = await store.store(StorageDriverStoreContext(), [payload("hello")])
    with pytest.raises(BlobMissingError, match="LOOPLLAMA_BLOB_DIR"):
        await FileBlobStore(tmp_path / "other").retrieve(StorageDriverRetrieveContext(),
                                                         claims)
