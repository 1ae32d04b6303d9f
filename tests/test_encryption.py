"""Payloads encrypted at rest (LOOPLLAMA_ENCRYPTION_KEY) and the codec endpoint."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from api.app import create_app
from core.devserver import DevServer
from core.encryption import KEY_ID, key_id
from core.settings import Secret, Settings
from core.temporal import connect, connect_as, ensure_namespace_ready
from tests.conftest import API_KEY, crew, for_role, unique_tag
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import create_workflow, temporal_cli, trigger, uvicorn_in_thread, wait_for_status
from worker import build_worker

KEY_A = base64.b64encode(os.urandom(32)).decode()
KEY_B = base64.b64encode(os.urandom(32)).decode()


@dataclass
class Stack:
    api: httpx.AsyncClient
    client: Client
    settings: Settings


@pytest.fixture(scope="module")
async def namespace(dev_server: DevServer, data_dir: Path) -> str:
    """A namespace of the encrypted tests' own: other tests (without the key) list every
    workflow of theirs, and must not meet these."""
    name = f"encrypted-{unique_tag()}"
    client = await connect(dev_server.address, name, blob_dir=data_dir / "blobs")
    await ensure_namespace_ready(client)
    return name


@pytest.fixture
async def encrypted(settings: Settings, namespace: str) -> AsyncIterator[Stack]:
    keyed = replace(settings, encryption_keys=(Secret(KEY_A),), temporal_namespace=namespace)
    assert keyed.temporal_address is not None
    client = await connect_as(keyed, keyed.temporal_address)
    async with build_worker(client, keyed), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(keyed, client)), base_url="http://t",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as api:
        yield Stack(api, client, keyed)


async def secret_run(stack: Stack, fake: FakeAnthropic, output: str) -> tuple[str, str]:
    tag = unique_tag()
    fake.reply_text(output, when=for_role(tag, "writer"))
    workflow = await create_workflow(stack.api, crew("writer", tag=tag))
    secret_input = f"Plan the merger with Globex {unique_tag()}"
    run_id = (await trigger(stack.api, workflow["id"], secret_input))["id"]
    done = await wait_for_status(stack.api, run_id, "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["input"] == secret_input and done["output"] == output  # the API reads clear
    return run_id, secret_input


async def test_histories_and_memos_hold_no_clear_text(
    encrypted: Stack, fake_anthropic: FakeAnthropic, dev_server: DevServer, data_dir: Path
) -> None:
    output = f"Confidential: offer 42 million {unique_tag()}"
    run_id, secret_input = await secret_run(encrypted, fake_anthropic, output)
    namespace = encrypted.settings.temporal_namespace
    shown = await temporal_cli(dev_server, "workflow", "show", "--workflow-id", run_id,
                               "-o", "json", namespace=namespace)
    described = await temporal_cli(dev_server, "workflow", "describe", "--workflow-id",
                                   run_id, "-o", "json", namespace=namespace)
    for text in (shown, described):
        for secret in (secret_input, output, "You are the writer", "Globex", "42 million"):
            assert secret not in text
    # Search attributes stay clear: ids, statuses and times only (no crew name).
    assert "LoopLlamaStatus" in described and "LoopLlamaCrew" not in described
    assert base64.b64encode(b'"completed"').decode() in described  # a plain JSON payload
    assert base64.b64encode(b"binary/encrypted").decode() in shown


async def test_large_payloads_are_encrypted_in_the_blob_store_too(
    encrypted: Stack, fake_anthropic: FakeAnthropic
) -> None:
    marker = unique_tag()
    output = f"Secret report {marker} " + "lorem ipsum " * 4000  # ~48 KB: offloaded
    await secret_run(encrypted, fake_anthropic, output)
    blobs = list(encrypted.settings.blob_dir.rglob("*"))
    assert blobs and not any(marker.encode() in f.read_bytes() for f in blobs if f.is_file())


async def test_keys_rotate_and_failures_are_encrypted(
    encrypted: Stack, fake_anthropic: FakeAnthropic, settings: Settings
) -> None:
    run_id, secret_input = await secret_run(encrypted, fake_anthropic, "first")
    # B now encrypts; A still decrypts what it wrote.
    rotated = replace(encrypted.settings, encryption_keys=(Secret(KEY_B), Secret(KEY_A)))
    assert rotated.temporal_address is not None
    client = await connect_as(rotated, rotated.temporal_address)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(rotated, client)), base_url="http://t",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as api:
        assert (await api.get(f"/v1/runs/{run_id}")).json()["data"]["input"] == secret_input
    (payload,) = await client.data_converter.encode(["x"])
    assert payload.metadata[KEY_ID].decode() == key_id(base64.b64decode(KEY_B))
    # Without the key, a read is refused rather than shown as garbage.
    only_b = replace(encrypted.settings, encryption_keys=(Secret(KEY_B),))
    assert only_b.temporal_address is not None
    lacking = await connect_as(only_b, only_b.temporal_address)
    with pytest.raises(Exception, match="not among LOOPLLAMA_ENCRYPTION_KEY"):
        await (await lacking.get_workflow_handle(run_id).describe()).memo()


async def test_the_codec_endpoint_decodes_for_key_holders_only(
    encrypted: Stack, fake_anthropic: FakeAnthropic, dev_server: DevServer
) -> None:
    run_id, secret_input = await secret_run(encrypted, fake_anthropic, "codec output")
    settings = replace(encrypted.settings, codec_cors_origins=("http://127.0.0.1:8233",))
    async with uvicorn_in_thread(settings) as url, httpx.AsyncClient(base_url=url) as http:
        history = json.loads(await temporal_cli(
            dev_server, "workflow", "show", "--workflow-id", run_id, "-o", "json",
            namespace=encrypted.settings.temporal_namespace))
        started = history["events"][0]["workflowExecutionStartedEventAttributes"]
        body = {"payloads": started["input"]["payloads"]}
        assert (await http.post("/codec/decode", json=body)).status_code == 401
        decoded = await http.post("/codec/decode", json=body,
                                  headers={"Authorization": f"Bearer {API_KEY}"})
        assert decoded.status_code == 200
        (payload,) = decoded.json()["payloads"]
        assert json.loads(base64.b64decode(payload["data"]))["input"] == secret_input
        # Round trip through encode.
        encoded = await http.post("/codec/encode", json=decoded.json(),
                                  headers={"Authorization": f"Bearer {API_KEY}"})
        again = await http.post("/codec/decode", json=encoded.json(),
                                headers={"Authorization": f"Bearer {API_KEY}"})
        assert again.json() == decoded.json()
        # CORS: the configured UI origin only.
        ok = await http.options("/codec/decode", headers={
            "Origin": "http://127.0.0.1:8233", "Access-Control-Request-Method": "POST"})
        assert ok.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
        other = await http.options("/codec/decode", headers={"Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        # A browser logs in once; the cookie then stands for the key.
        wrong = await http.post("/codec/login", data={"key": "nope"})
        assert wrong.status_code == 401
        login = await http.post("/codec/login", data={"key": API_KEY})
        assert login.status_code == 200 and "loopllama_codec" in login.cookies
        http.cookies.set("loopllama_codec", login.cookies["loopllama_codec"])
        with_cookie = await http.post("/codec/decode", json=body)
        assert with_cookie.status_code == 200
        # The temporal CLI shows clear text through the codec endpoint, with the key.
        clear = await temporal_cli(dev_server, "workflow", "show", "--workflow-id", run_id,
                                   "--codec-endpoint", f"{url}/codec",
                                   "--codec-auth", f"Bearer {API_KEY}",
                                   namespace=encrypted.settings.temporal_namespace)
        assert secret_input in clear


def test_a_malformed_key_is_refused_at_start() -> None:
    from core.settings import SettingsError

    for bad in ("short", base64.b64encode(b"x" * 31).decode(), f"{KEY_A},nope"):
        with pytest.raises(SettingsError, match="LOOPLLAMA_ENCRYPTION_KEY"):
            Settings.from_env({"LOOPLLAMA_ENCRYPTION_KEY": bad})
    keys = Settings.from_env({"LOOPLLAMA_ENCRYPTION_KEY": f"{KEY_A}, {KEY_B}"}).encryption_keys
    assert [k.value for k in keys] == [KEY_A, KEY_B]


async def test_a_list_leaves_out_what_it_cannot_decode(
    api: httpx.AsyncClient, settings: Settings, temporal: Client
) -> None:
    # A definition written with a key this API does not hold (another deployment's, or
    # a key since removed) must not fail every list of the namespace.
    keyed = replace(settings, encryption_keys=(Secret(KEY_A),))
    assert keyed.temporal_address is not None
    other = await connect_as(keyed, keyed.temporal_address)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(keyed, other)), base_url="http://t",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as keyed_api:
        hidden = await create_workflow(keyed_api, crew("writer", model="loopllama-offline"))
    mine = await create_workflow(api, crew("writer", model="loopllama-offline"))
    listed = await api.get("/v1/workflows")
    assert listed.status_code == 200, listed.text
    ids = {w["id"] for w in listed.json()["data"]}
    assert mine["id"] in ids and hidden["id"] not in ids
    await temporal.get_workflow_handle(hidden["id"]).terminate("test done")
