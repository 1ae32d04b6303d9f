"""`/openapi.json` tells the truth: schemathesis (the PyPI package's CLI) generates
requests from the served schema and checks every answer against it.

The server is the real app under uvicorn with a worker, so creates, triggers and
changes go all the way through Temporal. Bounded by example count and time.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from core.settings import Settings
from core.temporal import connect_as, ensure_namespace_ready
from tests.conftest import API_KEY, unique_tag
from tests.helpers import uvicorn_in_thread
from worker import build_worker

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def test_schemathesis_finds_nothing(settings: Settings, tmp_path: Path) -> None:
    assert SCHEMATHESIS.exists() or shutil.which("schemathesis"), "pip install -e '.[test]'"
    # A namespace of its own: the API lists every workflow of its namespace, and one made
    # by another test, whose worker is gone, would answer changes with a (correct) 503.
    own = replace(settings, temporal_namespace=f"schemathesis-{unique_tag()}")
    assert own.temporal_address is not None
    client = await connect_as(own, own.temporal_address)
    await ensure_namespace_ready(client)
    async with build_worker(client, own), uvicorn_in_thread(own) as url:
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "run", f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {API_KEY}",
            "--checks", CHECKS,
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "25", "--max-time", "60", "--seed", "20261129",
            "--workers", "1", "--request-timeout", "15", "--no-color",
            "--report", "junit", "--report-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode(errors="replace")
    print(text[-3000:])
    assert process.returncode == 0, text[-8000:]
