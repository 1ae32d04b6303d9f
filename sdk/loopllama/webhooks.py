"""Standard Webhooks signatures (https://www.standardwebhooks.com/): sign and verify.

A secret is `whsec_` + base64 of its key bytes. A message is signed as
`v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`; the
`webhook-signature` header may carry several space-separated signatures (during a
secret rotation), and one valid signature is enough.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from loopllama.errors import LoopLlamaError

SECRET_PREFIX = "whsec_"
# Receivers refuse messages whose timestamp is further than this from their clock, so
# a captured message cannot be replayed later.
DEFAULT_TOLERANCE_SECONDS = 300


class WebhookVerificationError(LoopLlamaError):
    """The webhook's signature, timestamp or headers do not check out: drop it."""


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookVerificationError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        raise WebhookVerificationError("the webhook secret is not valid base64") from None


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for a message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes | str, *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS, now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery and return its parsed body `{"type", "timestamp", "data"}`.

    `headers` as received (any letter case); `body` exactly as received. Raises
    `WebhookVerificationError` when a header is missing, the timestamp is outside
    `tolerance_seconds` of `now`, or no signature matches.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        message_id = lowered["webhook-id"]
        timestamp_text = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too far from now")
    raw = body.encode() if isinstance(body, str) else body
    expected = sign_webhook(secret, message_id, timestamp, raw)
    if not any(hmac.compare_digest(expected, candidate)
               for candidate in signatures.split() if candidate.startswith("v1,")):
        raise WebhookVerificationError("no webhook-signature matches")
    parsed: dict[str, Any] = json.loads(raw)
    return parsed
