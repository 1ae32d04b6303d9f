"""`loopllama dev`, `loopllama api` and `loopllama worker`: the server-side processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from api.app import create_app
from core.contract import RUN_WORKFLOW_TYPE
from core.devserver import DevServer, forget_address, record_address
from core.outbox import Outbox
from core.settings import API_KEY_FILE, WEBHOOK_KEY_FILE, Secret, Settings
from core.temporal import (
    SA_STATUS,
    connect_as,
    ensure_namespace_ready,
    extend_retention,
    retention_shortfall,
)
from core.tracing import API_SERVICE, WORKER_SERVICE, tracing_for
from core.worker_metrics import sdk_runtime
from worker import build_model_workers, build_worker

log = logging.getLogger("loopllama")


class _QuietSignalsServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us.

    `loopllama dev` must stop the worker and the Temporal child after the API, and
    uvicorn's own handlers would re-raise the signal and kill the process first.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def load_or_create_api_key(data_dir: Path) -> tuple[str, bool]:
    """The dev API key kept in the data directory; (key, created_now)."""
    return load_or_create_secret(data_dir / API_KEY_FILE,
                                 lambda: "ll-dev-" + secrets.token_urlsafe(24))


def load_or_create_secret(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """A secret kept in a file only its owner reads; (secret, created_now)."""
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, True


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class StartupError(RuntimeError):
    """A process could not start; the message says why and what to do."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived before the process got going."""


def bind_api_socket(host: str, port: int) -> socket.socket:
    """Take the API's port first, so a busy port fails fast, before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that do. Without it every response waits ~40 ms for the client's delayed
    # ACK (Nagle), as measured-facts.md warns about test fakes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise StartupError(
            f"The API could not listen on {host}:{port} ({err.strerror}); pick another "
            "--port or stop what uses it."
        ) from None
    return sock


def one_line(err: BaseException) -> str:
    """An error's text on one line (the Temporal bridge's can span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def process_runtime(settings: Settings, *, worker: bool) -> Runtime | None:
    """This process's Temporal SDK runtime: a worker's serves its Prometheus metrics
    (LOOPLLAMA_WORKER_METRICS_PORT); with JSON logs, the SDK Core's lines go through
    Python logging. Made the default, so every client of the process uses it (the API's
    too); None when the SDK's own default will do.
    """
    try:
        runtime = sdk_runtime(settings, serve_metrics=worker)
    except (ValueError, RuntimeError) as err:  # the port is taken, or cannot be bound
        raise StartupError(
            f"The worker could not serve metrics on {settings.worker_metrics_address} "
            f"({one_line(err)}); set LOOPLLAMA_WORKER_METRICS_PORT to a free port."
        ) from None
    if runtime is not None:
        Runtime.set_default(runtime, error_if_already_set=False)
    return runtime


def say(settings: Settings, text: str, *, stderr: bool = False) -> None:
    """A status line: printed, or with JSON logs a log record like every other line."""
    if settings.log_format == "json":
        log.info(text)
    else:
        print(text, file=sys.stderr if stderr else sys.stdout, flush=True)


async def connect_and_prepare(settings: Settings, address: str,
                              stop: asyncio.Event, runtime: Runtime | None = None) -> Client:
    """Connect (retrying while the server comes up) and create what the namespace lacks.

    `runtime` is the process's SDK runtime (`process_runtime`), if it has its own.
    Gives up after `settings.temporal_wait` seconds (LOOPLLAMA_TEMPORAL_WAIT) with a
    one-line `StartupError`, or at once when `stop` is set (Ctrl-C, SIGTERM).
    """
    wait = settings.temporal_wait
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            # Bounded, so an address that swallows packets cannot outlast the deadline.
            client = await asyncio.wait_for(
                connect_as(settings, address, runtime=runtime),
                max(1.0, deadline - loop.time()),
            )
            break
        except (RuntimeError, TimeoutError) as err:
            if loop.time() >= deadline:
                reason = one_line(err) if isinstance(err, RuntimeError) else "no answer"
                raise StartupError(
                    f"Cannot reach Temporal at {address} (tried for {wait:g}s: {reason}). "
                    "Start it, or fix TEMPORAL_ADDRESS."
                ) from None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            raise Stopped()
    retention = timedelta(days=settings.retention_days)
    for item in await ensure_namespace_ready(client, retention):
        log.info("Created %s", item)
    warning = await retention_shortfall(client, retention)
    if warning is not None:
        log.warning("WARNING: %s", warning)
    return client


async def _serve_api(settings: Settings, listener: socket.socket, stop: asyncio.Event,
                     on_started: Callable[[], None]) -> None:
    # The API makes its own client (with short retries, so outages answer 503 fast), and
    # its own tracer provider (with OTEL_*), so in `dev` its spans name the API.
    async with tracing_for(settings, API_SERVICE) as tracing:
        await _serve_app(create_app(settings, tracing=tracing), listener, stop, on_started)


async def _serve_app(app: FastAPI, listener: socket.socket, stop: asyncio.Event,
                     on_started: Callable[[], None]) -> None:
    # log_config=None: uvicorn's records go through the process's logging (core/logs.py).
    config = uvicorn.Config(app, log_level="warning", lifespan="on", log_config=None)
    server = _QuietSignalsServer(config)
    serve = asyncio.create_task(server.serve(sockets=[listener]))
    # uvicorn offers no start-up hook; watch its flag so the banner never lies.
    while not server.started and not serve.done() and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if server.started:
        on_started()
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({serve, stopper}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await serve
    stopper.cancel()


async def run_dev(settings: Settings, *, host: str, port: int, temporal_port: int,
                  ui_port: int) -> None:
    """Embedded Temporal + worker + API in one process tree, until Ctrl-C / SIGTERM."""
    stop = _stop_event()
    with bind_api_socket(host, port) as listener, contextlib.ExitStack() as cleanup:
        await _run_dev(settings, stop, listener, cleanup, host=host, port=port,
                       temporal_port=temporal_port, ui_port=ui_port)
    print("LoopLlama stopped.", flush=True)


async def _run_dev(settings: Settings, stop: asyncio.Event, listener: socket.socket,
                   cleanup: contextlib.ExitStack, *, host: str, port: int, temporal_port: int,
                   ui_port: int) -> None:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    key_note = "the key in LOOPLLAMA_API_KEY"
    if not settings.api_keys:
        key, created = load_or_create_api_key(data_dir)
        settings = replace(settings, api_keys=(Secret(key),))
        key_note = f"{key}  ({'created' if created else 'kept'} in {data_dir / API_KEY_FILE})"
    if settings.webhook_key is None:
        webhook_key, _ = load_or_create_secret(data_dir / WEBHOOK_KEY_FILE,
                                               lambda: secrets.token_urlsafe(32))
        settings = replace(settings, webhook_key=Secret(webhook_key))

    outbox: Outbox | None = None
    if settings.smtp_url is None:
        outbox = Outbox(data_dir / "outbox")
        outbox.start()
        cleanup.callback(outbox.stop)
        settings = replace(settings, smtp_url=Secret(outbox.url))

    server: DevServer | None = None
    if settings.temporal_address is None:
        # With encrypted payloads the UI decodes them through the API's codec endpoint,
        # which answers the UI's origin (CORS) for people who hold a key.
        codec_args = []
        if settings.encryption_keys:
            codec_args = [f"--ui-codec-endpoint=http://{host}:{port}/codec"]
            ui_origin = f"http://127.0.0.1:{ui_port}"
            settings = replace(settings, codec_cors_origins=(
                *settings.codec_cors_origins, ui_origin, f"http://localhost:{ui_port}"))
        server = DevServer(
            db_file=data_dir / "temporal.db",
            log_file=data_dir / "temporal.log",
            port=temporal_port,
            ui_port=ui_port,
            namespace=settings.temporal_namespace,
            extra_args=codec_args,
        )
        await extend_retention(
            await server.start(), timedelta(days=settings.retention_days)
        )
        address = server.address
        ui_url = server.ui_url
    else:
        address = settings.temporal_address
        ui_url = None
    try:
        settings = replace(settings, temporal_address=address)
        client = await connect_and_prepare(settings, address, stop,
                                           process_runtime(settings, worker=True))
        # For `loopllama replay` without TEMPORAL_ADDRESS; removed again on a clean stop.
        record_address(data_dir, address)
        cleanup.callback(forget_address, data_dir, address)
        async with (
            tracing_for(settings, WORKER_SERVICE) as tracing,
            build_worker(client, settings, tracing=tracing),
            running_all(build_model_workers(client, settings)),
        ):
            await _serve_api(
                settings, listener, stop,
                on_started=lambda: _print_banner(
                    host, port, address, ui_url, key_note, server, outbox
                ),
            )
    finally:
        if server is not None:
            await server.stop()


@contextlib.asynccontextmanager
async def running_all(workers: list[Worker]) -> AsyncIterator[None]:
    """Run every worker in `workers` for the duration of the block."""
    async with contextlib.AsyncExitStack() as stack:
        for worker in workers:
            await stack.enter_async_context(worker)
        yield


def ui_run_lists() -> list[tuple[str, str]]:
    """(label, URL-encoded list query) of the Temporal UI pages worth a bookmark."""
    runs = f"WorkflowType = '{RUN_WORKFLOW_TYPE}'"
    return [(label, quote(query)) for label, query in (
        ("waiting for a human:", f"{runs} AND {SA_STATUS.name} = 'waiting_input'"),
        ("failed runs:", f"{runs} AND {SA_STATUS.name} = 'failed'"),
        ("all runs:", runs),
    )]


def _print_banner(host: str, port: int, address: str, ui_url: str | None, key_note: str,
                  server: DevServer | None, outbox: Outbox | None) -> None:
    base = f"http://{host}:{port}"
    lines = [
        "LoopLlama is running.",
        f"  API:          {base}/v1",
        f"  OpenAPI docs: {base}/docs",
        f"  Health:       {base}/health",
        f"  Temporal:     {address}" + (f" (embedded, data in {server.db_file})" if server else ""),
    ]
    if ui_url:
        lines.append(f"  Temporal UI:  {ui_url}")
        namespace = server.namespace if server else "default"
        for label, query in ui_run_lists():
            lines.append(f"    {label:<21}{ui_url}/namespaces/{namespace}/workflows?query={query}")
    if outbox:
        lines.append(f"  Outbox:       {outbox.folder}  (emails sent by send_email)")
    lines += [f"  API key:      {key_note}", "Press Ctrl-C to stop."]
    print("\n".join(lines), flush=True)


async def run_api(settings: Settings, *, host: str, port: int) -> None:
    """The API alone, against an existing Temporal server."""
    settings.require_api_keys()
    address = settings.require_temporal_address()
    stop = _stop_event()
    with bind_api_socket(host, port) as listener:
        await connect_and_prepare(settings, address, stop,
                                  process_runtime(settings, worker=False))
        _tune_for_requests()
        await _serve_api(
            settings, listener, stop,
            on_started=lambda: say(
                settings, f"LoopLlama API on http://{host}:{port} (Temporal {address})."
            ),
        )


def _tune_for_requests() -> None:
    """Keep the API's event loop answering while a thread checks a large request body.

    The checking thread (api/body_guard.py) held the GIL for up to 5 ms per switch and a
    full collection of the start-up objects paused ~200 ms: with a 1 ms switch interval
    and those objects frozen out of collection, `/health` p99 under worst-case bodies went
    from 64 to 17 ms (`python -m bench.bench_hardening`).
    """
    sys.setswitchinterval(0.001)
    gc.freeze()


async def run_worker(settings: Settings) -> None:
    """The worker alone, against an existing Temporal server."""
    address = settings.require_temporal_address()
    stop = _stop_event()
    client = await connect_and_prepare(settings, address, stop,
                                       process_runtime(settings, worker=True))
    async with (
        tracing_for(settings, WORKER_SERVICE) as tracing,
        build_worker(client, settings, tracing=tracing),
        running_all(build_model_workers(client, settings)),
    ):
        metrics = settings.worker_metrics_address
        say(
            settings,
            f"LoopLlama worker polling task queue {settings.temporal_task_queue!r} "
            f"on {address}." + (f" Metrics: http://{metrics}/metrics." if metrics else ""),
        )
        await stop.wait()
    say(settings, "LoopLlama worker stopped.", stderr=True)
