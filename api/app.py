"""The FastAPI application: `/v1` routes in front of Temporal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Security
from temporalio.client import Client

from api.auth import BearerAuthMiddleware, bearer_scheme
from api.body_limit import MAX_BODY_BYTES, BodyLimitMiddleware
from api.docs import install_docs
from api.errors import UnexpectedErrorMiddleware, install_error_handlers
from api.metrics import ApiMetrics, HttpMetricsMiddleware
from api.metrics import router as metrics_router
from api.openapi import install_openapi
from api.routes import codec, health, runs, workflows
from api.services.recent_runs import RecentRuns
from api.temporal_connection import TemporalConnection
from core.encryption import EncryptionCodec
from core.settings import Settings
from core.tracing import Tracing

log = logging.getLogger("loopllama.api")


def create_app(settings: Settings, client: Client | None = None, *,
               tracing: Tracing | None = None) -> FastAPI:
    """Build the app. Pass `client` to share one; otherwise the lifespan connects.

    Without a client the app connects in the background, so it starts even while
    Temporal is down and answers 503 until Temporal is reachable. With `tracing`
    (core/tracing.py) every request is a span, and so is what it asks of Temporal.
    """
    connection = TemporalConnection(
        settings, client, interceptors=tracing.client_interceptors() if tracing else ()
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.require_temporal_address()
        connection.start()
        try:
            yield
        finally:
            await connection.stop()

    app = FastAPI(
        title="LoopLlama",
        version="0.2.0",
        description="Durable crews of LLM agents with humans in the loop, on Temporal.",
        lifespan=lifespan,
        # Served by install_docs from local assets instead of FastAPI's CDN pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.temporal = connection
    app.state.run_event_hub = None
    # Runs this process started that list queries may not show yet (recent_runs.py).
    app.state.recent_runs = RecentRuns()
    # This app's own Prometheus registry (GET /metrics), never prometheus-client's global.
    app.state.metrics = ApiMetrics()
    keys = settings.encryption_key_bytes
    app.state.codec = EncryptionCodec(keys) if keys else None
    # The last added runs first: count and time, authenticate, then bound the body, then
    # the app.
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(BearerAuthMiddleware, keys=settings.api_keys)
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics)
    install_error_handlers(app)

    v1 = APIRouter(prefix="/v1", dependencies=[Security(bearer_scheme)])
    v1.include_router(workflows.router)
    v1.include_router(runs.router)
    app.include_router(health.router)
    app.include_router(codec.router)
    app.include_router(metrics_router)
    app.include_router(v1)
    install_openapi(app)
    install_docs(app)
    if tracing is not None:
        tracing.instrument_app(app)
    return app
