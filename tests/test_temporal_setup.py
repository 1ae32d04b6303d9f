"""What `loopllama api` and `worker` set up on a fresh Temporal namespace."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from core.devserver import DevServer
from core.temporal import SEARCH_ATTRIBUTES, connect, ensure_namespace_ready


async def test_a_fresh_namespace_is_created_with_search_attributes(
    dev_server: DevServer, tmp_path: Path,
) -> None:
    namespace = f"fresh-{uuid.uuid4().hex[:8]}"
    client = await connect(dev_server.address, namespace, blob_dir=tmp_path / "blobs")
    added = await ensure_namespace_ready(client)
    assert added[0] == f"namespace {namespace}"
    assert sorted(added[1:]) == sorted(f"search attribute {k.name}" for k in SEARCH_ATTRIBUTES)
    # Usable at once, and a second start adds nothing.
    assert (await client.count_workflows()).count == 0
    assert await ensure_namespace_ready(client) == []
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    assert {k.name for k in SEARCH_ATTRIBUTES} <= set(listed.custom_attributes)
