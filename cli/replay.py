"""`loopllama replay`: replay a run's Temporal history against the current workflow code."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.blob_store import data_converter
from core.settings import EMBEDDED_ADDRESS, Settings
from core.temporal import connect
from workflows.registry import WORKFLOWS


def history_from_file(file: Path, run_id: str | None = None) -> WorkflowHistory:
    """A history exported as JSON (by `--export`, the Temporal UI or `temporal workflow
    show --output json`)."""
    return WorkflowHistory.from_json(run_id or file.stem, file.read_text())


async def fetch_history(settings: Settings, run_id: str) -> WorkflowHistory:
    """A run's history, straight from Temporal."""
    client = await connect(settings.temporal_address or EMBEDDED_ADDRESS,
                           settings.temporal_namespace, blob_dir=settings.blob_dir)
    return await client.get_workflow_handle(run_id).fetch_history()


async def replay(
    history: WorkflowHistory, blob_dir: Path, *, debug: bool = False
) -> tuple[bool, str]:
    """(deterministic, a line to print) for one history, its large payloads in `blob_dir`.

    `debug` turns off the deadlock detector, so a breakpoint in workflow code can be
    held for as long as needed.
    """
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=data_converter(blob_dir),
                        debug_mode=debug)
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
    path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
