"""`loopllama replay`: replay a run's Temporal history against the current workflow code."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from core.converter import data_converter
from core.devserver import ADDRESS_FILE, recorded_address
from core.settings import EMBEDDED_ADDRESS, Settings
from core.temporal import connect_as
from workflows.registry import WORKFLOWS, workflow_runner


class ReplayError(RuntimeError):
    """The history could not be had; the one-line message says why and what to do."""


def history_from_file(file: Path, run_id: str | None = None) -> WorkflowHistory:
    """A history exported as JSON (by `--export`, the Temporal UI or `temporal workflow
    show --output json`)."""
    try:
        text = file.read_text()
    except OSError as err:
        raise ReplayError(f"Cannot read {file}: {err.strerror or err}.") from None
    try:
        return WorkflowHistory.from_json(run_id or file.stem, text)
    except (ValueError, KeyError, TypeError) as err:
        raise ReplayError(f"{file} is not a Temporal history in JSON ({err}).") from None


def temporal_address(settings: Settings) -> tuple[str, str]:
    """(address, what to do if it does not answer): TEMPORAL_ADDRESS if set, else the
    address `loopllama dev` recorded in the data directory, else the embedded default."""
    if settings.temporal_address is not None:
        return settings.temporal_address, "Start it, or fix TEMPORAL_ADDRESS."
    recorded = recorded_address(settings.data_dir)
    if recorded is not None:
        return recorded, (
            f"It was recorded by `loopllama dev` in {settings.data_dir / ADDRESS_FILE}; "
            "is that still running? Or set TEMPORAL_ADDRESS."
        )
    return EMBEDDED_ADDRESS, "Start `loopllama dev`, or set TEMPORAL_ADDRESS."


async def fetch_history(settings: Settings, run_id: str) -> WorkflowHistory:
    """A run's history, straight from Temporal (see `temporal_address` for where)."""
    address, advice = temporal_address(settings)
    try:
        client = await connect_as(settings, address)
    except RuntimeError as err:
        reason = " ".join(str(err).split())
        raise ReplayError(f"Cannot reach Temporal at {address} ({reason}). {advice}") from None
    try:
        return await client.get_workflow_handle(run_id).fetch_history()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise ReplayError(
            f"No run {run_id} in namespace {settings.temporal_namespace!r} on Temporal at "
            f"{address} ({' '.join(err.message.split()).rstrip('.')})."
        ) from None


async def replay(
    history: WorkflowHistory, settings: Settings, *, debug: bool = False
) -> tuple[bool, str]:
    """(deterministic, a line to print) for one history, read with the blob store and
    encryption keys of `settings`.

    `debug` turns off the deadlock detector, so a breakpoint in workflow code can be
    held for as long as needed.
    """
    converter = data_converter(settings.blob_dir, settings.encryption_key_bytes)
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=converter,
                        workflow_runner=workflow_runner(), debug_mode=debug)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    count = len(history.events)
    if result.replay_failure is None:
        return True, f"replayed {count} events, deterministic"
    return False, (
        f"replay of {history.workflow_id} failed after reading its {count} events: "
        f"{type(result.replay_failure).__name__}: {result.replay_failure}"
    )


def export_history(history: WorkflowHistory, path: Path) -> None:
    """Write the history as JSON, for `--file` later or for the Temporal UI."""
    try:
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    except OSError as err:
        raise ReplayError(f"Cannot write {path}: {err.strerror or err}.") from None
