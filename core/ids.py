"""Opaque, cuid-style resource identifiers (`ckva...`, `ckrun...`, `ckstep...`)."""

from __future__ import annotations

import hashlib
import secrets
import uuid

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 21

WORKFLOW_PREFIX = "ckva"
RUN_PREFIX = "ckrun"
STEP_PREFIX = "ckstep"
PAUSE_PREFIX = "ckpause"


def _base36(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 36)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A fresh random id for use outside workflow code."""
    return prefix + _base36(secrets.randbits(112), _BODY_LENGTH)


def id_from_uuid(prefix: str, value: uuid.UUID) -> str:
    """A deterministic id from a UUID, e.g. one from `workflow.uuid4()` inside a workflow."""
    return prefix + _base36(value.int, _BODY_LENGTH)


def id_for_key(prefix: str, scope: str, key: str) -> str:
    """The id a request with this idempotency key creates within `scope`: the same for
    every retry of that request, unrelated for any other key."""
    digest = hashlib.sha256(f"{scope}\n{key}".encode()).digest()
    return prefix + _base36(int.from_bytes(digest[:14], "big"), _BODY_LENGTH)


def looks_like(prefix: str, value: str) -> bool:
    """Whether `value` has the shape of an id made with `prefix`."""
    body = value[len(prefix) :]
    return (
        value.startswith(prefix)
        and len(body) == _BODY_LENGTH
        and all(c in _ALPHABET for c in body)
    )
