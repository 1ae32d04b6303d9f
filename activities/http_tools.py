"""HTTP tools: the built-in `http_request` and the custom tools a workflow declares."""

from __future__ import annotations

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from activities.net_policy import DestinationRefused, check_destination
from core.types import ToolCall, ToolResult

TOOL_UNAVAILABLE = "ToolUnavailable"
MAX_RESPONSE_BYTES = 64 * 1024
REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class HttpTools:
    """Both HTTP tools share one client per worker and the worker's allow-list."""

    def __init__(self, client: httpx.AsyncClient, allowlist: tuple[str, ...]) -> None:
        self._client = client
        self._allowlist = allowlist

    @activity.defn(name="http_request")
    async def http_request(self, call: ToolCall) -> ToolResult:
        """Any method to an allow-listed host; the status and the body's start come back."""
        url = str(call.input["url"])
        try:
            await check_destination(url, self._allowlist, require_allowlisted=True)
        except DestinationRefused as refused:
            return ToolResult(content=f"Request refused: {refused}.", is_error=True)
        request = self._client.build_request(
            str(call.input.get("method", "GET")),
            url,
            headers={**call.input.get("headers", {}), "Idempotency-Key": call.idempotency_key},
            content=call.input.get("body"),
        )
        status, body = await self._send(request)
        return ToolResult(content=f"HTTP {status}\n{body}", is_error=status >= 400)

    @activity.defn(name="custom_tool")
    async def custom_tool(self, call: ToolCall) -> ToolResult:
        """POST the tool input as JSON to the tool's endpoint, with an idempotency key.

        5xx answers and network errors are retried with the same key, so a receiver that
        honours `Idempotency-Key` acts once; 4xx answers go back to the model.
        """
        if call.custom is None:
            raise ApplicationError(f"{call.name} is not a custom tool", non_retryable=True)
        try:
            await check_destination(call.custom.url, self._allowlist, require_allowlisted=False)
        except DestinationRefused as refused:
            return ToolResult(content=f"Request refused: {refused}.", is_error=True)
        request = self._client.build_request(
            "POST", call.custom.url, json=call.input,
            headers={"Idempotency-Key": call.idempotency_key},
        )
        status, body = await self._send(request)
        if status >= 500:
            raise ApplicationError(
                f"{call.name} answered HTTP {status}", type=TOOL_UNAVAILABLE
            )
        return ToolResult(content=body or f"HTTP {status}", is_error=status >= 400)

    async def _send(self, request: httpx.Request) -> tuple[int, str]:
        try:
            async with heartbeating():
                response = await self._client.send(request, stream=True)
                try:
                    body = await _read_bounded(response)
                finally:
                    await response.aclose()
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"{request.method} {request.url.host} failed ({type(err).__name__})",
                type=TOOL_UNAVAILABLE,
            ) from None
        return response.status_code, body


async def _read_bounded(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    text = b"".join(chunks)[:MAX_RESPONSE_BYTES].decode(response.encoding or "utf-8", "replace")
    return text + ("\n[truncated]" if size >= MAX_RESPONSE_BYTES else "")
