"""Payloads encrypted at rest: AES-256-GCM as a Temporal payload codec.

With LOOPLLAMA_ENCRYPTION_KEY set, every payload LoopLlama writes to Temporal
(workflow and activity inputs and results, update arguments, memo entries, failure
messages and traces) is encrypted before it leaves the process and decrypted when it
comes back; whoever reads the Temporal database, the UI or `temporal workflow show`
without a key sees ciphertext. Search attributes stay clear (ids, statuses, times).

Keys rotate: the first key encrypts, every key decrypts, and each payload names its key
in its metadata. Payloads written before encryption was turned on decode as they are.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class EncryptionKeyError(ValueError):
    """A configured key is unusable, or a payload names a key this process lacks."""


class UndecryptablePayload(ValueError):
    """A payload marked encrypted that its key does not open: corrupt or cut short."""


def key_id(key: bytes) -> str:
    """A short, non-secret name for a key (the start of its SHA-256)."""
    return hashlib.sha256(key).hexdigest()[:16]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata included)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise EncryptionKeyError("at least one encryption key is needed")
        self._encrypting_id = key_id(keys[0])
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt with the first key."""
        cipher = self._ciphers[self._encrypting_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(Payload(
                metadata={"encoding": ENCODING, KEY_ID: self._encrypting_id.encode()},
                data=nonce + sealed,
            ))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt what is encrypted (with the key it names); pass the rest through."""
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            name = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
            cipher = self._ciphers.get(name)
            if cipher is None:
                raise EncryptionKeyError(
                    f"a payload is encrypted with key {name[:40]!r}, which is not among "
                    "LOOPLLAMA_ENCRYPTION_KEY's keys; add it back (keys rotate by listing "
                    "the new one first and keeping the old ones)"
                )
            data = payload.data
            plain = Payload()
            try:
                plain.ParseFromString(
                    cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None)
                )
            except (InvalidTag, ValueError, DecodeError):
                raise UndecryptablePayload(
                    f"a payload encrypted with key {name[:40]!r} does not decrypt with it: its "
                    "data is corrupt or cut short"
                ) from None
            decoded.append(plain)
        return decoded
