"""`/codec/encode` and `/codec/decode`: Temporal's remote codec protocol, for the UI.

With LOOPLLAMA_ENCRYPTION_KEY set, histories hold ciphertext. The Temporal UI (and
`temporal workflow show --codec-endpoint ... --codec-auth "Bearer <key>"`) send the
payloads they show here to be decrypted, so people who hold an API key see clear text
and everyone else ciphertext. A key comes as `Authorization: Bearer <key>`, or, for a
browser whose UI cannot send one, as the cookie `GET /codec/login` sets after the key is
entered there (the UI's codec settings must include cross-origin credentials). CORS
answers the configured UI origins only.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Body, Cookie, Header, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf.json_format import MessageToDict, ParseDict
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from api.auth import key_problem
from api.body_guard import JsonBodyRoute
from api.errors import ApiError, BadRequest
from api.schemas import ErrorEnvelope
from core.encryption import EncryptionKeyError, UndecryptablePayload
from core.settings import Secret

router = APIRouter(prefix="/codec", tags=["codec"], route_class=JsonBodyRoute)

COOKIE = "loopllama_codec"
_LOGIN_FORM = """<!doctype html><title>LoopLlama codec</title>
<form method="post"><p>API key, so the Temporal UI can show this deployment's payloads
decrypted in this browser:</p><input type="password" name="key" autofocus>
<button>Save</button></form>"""


def cookie_token(key: str) -> str:
    """What the login cookie holds for `key`: a digest, never the key itself."""
    return hashlib.sha256(f"loopllama codec\n{key}".encode()).hexdigest()


def _authorized(keys: Sequence[Secret], authorization: str | None, cookie: str | None) -> bool:
    if authorization and key_problem(authorization, tuple(keys)) is None:
        return True
    matched = False
    for key in keys:
        matched |= hmac.compare_digest((cookie or "").encode(), cookie_token(key.value).encode())
    return matched


def _cors(request: Request, response: Response) -> Response:
    origin = request.headers.get("origin")
    if origin and origin in request.app.state.settings.codec_cors_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Headers"] = (
            "Authorization, Content-Type, X-Namespace"
        )
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Vary"] = "Origin"
    return response


async def _transform(request: Request, body: dict[str, Any], authorization: str | None,
                     cookie: str | None, encode: bool) -> Response:
    if not _authorized(request.app.state.settings.api_keys, authorization, cookie):
        error = ApiError(401, "Send an API key as 'Authorization: Bearer <key>' (or log in "
                              "at /codec/login) to decode payloads.")
        return _cors(request, JSONResponse(
            {"error": {"type": "authentication_error", "message": error.message}},
            status_code=401, headers={"WWW-Authenticate": "Bearer"}))
    try:
        payloads = ParseDict(body, Payloads())
    except Exception:  # noqa: BLE001 - any malformed body is the caller's 400
        raise BadRequest(
            'The body must be {"payloads": [{"metadata": {...}, "data": "<base64>"}]}.'
        ) from None
    codec: PayloadCodec | None = request.app.state.codec
    result = list(payloads.payloads)
    if codec is not None:
        result = await (codec.encode(result) if encode else _decode(codec, result))
    answer = MessageToDict(Payloads(payloads=result))
    return _cors(request, JSONResponse({"payloads": answer.get("payloads", [])}))


async def _decode(codec: PayloadCodec, payloads: list[Payload]) -> list[Payload]:
    """Each payload decrypted, or 400 naming the first one that cannot be."""
    decoded = []
    for index, payload in enumerate(payloads):
        try:
            decoded.extend(await codec.decode([payload]))
        except (EncryptionKeyError, UndecryptablePayload) as err:
            raise BadRequest(
                f"payloads.{index} cannot be decoded: {err}. Send payloads as this "
                "deployment's Temporal stored them."
            ) from None
    return decoded


Authorization = Annotated[str | None, Header()]
LoginCookie = Annotated[str | None, Cookie(alias=COOKIE)]
PayloadsBody = Annotated[dict[str, Any], Body()]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": 'The payloads, transformed: `{"payloads": [...]}`.'},
    400: {"model": ErrorEnvelope, "description": "The body is not a list of payloads."},
    401: {"model": ErrorEnvelope, "description": "No valid API key (header or cookie)."},
}


@router.post("/encode", responses=_RESPONSES)
async def encode(request: Request, body: PayloadsBody, authorization: Authorization = None,
                 cookie: LoginCookie = None) -> Response:
    """Encode (encrypt) payloads, as the Temporal remote codec protocol asks."""
    return await _transform(request, body, authorization, cookie, encode=True)


@router.post("/decode", responses=_RESPONSES)
async def decode(request: Request, body: PayloadsBody, authorization: Authorization = None,
                 cookie: LoginCookie = None) -> Response:
    """Decode (decrypt) payloads, as the Temporal remote codec protocol asks."""
    return await _transform(request, body, authorization, cookie, encode=False)


@router.options("/encode", include_in_schema=False)
@router.options("/decode", include_in_schema=False)
async def preflight(request: Request) -> Response:
    """CORS preflight for the configured UI origins."""
    return _cors(request, Response(status_code=204))


@router.get("/login", include_in_schema=False)
async def login_form() -> HTMLResponse:
    """A form to enter an API key once per browser."""
    return HTMLResponse(_LOGIN_FORM)


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Set the codec cookie for a valid key (401 otherwise)."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (fields.get("key") or [""])[0]
    if not _authorized(request.app.state.settings.api_keys, f"Bearer {key}", None):
        return HTMLResponse(_LOGIN_FORM + "<p>That is not an API key here.</p>",
                            status_code=401)
    response = HTMLResponse("<p>Saved: the Temporal UI can decode payloads in this "
                            "browser.</p>")
    response.set_cookie(COOKIE, cookie_token(key), httponly=True, samesite="lax",
                        path="/codec", max_age=30 * 24 * 3600)
    return response
