"""How a run makes itself visible: its memo, its status search attribute, and the
current details the Temporal UI shows.

The memo holds the whole run object, so reads are a `describe` (no replay, no worker
needed) and always as current as the workflow itself.
"""

from __future__ import annotations

import json

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.crew_graph import Parents
    from core.run_memo import progress_key, run_memo
    from core.temporal import SA_STATUS
    from core.types import Pending, Run, RunStatus, Step, StepProgress


class RunPublisher:
    """Publishes one run's state, at most once per workflow task."""

    def __init__(self, run: Run, crew_size: int, graph: Parents | None) -> None:
        self._run = run
        self._crew_size = crew_size
        # Written with the first publish, for crews that are not a chain (readers need
        # it to rebuild step inputs); None once written, or for a chain.
        self._graph = graph
        # Runs started before `publish-once-per-task` published on every change and
        # must replay doing so (the run workflow decides, once, with `workflow.patched`).
        self.coalesce = True
        self._unpublished: dict[int, Step] | None = None

    @property
    def unpublished(self) -> bool:
        """Whether changes wait for the next `flush`."""
        return self._unpublished is not None

    def set_status(self, status: RunStatus, *changed: Step) -> None:
        """Change the run's status (and its search attribute, when it moves)."""
        if status != self._run.status:
            self._run.status = status
            workflow.upsert_search_attributes([SA_STATUS.value_set(status)])
        self.publish(*changed)

    def publish(self, *changed: Step) -> None:
        """Make the run's current state (and these steps) visible to readers.

        Everything between two awaits happens in one workflow task, so new runs collect
        the changes and `flush` writes them once, just before the run next waits:
        one memo event per task instead of one per change.
        """
        if not self.coalesce:
            workflow.upsert_memo(run_memo(self._run, changed, self._take_graph()))
            return
        if self._unpublished is None:
            self._unpublished = {}
        self._unpublished.update({step.order: step for step in changed})

    def flush(self, progress: list[StepProgress] | None = None) -> None:
        """Publish what changed, just before the run waits (or ends); with `progress`,
        the unfinished steps' tool loops too, which a retry goes on from."""
        if self._unpublished is not None or progress:
            memo = run_memo(self._run, (self._unpublished or {}).values(), self._take_graph())
            for entry in progress or ():
                memo[progress_key(entry.order)] = entry.model_dump(mode="json")
            workflow.upsert_memo(memo)
            self._unpublished = None
        # What the Temporal UI shows as the run's Current Details; it adds nothing to
        # the history (the UI asks the worker).
        workflow.set_current_details(current_details(self._run, self._crew_size))

    def _take_graph(self) -> Parents | None:
        graph, self._graph = self._graph, None
        return graph


def current_details(run: Run, crew_size: int) -> str:
    """What the run is doing, for a person looking at it in the Temporal UI."""
    if run.status in ("completed", "failed", "cancelled"):
        return f"**{run.status.capitalize()}**" + (f": {run.error}" if run.error else ".")
    lines: list[str] = []
    for pause in run.pauses or ([run.pending] if run.pending else []):
        lines += [*_pause_details(run.id, pause), ""]
    working = [step for step in run.steps if step.finished_at is None]
    for step in working:
        lines.append(f"**Step {step.order + 1} of {crew_size}**: {step.role} ({step.model})")
    if not lines:
        return "Starting."
    return "\n".join(lines).strip()


def _pause_details(run_id: str, pending: Pending) -> list[str]:
    respond = f"`POST /v1/runs/{run_id}/respond`"
    pause = f'"pause_id": "{pending.id}"'
    who = f" ({pending.role})" if pending.role else ""
    cli = f"loopllama runs respond {run_id}"
    which = f"--pause-id {pending.id}"
    if pending.kind == "approval":
        arguments = json.dumps(pending.tool_input, ensure_ascii=False, sort_keys=True)
        return [
            f"**Waiting for a human: approval{who}**", "", pending.prompt, "",
            f"Tool: `{pending.tool}`", f"Input: `{arguments[:2000]}`", "",
            f'Decide with {respond} and `{{"action": "approve", {pause}}}` or '
            f'`{{"action": "reject", "reason": "...", {pause}}}`, or with '
            f"`{cli} --approve {which}` (or `--reject --reason ...`).",
        ]
    return [
        f"**Waiting for a human: a question{who}**", "", pending.prompt, "",
        f'Answer with {respond} and `{{"action": "input", "input": "...", {pause}}}`, '
        f'or with `{cli} --input "..." {which}`.',
    ]
