"""Bearer-key authentication for every `/v1` path and `/metrics`, checked before anything.

A middleware rather than a route dependency: FastAPI parses (and may reject) a body
before it runs dependencies, and an unauthenticated caller must get 401 whatever it
sent, including for paths that do not exist.
"""

from __future__ import annotations

import hmac

from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from core.settings import Secret

# Documents the scheme in OpenAPI; enforcement is `BearerAuthMiddleware`.
bearer_scheme = HTTPBearer(auto_error=False, description="One of LOOPLLAMA_API_KEY's keys.")

PROTECTED_PREFIX = "/v1"
# Outside /v1 but behind a key all the same (`/health` and `/docs` stay open).
PROTECTED_PATHS = frozenset({"/metrics"})
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def key_problem(authorization: str, keys: tuple[Secret, ...]) -> str | None:
    """Why an Authorization header is not accepted, or None when it is."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "Missing API key. Send it as 'Authorization: Bearer <key>'."
    presented = token.strip().encode()
    # Compare against every key (no early exit) so timing reveals neither match nor index.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key.value.encode())
    if matched:
        return None
    return (
        "Invalid API key. Check LOOPLLAMA_API_KEY and send one of its keys as "
        "'Authorization: Bearer <key>'."
    )


class BearerAuthMiddleware:
    """Answer 401 in the error envelope for `/v1` requests without a valid key."""

    def __init__(self, app: ASGIApp, keys: tuple[Secret, ...]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        # Behind a proxy prefix (uvicorn --root-path), the path starts with it; routing
        # ignores it, so the check must too.
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        if scope["type"] == "http" and (
            path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
            or path in PROTECTED_PATHS
        ):
            headers = dict(scope.get("headers") or [])
            problem = key_problem(headers.get(b"authorization", b"").decode("latin-1"),
                                  self.keys)
            if problem is not None:
                await error_response(401, problem, _CHALLENGE)(scope, receive, send)
                return
        await self.app(scope, receive, send)
