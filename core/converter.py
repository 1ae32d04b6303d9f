"""The data converter every LoopLlama process uses (API, worker, replay).

- pydantic models in and out (`temporalio.contrib.pydantic`);
- payloads of 16 KiB or more kept in the blob store, the history holding a reference
  (core/blob_store.py);
- failures that LoopLlama raised on purpose (`ApplicationError`: a failed step, a model
  that refused, a tool timeout) carry their message and no stack trace, so the Temporal
  UI shows what happened, not where in the SDK it was raised. Any other exception keeps
  its trace: that is a bug, and the trace is how it gets found;
- with LOOPLLAMA_ENCRYPTION_KEY, every payload (and failure text) encrypted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    ExternalStorage,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError

from core.blob_store import OFFLOAD_THRESHOLD, FileBlobStore
from core.encryption import EncryptionCodec


class MessageOnlyFailureConverter(DefaultFailureConverter):
    """Drops the stack trace of deliberate failures (and of their causes)."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter,
                   failure: Failure) -> None:
        """See the base class; a deliberate failure goes without its traceback."""
        if isinstance(exception, ApplicationError) and exception.failure is None:
            clean = ApplicationError(
                exception.message, *exception.details, type=exception.type,
                non_retryable=exception.non_retryable,
                next_retry_delay=exception.next_retry_delay, category=exception.category,
            )
            clean.__cause__ = exception.__cause__
            clean.__suppress_context__ = True
            exception = clean
        super().to_failure(exception, payload_converter, failure)


class EncryptedFailureConverter(MessageOnlyFailureConverter):
    """The same, with each failure's message and trace moved into an (encrypted) payload,
    so no failure text is readable in the history."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)


def data_converter(blob_dir: Path, encryption_keys: Sequence[bytes] = ()) -> DataConverter:
    """pydantic models, large payloads in `blob_dir`, deliberate failures without traces,
    and, given keys, every payload encrypted (core/encryption.py)."""
    encrypted = bool(encryption_keys)
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(encryption_keys) if encrypted else None,
        external_storage=ExternalStorage(
            drivers=[FileBlobStore(blob_dir)], payload_size_threshold=OFFLOAD_THRESHOLD
        ),
        failure_converter_class=(
            EncryptedFailureConverter if encrypted else MessageOnlyFailureConverter
        ),
    )


def offloading_everything(converter: DataConverter) -> DataConverter:
    """`converter` with every payload kept in the blob store, however small: for a start
    whose input and memo repeat texts another history already holds (a fork's reused
    steps), so the new history holds references only. Readers need nothing different:
    every converter resolves a reference, whatever its threshold."""
    storage = converter.external_storage
    if storage is None:
        return converter
    return dataclasses.replace(
        converter, external_storage=dataclasses.replace(storage, payload_size_threshold=0))
