"""How a run publishes itself in its Temporal memo, and how readers rebuild it.

The memo holds the run's header under `run` and each step under its own key, so an
update writes only what changed: the history grows with the run's output, not with the
square of its steps. Step inputs are not stored at all: they follow from the run input
and the earlier steps' outputs (`build_step_input`), which would otherwise repeat every
output once per later step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.prompts import build_step_input
from core.types import Run, Step

RUN_KEY = "run"
_STEP_PREFIX = "step."


def step_key(order: int) -> str:
    """The memo key of the step at `order`."""
    return f"{_STEP_PREFIX}{order:04d}"


def step_order(key: str) -> int | None:
    """The order of the step a memo key holds, or None when it holds no step."""
    if not key.startswith(_STEP_PREFIX):
        return None
    digits = key[len(_STEP_PREFIX):]
    return int(digits) if digits.isdigit() else None


def run_memo(run: Run, steps: Iterable[Step] = ()) -> dict[str, Any]:
    """Memo entries for the run's header and the given (changed) steps."""
    memo: dict[str, Any] = {RUN_KEY: run.model_dump(mode="json", exclude={"steps"})}
    for step in steps:
        memo[step_key(step.order)] = step.model_dump(mode="json", exclude={"input"})
    return memo


def run_from_memo(memo: Mapping[str, Any], *, with_steps: bool = True) -> Run | None:
    """The run a memo describes, or None when it is not a run's memo."""
    header = memo.get(RUN_KEY)
    if not isinstance(header, dict):
        return None
    if not with_steps:
        return Run.model_validate(header)
    stored = sorted(
        (value for key, value in memo.items() if key.startswith(_STEP_PREFIX)),
        key=lambda step: int(step["order"]),
    )
    run = Run.model_validate(header)
    prior: list[tuple[str, str]] = []
    for data in stored:
        run.steps.append(Step.model_validate(
            {**data, "input": build_step_input(run.input, prior)}
        ))
        prior.append((str(data["role"]), str(data.get("output") or "")))
    return run
