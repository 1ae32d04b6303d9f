"""The error envelope `{"error": {"type", "message"}}` and the handlers that produce it.

Every error the API returns passes through here, so no route builds an error body by
hand and no stack trace or secret can reach a client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.service import RPCError, RPCStatusCode

from core.validation_messages import describe_validation_errors

log = logging.getLogger("loopllama.api")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "method_not_allowed",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error with a status and a sentence that tells the caller what to change."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class BadRequest(ApiError):
    """400: the request is malformed; nothing changed."""

    def __init__(self, message: str):
        super().__init__(400, message)


class NotFound(ApiError):
    """404: no such resource."""

    def __init__(self, message: str):
        super().__init__(404, message)


class Conflict(ApiError):
    """409: the resource is not in a state that allows this."""

    def __init__(self, message: str):
        super().__init__(409, message)


class Unavailable(ApiError):
    """503: Temporal (or a worker) cannot be reached right now."""

    def __init__(self, message: str):
        super().__init__(503, message, headers={"Retry-After": "1"})


TEMPORAL_UNREACHABLE = (
    "Temporal cannot be reached right now, so the request was not carried out. "
    "Retry shortly; if it persists, check that the Temporal server is running "
    "(GET /health shows its state)."
)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The envelope for one error."""
    body = {"error": {"type": _TYPE_BY_STATUS.get(status, "api_error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def map_rpc_error(err: RPCError) -> ApiError:
    """Translate a Temporal RPC failure that no route handled into an API error."""
    if err.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    ):
        return Unavailable(TEMPORAL_UNREACHABLE)
    log.error("Temporal call failed: %s (%s)", err.status.name, err.message)
    return ApiError(500, "Temporal rejected the request; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type to the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"No route {request.method} {request.url.path}. See /docs for the API."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RPCError)
    async def _rpc(_: Request, exc: RPCError) -> JSONResponse:
        mapped = map_rpc_error(exc)
        return error_response(mapped.status, mapped.message, mapped.headers)


class UnexpectedErrorMiddleware:
    """Answer 500 in the envelope for any error no handler knew, and log it briefly.

    A plain `exception_handler(Exception)` would still let Starlette re-raise the error
    and print its traceback; this stops it here. Only the type is logged: messages of
    arbitrary exceptions may carry secrets or request data.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if scope["type"] != "http" or started:
                raise
            log.error(
                "Unhandled error in %s %s (%s)",
                scope.get("method"), scope.get("path"), type(exc).__name__,
            )
            response = error_response(500, "Internal error; it has been logged.")
            await response(scope, receive, send)
