"""How one agent's output becomes the next agent's input."""

from __future__ import annotations

from collections.abc import Sequence


def build_step_input(run_input: str, prior: Sequence[tuple[str, str]]) -> str:
    """The prompt for the next agent.

    The first agent receives the run input as it is; each later agent receives the
    original request followed by every earlier output, in order, under its role.
    """
    if not prior:
        return run_input
    outputs = "\n\n".join(f"--- {role} ---\n{output}" for role, output in prior)
    return f"Original request:\n{run_input}\n\nPrior agent output:\n{outputs}"
