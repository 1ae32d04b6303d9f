"""The data converter every LoopLlama process uses (API, worker, replay).

- pydantic models in and out (`temporalio.contrib.pydantic`);
- payloads of 16 KiB or more kept in the blob store, the history holding a reference
  (core/blob_store.py);
- failures that LoopLlama raised on purpose (`ApplicationError`: a failed step, a model
  that refused, a tool timeout) carry their message and no stack trace, so the Temporal
  UI shows what happened, not where in the SDK it was raised. Any other exception keeps
  its trace: that is a bug, and the trace is how it gets found.
"""

from __future__ import annotations

import dataclasses
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


class MessageOnlyFailureConverter(DefaultFailureConverter):
    """Drops the stack trace of deliberate failures (and of their causes)."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter,
                   failure: Failure) -> None:
        """See the base class; then clears the trace when `exception` was raised on
        purpose."""
        super().to_failure(exception, payload_converter, failure)
        if isinstance(exception, ApplicationError):
            failure.stack_trace = ""


def data_converter(blob_dir: Path) -> DataConverter:
    """pydantic models, large payloads in `blob_dir`, deliberate failures without traces."""
    return dataclasses.replace(
        pydantic_data_converter,
        external_storage=ExternalStorage(
            drivers=[FileBlobStore(blob_dir)], payload_size_threshold=OFFLOAD_THRESHOLD
        ),
        failure_converter_class=MessageOnlyFailureConverter,
    )
