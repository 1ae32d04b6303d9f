"""JSON request bodies parsed, bounded and validated off the event loop.

FastAPI parses a body and validates it against the route's model on the event loop, and
checking a custom tool's input_schema costs real CPU time: one such body used to stall
every other request. Routers whose routes take a JSON body use `JsonBodyRoute`: the body
is parsed, its nesting depth checked (without recursion) and, when the route's body is a
model, validated against it, all in a worker thread, one body per model at a time, so the
loop goes on serving everyone else. FastAPI then receives the validated model, which it
does not validate again. The OpenAPI schema is FastAPI's own, from the routes' signatures.
"""

from __future__ import annotations

import json
import math
import re
import weakref
from asyncio import AbstractEventLoop, get_running_loop
from collections.abc import Callable, Coroutine
from typing import Any

from anyio import CapacityLimiter, to_thread
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from core.tool_schema import MAX_TOOL_SCHEMA_DEPTH, MAX_TOOLS_SCHEMA_MEMBERS, json_extent
from core.validation_messages import describe_validation_errors

# Objects and arrays inside one another. Real bodies need about 36 (a tool's input_schema
# sits 4 levels down and may nest 32); Python's own parsers fail near 1,000.
MAX_JSON_DEPTH = 64
# Objects and arrays in one body. A workflow at every limit holds about 8,500 (its tools'
# schemas at most 8,000 members together), a codec body two per payload. Counted before
# parsing, so a body of many small objects, refused anyway, never builds them: they would
# cost the whole process a garbage collection pause of ~200 ms every other request.
MAX_JSON_CONTAINERS = 20_000
# The whole body fits in 1 MiB (api/body_limit.py): at most about 500,000 members.
_MAX_MEMBERS = 1024 * 1024
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

_TOO_MANY = (
    f"The request body holds more than {MAX_JSON_CONTAINERS} objects and arrays; send a "
    f"smaller body (a workflow's tools may hold at most {MAX_TOOLS_SCHEMA_MEMBERS:,} schema "
    "members together)."
)
_TOO_DEEP = (
    f"The request body nests more than {MAX_JSON_DEPTH} levels of objects and arrays; send "
    f"a flatter body (a tool's input_schema may nest at most {MAX_TOOL_SCHEMA_DEPTH} levels)."
)



class BodyRefused(HTTPException):
    """400: the body cannot be read as JSON within the limits; the detail says why."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=400, detail=message)


def _refuse_constant(name: str) -> float:
    raise BodyRefused(f"The request body holds {name}, which is not JSON; send a number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyRefused(
            f"The request body holds the number {text[:40]}, too large for a 64-bit float; "
            "send a smaller number."
        )
    return value


def parse_json_body(body: bytes, model: type[BaseModel] | None = None) -> Any:
    """`body` parsed (and validated as `model`), or `BodyRefused` saying what to send.

    Invalid JSON raises `json.JSONDecodeError`, which FastAPI answers itself.
    """
    if _containers(body) > MAX_JSON_CONTAINERS:
        raise BodyRefused(_TOO_MANY)
    try:
        value = json.loads(body, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        raise BodyRefused(_TOO_DEEP) from None
    except UnicodeDecodeError:
        raise BodyRefused("The request body is not UTF-8; send JSON encoded as UTF-8.") from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Python reads integers of at most 4,300 digits (the hooks catch every float).
        raise BodyRefused(
            "The request body holds an integer too long to read (at most 4,300 digits); "
            "send a smaller number."
        ) from None
    if json_extent(value, max_depth=MAX_JSON_DEPTH, max_members=_MAX_MEMBERS)[0] > MAX_JSON_DEPTH:
        raise BodyRefused(_TOO_DEEP)
    if model is None:
        return value
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise BodyRefused(describe_validation_errors(list(err.errors()))) from None


def _containers(body: bytes) -> int:
    """How many objects and arrays `body` opens, without parsing it.

    Brackets inside strings count too, unless there are too many: then strings are cut
    out first (a regular expression, still C speed).
    """
    count = body.count(b"{") + body.count(b"[")
    if count <= MAX_JSON_CONTAINERS:
        return count
    bare = _STRING.sub(b"", body)
    return bare.count(b"{") + bare.count(b"[")


class _CheckedJsonRequest(Request):
    """A request whose `json()` is parsed and checked in a worker thread."""

    def __init__(self, scope: Scope, receive: Receive, model: type[BaseModel] | None,
                 limiter: CapacityLimiter) -> None:
        super().__init__(scope, receive)
        self._model = model
        self._limiter = limiter

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await to_thread.run_sync(
                parse_json_body, body, self._model, limiter=self._limiter
            )
        return self._json


class JsonBodyRoute(APIRoute):
    """A route whose JSON body is parsed, bounded and validated off the event loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = self.body_field.field_info.annotation if self.body_field else None
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else None

        # One checking thread per route and event loop: checks of one kind queue behind
        # each other instead of competing with the loop for the interpreter, so reads stay
        # fast during a burst of costly creates, and a trigger never waits behind a create.
        # (A limiter belongs to the loop it was first used on, hence one per loop.)
        limiters: weakref.WeakKeyDictionary[AbstractEventLoop, CapacityLimiter] = (
            weakref.WeakKeyDictionary())

        async def checked(request: Request) -> Response:
            loop = get_running_loop()
            limiter = limiters.get(loop)
            if limiter is None:
                limiter = limiters[loop] = CapacityLimiter(1)
            return await handler(
                _CheckedJsonRequest(request.scope, request.receive, model, limiter))

        return checked
