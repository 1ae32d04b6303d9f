"""The shape of a crew: which agents each agent waits for, and whose outputs it reads.

An agent's `after` names earlier agents by role. Absent, it means the agent just before
it (the chain of the reference); `[]` means none (it starts from the run input). Only
earlier agents may be named, so the crew's list order is always a valid order to run
it in and a cycle cannot be written down.

Pure and deterministic: the API checks crews with it, the run workflow schedules with
it, and readers rebuild step inputs with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class _HasAfter(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def after(self) -> list[str] | None: ...


Parents = list[list[int]]


def after_problem(crew: Sequence[_HasAfter]) -> str | None:
    """Why some agent's `after` cannot be followed (a 400), or None when all can."""
    seen: dict[str, int] = {}
    for position, agent in enumerate(crew):
        named = agent.after or []
        for role in named:
            where = f"agent {agent.role!r} (position {position}) names {role!r} in 'after'"
            if role == agent.role:
                return f"{where}: an agent cannot wait for itself; remove it"
            if named.count(role) > 1:
                return f"{where} more than once; name each agent once"
            if role not in seen:
                later = any(other.role == role for other in crew[position + 1:])
                if later:
                    return (
                        f"{where}, which comes later in the crew; 'after' may only name "
                        "agents listed before it (move that agent up)"
                    )
                return (
                    f"{where}, but no agent has that role; roles in the crew are "
                    + ", ".join(repr(other.role) for other in crew)
                )
        seen[agent.role] = position
    return None


def parents_of(crew: Sequence[_HasAfter]) -> Parents:
    """For each agent, the positions of the agents it waits for, in crew order.

    The crew must have passed `after_problem`; a role that is not earlier is ignored.
    """
    positions = {agent.role: i for i, agent in enumerate(crew)}
    parents: Parents = []
    for position, agent in enumerate(crew):
        if agent.after is None:
            parents.append([position - 1] if position > 0 else [])
            continue
        parents.append(sorted({positions[role] for role in agent.after
                               if positions.get(role, position) < position}))
    return parents


def is_chain(parents: Parents) -> bool:
    """Whether every agent waits for exactly the one before it (the reference's crew)."""
    return all(p == ([i - 1] if i > 0 else []) for i, p in enumerate(parents))


def ancestors_of(parents: Parents) -> Parents:
    """For each agent, every agent it depends on, directly or not, in crew order."""
    found: list[set[int]] = []
    for direct in parents:
        reach = set(direct)
        for parent in direct:
            reach |= found[parent]
        found.append(reach)
    return [sorted(reach) for reach in found]
