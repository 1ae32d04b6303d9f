"""Each workflow's webhook signing secret, derived rather than stored.

A secret is `whsec_` + base64 of 32 bytes: HMAC-SHA256 of the workflow id and the
secret's generation under the deployment's LOOPLLAMA_WEBHOOK_KEY. Nothing secret is
ever written to a Temporal history, a memo or a log: the API derives the secret to show
it once (on create and on rotation), a worker derives it to sign a delivery, and
rotating only moves the generation on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from core.settings import Secret

SECRET_PREFIX = "whsec_"


def webhook_secret(key: Secret, workflow_id: str, generation: int) -> str:
    """The signing secret of `workflow_id`'s webhooks at `generation`."""
    material = f"loopllama webhook secret\n{workflow_id}\n{generation}".encode()
    digest = hmac.new(key.value.encode(), material, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()

# Where a definition publishes its secret's generation (next to the definition itself).
GENERATION_MEMO_KEY = "webhook_secret_generation"
