"""What every model provider is to the worker's one model-call activity.

A provider gets the provider-neutral request (Messages-shaped: content blocks of text,
`tool_use` and `tool_result`, and tools with an `input_schema`), with `model` set to the
provider's own name for the model (`gpt-4.1` for `openai/gpt-4.1`), and answers in the
same shape. It owns its client and its error mapping: it raises `ApplicationError`s of
the types in core/contract.py (`replies.unavailable` for what passes with time,
`replies.rejected` for what needs a change, `replies.unusable_reply`). Metrics, traces,
heartbeats and "not configured" belong to the activity (activities/models/calls.py).
"""

from __future__ import annotations

import urllib.request
from typing import Protocol

from core.types import ModelRequest, ModelResponse


class ModelProvider(Protocol):
    """One configured provider: its client, its request shape, its errors."""

    # What traces call the provider (`anthropic`, `openai`, a LOOPLLAMA_PROVIDERS name).
    name: str

    async def call(self, request: ModelRequest) -> ModelResponse:
        """Send `request` (its `model` the provider's own model name) and answer."""
        ...

    async def close(self) -> None:
        """Close the provider's client; called once, when the worker stops."""
        ...


def behind_proxy() -> bool:
    """Whether the environment sends HTTPS through a proxy (HTTPS_PROXY, ALL_PROXY).

    Providers then keep their SDK's default httpx client, which honours it, instead of
    the aiohttp transport, which does not. Without a proxy, aiohttp: with hundreds of
    model calls in flight, httpx's connection pool costs 2.5-3x the CPU per call (5.4 vs
    1.6-2.0 ms at 200-600 calls at once, most of a worker's CPU per call;
    `python -m bench.bench_runs --profile`).
    """
    proxies = urllib.request.getproxies()
    return bool(proxies.get("https") or proxies.get("all"))
