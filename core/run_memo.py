"""How a run publishes itself in its Temporal memo, and how readers rebuild it.

The memo holds the run's header under `run` and each step under its own key, so an
update writes only what changed: the history grows with the run's output, not with the
square of its steps. Step inputs are not stored at all: they follow from the run input
and the earlier steps' outputs (`build_step_input`), which would otherwise repeat every
output once per later step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from core.crew_graph import Parents, ancestors_of
from core.prompts import input_from
from core.types import Run, Step, StepProgress

RUN_KEY = "run"
# The crew's shape (each agent's parents), for crews that are not a chain.
GRAPH_KEY = "graph"
# In a retry's execution: the Temporal run id of the failed execution it goes on from.
RETRY_OF_KEY = "retry_of"
_PROGRESS_PREFIX = "progress."
_STEP_PREFIX = "step."
# What a memo that is not a run's may fail with while it is read as one (wrong types,
# missing fields, step or graph entries that point nowhere).
_MALFORMED = (ValueError, TypeError, LookupError, RecursionError)

log = logging.getLogger("loopllama.api")


class UnreadableRun(ValueError):
    """A memo that does not describe a run; the message says why, without its contents."""


def step_key(order: int) -> str:
    """The memo key of the step at `order`."""
    return f"{_STEP_PREFIX}{order:04d}"


def step_order(key: str) -> int | None:
    """The order of the step a memo key holds, or None when it holds no step."""
    if not key.startswith(_STEP_PREFIX):
        return None
    digits = key[len(_STEP_PREFIX):]
    return int(digits) if digits.isdigit() else None


def progress_key(order: int) -> str:
    """The memo key of an unfinished step's tool loop, published when the run fails."""
    return f"{_PROGRESS_PREFIX}{order:04d}"


def progress_from_memo(memo: Mapping[str, Any]) -> list[StepProgress]:
    """The unfinished steps' tool loops a failed run published, by step order."""
    return [StepProgress.model_validate(value) for key, value in sorted(memo.items())
            if key.startswith(_PROGRESS_PREFIX) and isinstance(value, dict)]


def run_memo(run: Run, steps: Iterable[Step] = (), graph: Parents | None = None
             ) -> dict[str, Any]:
    """Memo entries for the run's header and the given (changed) steps; with `graph`
    (each agent's parents, written once for crews that are not a chain), the crew's
    shape, which readers need to rebuild step inputs."""
    memo: dict[str, Any] = {RUN_KEY: run.model_dump(mode="json", exclude={"steps"})}
    for step in steps:
        memo[step_key(step.order)] = step.model_dump(mode="json", exclude={"input"})
    if graph is not None:
        memo[GRAPH_KEY] = graph
    return memo


def graph_from_memo(memo: Mapping[str, Any]) -> Parents | None:
    """Each agent's ancestors, for a crew that is not a chain; None for a chain."""
    graph = memo.get(GRAPH_KEY)
    if not isinstance(graph, list):
        return None
    parents = [[int(p) for p in entry] if isinstance(entry, list) else [] for entry in graph]
    return ancestors_of(parents)


def started_order(steps: Iterable[Step]) -> list[Step]:
    """Steps in the order they started; steps that started together by crew position."""
    return sorted(steps, key=lambda step: (
        step.started_at.timestamp() if step.started_at else float("inf"), step.order))


def run_from_memo(memo: Mapping[str, Any], *, with_steps: bool = True) -> Run | None:
    """The run a memo describes, or None when it does not describe one (an execution
    started in Temporal by hand, say): logged, and read as if there were no run."""
    try:
        return read_run(memo, with_steps=with_steps)
    except UnreadableRun as err:
        log.warning("Read a memo that is not a run's as none: %s.", err)
        return None


def read_run(memo: Mapping[str, Any], *, with_steps: bool = True) -> Run:
    """The run a memo describes; `UnreadableRun` when it does not describe one."""
    header = memo.get(RUN_KEY)
    if header is None:
        raise UnreadableRun(f"it has no {RUN_KEY!r} entry")
    if not isinstance(header, dict):
        raise UnreadableRun(f"its {RUN_KEY!r} entry is a {type(header).__name__}, not an object")
    try:
        return _run(header, memo, with_steps)
    except _MALFORMED as err:
        raise UnreadableRun(f"it is not a run's memo ({type(err).__name__})") from None


def _run(header: dict[str, Any], memo: Mapping[str, Any], with_steps: bool) -> Run:
    run = Run.model_validate(header)
    if not with_steps:
        return run
    stored = {order: value for key, value in memo.items()
              if (order := step_order(key)) is not None and isinstance(value, dict)}
    ancestors = graph_from_memo(memo)
    outputs = {order: (str(data.get("role")), str(data.get("output") or ""))
               for order, data in stored.items()}
    steps = [
        Step.model_validate({**data, "input": input_from(
            run.input, order, outputs, ancestors[order] if ancestors else None)})
        for order, data in stored.items()
    ]
    run.steps = started_order(steps)
    return run
