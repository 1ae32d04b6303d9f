"""`/openapi.json` tells the truth: schemathesis (the PyPI package's CLI) generates
requests from the served schema and checks every answer against it.

The server is the real app under uvicorn with a worker (payloads encrypted, so the codec
decrypts), and creates, triggers and changes go all the way through Temporal. Besides
what schemathesis derives from the schema, this file's hooks (loaded by the schemathesis
process through SCHEMATHESIS_HOOKS) add hostile bodies and headers: custom tool schemas
deep and wide, around and past their limits, bodies nested past the depth limit,
encrypted-looking codec payloads, odd Last-Event-IDs. Every answer must still be one the
schema documents, and never a 500. Bounded by example count and time (about a minute),
with search steered towards slow responses.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from core.settings import Secret, Settings
from core.temporal import connect_as, ensure_namespace_ready
from tests.conftest import API_KEY, unique_tag
from tests.helpers import uvicorn_in_thread
from worker import build_worker

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
REPO = Path(__file__).resolve().parent.parent


async def test_schemathesis_finds_nothing(settings: Settings, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists() or shutil.which("schemathesis"), "pip install -e '.[test]'"
    # A namespace of its own: the API lists every workflow of its namespace, and one made
    # by another test, whose worker is gone, would answer changes with a (correct) 503.
    own = replace(settings, temporal_namespace=f"schemathesis-{unique_tag()}",
                  encryption_keys=(Secret(base64.b64encode(os.urandom(32)).decode()),))
    assert own.temporal_address is not None
    client = await connect_as(own, own.temporal_address)
    await ensure_namespace_ready(client)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __file__,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    async with build_worker(client, own), uvicorn_in_thread(own) as url:
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "run", f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {API_KEY}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "60", "--max-time", "75", "--seed", "20261129",
            "--generation-maximize", "response_time",
            "--suppress-health-check", "data_too_large,too_slow,filter_too_much",
            "--workers", "1", "--request-timeout", "15", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode(errors="replace")
    print(text[-3000:])
    assert process.returncode == 0, text[-8000:]


# ------------------------------------------------ hooks, in the schemathesis process


def _register_hooks() -> None:
    """Mix hostile inputs into what schemathesis generates from the schema."""
    import schemathesis
    from hypothesis import strategies as st

    from core.encryption import ENCODING, KEY_ID
    from core.tool_schema import MAX_TOOL_SCHEMA_DEPTH, MAX_TOOL_SCHEMA_MEMBERS
    from tests.test_schema_properties import tool_schemas

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    def nested_list(levels: int) -> Any:
        value: Any = []
        for _ in range(levels - 1):
            value = [value]
        return value

    def wide(members: int, shape: str) -> dict[str, Any]:
        entries = range(max(members - 2, 0))
        if shape == "enum":
            return {"type": "object", "enum": list(entries)}
        if shape == "allOf":
            return {"type": "object", "allOf": [{"type": "object"} for _ in entries]}
        return {"type": "object", shape: {f"p{i}": {} for i in entries}}

    def deep(levels: int, key: str) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "object"}
        for _ in range(levels // 2):
            schema = {"type": "object", key: {"a": schema}}
        return schema

    near = st.integers(1, 3 * MAX_TOOL_SCHEMA_MEMBERS)
    schemas = st.one_of(
        tool_schemas,
        st.builds(wide, near, st.sampled_from(["properties", "patternProperties", "enum",
                                               "allOf"])),
        st.builds(deep, st.integers(1, 4 * MAX_TOOL_SCHEMA_DEPTH),
                  st.sampled_from(["properties", "$defs", "patternProperties"])),
        st.builds(lambda levels, key: {"type": "object", key: nested_list(levels)},
                  st.integers(1, 600), st.sampled_from(["default", "const", "enum"])),
    )

    def workflow(schema_list: list[dict[str, Any]]) -> dict[str, Any]:
        tools = [{"name": f"t{i}", "description": "A tool.", "input_schema": schema,
                  "url": "https://tools.example.com/t"} for i, schema in enumerate(schema_list)]
        return {"name": "fuzzed", "tools": tools, "crew": [
            {"role": "agent", "model": "loopllama-offline", "tools": [t["name"] for t in tools]}]}

    workflows = st.lists(schemas, min_size=1, max_size=5).map(workflow)
    patches = workflows.map(lambda body: {"tools": body["tools"]})

    def deepened(body: Any, levels: int) -> Any:
        if isinstance(body, dict) and body:
            key = sorted(body)[levels % len(body)]
            return {**body, key: [body[key]] if levels < 2 else nested_list(levels)}
        return nested_list(levels)

    def deeper(strategy: Any) -> Any:
        return st.builds(deepened, strategy, st.integers(1, 200))

    codec_bodies = st.builds(
        lambda key, data, count: {"payloads": [
            {"metadata": {"encoding": b64(ENCODING), KEY_ID: b64(key)}, "data": b64(data)}
        ] * count},
        st.binary(max_size=40), st.binary(max_size=200), st.integers(1, 3),
    )
    event_ids = st.one_of(
        st.text(alphabet="0123456789", min_size=1, max_size=5000),
        # No white space at either end: the HTTP client refuses to send such a header.
        st.text(alphabet="0123456789²³¹Ù£ -+.e", min_size=1, max_size=30).filter(
            lambda value: value == value.strip()),
    )

    @schemathesis.hook
    def before_generate_body(context: Any, strategy: Any) -> Any:
        operation = context.operation
        if operation is None:
            return strategy
        method, path = operation.method.upper(), operation.path
        if (method, path) == ("POST", "/v1/workflows"):
            return st.one_of(strategy, workflows, deeper(workflows))
        if (method, path) == ("PATCH", "/v1/workflows/{workflow_id}"):
            return st.one_of(strategy, patches, deeper(patches))
        if path in ("/codec/decode", "/codec/encode"):
            return st.one_of(strategy, codec_bodies, deeper(codec_bodies))
        return st.one_of(strategy, deeper(strategy))

    @schemathesis.hook
    def before_generate_headers(context: Any, strategy: Any) -> Any:
        operation = context.operation
        if operation is None or not operation.path.endswith("/events"):
            return strategy
        return st.one_of(strategy, st.fixed_dictionaries({"Last-Event-ID": event_ids}))


if os.environ.get("SCHEMATHESIS_HOOKS") == __file__:
    _register_hooks()
