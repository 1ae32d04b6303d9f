"""A workflow (crew) definition kept durably as a long-lived Temporal entity workflow.

The entity publishes its current definition in its memo after every change, so the API
reads definitions with a cheap `describe` that needs no worker and replays nothing.
Changes are updates with validators: a rejected change writes nothing to the history.

Only the `delete` update ends an entity. A Temporal cancel request (the UI's "Request
Cancellation", `temporal workflow cancel`) is caught and ignored, and the entity's
current details in the UI say so; terminating it by hand is a hard delete.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.timefmt import truncate_to_millis
    from core.types import DefinitionChange, Workflow, WorkflowPatch, WorkflowStatus
    from core.validation_messages import describe_validation_errors
    from core.webhook_secrets import GENERATION_MEMO_KEY

MEMO_KEY = "workflow"
# The Temporal workflow type of a definition: the API's reads filter on it.
DEFINITION_WORKFLOW_TYPE = "CrewDefinition"
# Error types the API maps to HTTP statuses (400 and 404).
INVALID = "InvalidDefinitionChange"
GONE = "DefinitionDeleted"
# Continue-as-new well before Temporal's history limits; each change is a few events.
MAX_HISTORY_EVENTS = 2_000
# Entities started before it completed as cancelled on a cancel request; with it they
# ignore the request. Checked only when a request arrives, so running entities pick it up.
IGNORE_CANCEL_PATCH = "ignore-cancel-requests"


class DefinitionInput(BaseModel):
    """The definition a (new or continued) entity starts from."""

    workflow: Workflow
    # When a cancel request was ignored (by this run or one it continued from).
    cancel_ignored_at: datetime | None = None
    # How often the webhook secret was rotated (core/webhook_secrets.py derives it).
    webhook_secret_generation: int = 0


class StatusChange(BaseModel):
    """Pause or resume."""

    status: WorkflowStatus


@workflow.defn(name=DEFINITION_WORKFLOW_TYPE)
class CrewDefinitionWorkflow:
    """One crew definition; lives until deleted."""

    @workflow.init
    def __init__(self, start: DefinitionInput) -> None:
        self._workflow = start.workflow
        self._deleted = False
        self._cancel_ignored_at = start.cancel_ignored_at
        self._secret_generation = start.webhook_secret_generation

    @workflow.run
    async def run(self, start: DefinitionInput) -> None:
        """Wait for deletion, continuing as new when the history grows long.

        A cancel request is not a deletion: it is noted in the current details and the
        entity goes on waiting (Temporal delivers it once per run, as a CancelledError).
        """
        self._show_details()
        while True:
            try:
                await workflow.wait_condition(
                    lambda: (self._deleted or self._history_is_long())
                    and workflow.all_handlers_finished()
                )
                break
            except asyncio.CancelledError:
                if not workflow.patched(IGNORE_CANCEL_PATCH):
                    raise
                self._cancel_ignored_at = self._now()
                self._show_details()
                workflow.logger.warning(
                    "Ignored a cancel request for crew definition %s: definitions are "
                    "deleted only with DELETE /v1/workflows/%s",
                    self._workflow.id, self._workflow.id,
                )
        if not self._deleted:
            workflow.continue_as_new(
                DefinitionInput(
                    workflow=self._workflow, cancel_ignored_at=self._cancel_ignored_at,
                    webhook_secret_generation=self._secret_generation,
                ),
                memo=self._memo(),
            )

    @workflow.query
    def get(self) -> Workflow:
        """The current definition."""
        return self._workflow

    @workflow.update
    def change(self, patch: DefinitionChange) -> Workflow:
        """Replace the fields the patch names.

        Applied without validation, so a replay never depends on today's rules; the
        validator checked the result when the change was accepted.
        """
        self._workflow = Workflow.model_validate(
            {**self._workflow.model_dump(), **patch.model_dump(), "updated_at": self._now()}
        )
        self._publish()
        return self._workflow

    @change.validator
    def _validate_change(self, patch: DefinitionChange) -> None:
        self._reject_if_deleted()
        try:
            WorkflowPatch.model_validate(patch.model_dump()).apply_to(
                self._workflow.spec_fields()
            )
        except ValidationError as err:
            raise ApplicationError(
                describe_validation_errors(list(err.errors())), type=INVALID, non_retryable=True
            ) from None

    @workflow.update
    def set_status(self, change: StatusChange) -> Workflow:
        """Pause or resume; doing it twice changes nothing."""
        if change.status != self._workflow.status:
            self._workflow = self._workflow.model_copy(
                update={"status": change.status, "updated_at": self._now()}
            )
            self._publish()
        return self._workflow

    @set_status.validator
    def _validate_set_status(self, change: StatusChange) -> None:
        self._reject_if_deleted()

    @workflow.update
    def delete(self) -> None:
        """End the entity; reads and triggers answer 404 from now on."""
        self._deleted = True
        workflow.set_current_details(
            f"Crew definition {self._workflow.name!r}: deleted with DELETE "
            f"/v1/workflows/{self._workflow.id}."
        )

    @delete.validator
    def _validate_delete(self) -> None:
        self._reject_if_deleted()

    @workflow.update
    def rotate_webhook_secret(self) -> int:
        """Move the webhook secret to its next generation; returns the generation."""
        self._secret_generation += 1
        self._publish()
        return self._secret_generation

    @rotate_webhook_secret.validator
    def _validate_rotate(self) -> None:
        self._reject_if_deleted()

    def _reject_if_deleted(self) -> None:
        if self._deleted:
            raise ApplicationError("workflow was deleted", type=GONE, non_retryable=True)

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > MAX_HISTORY_EVENTS
        )

    def _now(self) -> datetime:
        return truncate_to_millis(workflow.now())

    def _memo(self) -> dict[str, object]:
        return {MEMO_KEY: self._workflow.model_dump(mode="json"),
                GENERATION_MEMO_KEY: self._secret_generation}

    def _publish(self) -> None:
        workflow.upsert_memo(self._memo())
        self._show_details()

    def _show_details(self) -> None:
        """What the Temporal UI shows as this entity's current details.

        Served by the worker through the built-in metadata query: adds nothing to the
        history, so it may change freely between releases.
        """
        workflow.set_current_details(current_details(self._workflow, self._cancel_ignored_at))


def current_details(definition: Workflow, cancel_ignored_at: datetime | None) -> str:
    """The entity's current details (Temporal markdown): what it is, how to change it."""
    path = f"/v1/workflows/{definition.id}"
    lines = [f"**Crew definition {definition.name!r}** ({definition.status})."]
    if cancel_ignored_at is not None:
        lines.append(
            f"A cancel request was ignored ({cancel_ignored_at:%Y-%m-%d %H:%M:%S} UTC): "
            f"definitions are deleted only with DELETE {path} (or `loopllama workflows "
            f"delete {definition.id}`)."
        )
    if definition.status == "paused":
        lines.append(f"Paused: it takes no new runs. Resume it with POST {path}/resume.")
    else:
        lines.append(f"Active: start a run with POST {path}/runs. Pause it with POST {path}/pause.")
    lines.append(
        f"Change it with PATCH {path}; delete it with DELETE {path} (or `loopllama workflows "
        f"delete {definition.id}`). Cancelling this Temporal workflow does not delete it; "
        "terminating it does, with no undo."
    )
    return "\n\n".join(lines)
