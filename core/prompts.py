"""How one agent's output becomes the next agent's input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def build_step_input(run_input: str, prior: Sequence[tuple[str, str]]) -> str:
    """The prompt for the next agent.

    The first agent receives the run input as it is; each later agent receives the
    original request followed by every earlier output, in order, under its role.
    """
    if not prior:
        return run_input
    outputs = "\n\n".join(f"--- {role} ---\n{output}" for role, output in prior)
    return f"Original request:\n{run_input}\n\nPrior agent output:\n{outputs}"


def input_from(run_input: str, order: int, outputs: Mapping[int, tuple[str, str]],
               ancestors: Sequence[int] | None) -> str:
    """The input of the step at `order`, given the (role, output) of steps by order.

    `ancestors` are the steps it depends on (core/crew_graph.py); None for a chain,
    where that is every earlier step.
    """
    chosen = ancestors if ancestors is not None else sorted(o for o in outputs if o < order)
    return build_step_input(run_input, [outputs[o] for o in chosen if o in outputs])
