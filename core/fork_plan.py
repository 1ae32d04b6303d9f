"""Which steps a fork runs again, and what a replayed tool call answers.

A step runs again when it is the one the fork starts `from`, when its agent was changed,
when the source run has no completed step for it, or when any step it depends on
(core/crew_graph.py's ancestors) runs again or was edited by hand. Every other step is
reused: copied from the source run, with `reused_from` naming the source step.

Replay records come from the source run's model requests: the last request of a step
holds its whole conversation, every `tool_use` with the `tool_result` that answered it
(the ask-a-human answers and approval outcomes among them), in order of use.

Pure and deterministic, so the API plans forks with it and tests read it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from core.crew_graph import ancestors_of, parents_of
from core.types import AgentConfig, RecordedToolCall, Step


def steps_to_run(crew: Sequence[AgentConfig], start_from: str, changed: Iterable[str],
                 edited: Iterable[str], completed: Iterable[str]) -> set[str]:
    """The roles a fork runs again (see the module doc); edited roles never run."""
    ancestors = ancestors_of(parents_of(crew))
    edited_roles = set(edited)
    again = {start_from, *changed} - edited_roles
    done = set(completed)
    for position, agent in enumerate(crew):
        if agent.role in edited_roles:
            continue
        upstream = {crew[a].role for a in ancestors[position]}
        if agent.role not in done or upstream & (again | edited_roles):
            again.add(agent.role)
    return again


def with_changes(crew: Sequence[AgentConfig],
                 changes: Mapping[str, Mapping[str, Any]]) -> list[AgentConfig]:
    """The crew with each role's changed fields replaced."""
    return [agent.model_copy(update=dict(changes.get(agent.role, {}))) for agent in crew]


def recorded_tool_calls(messages: Sequence[Mapping[str, Any]]) -> list[RecordedToolCall]:
    """Every tool call of a conversation with the result that answered it, in order."""
    asked: dict[str, tuple[str, Any]] = {}
    records: list[RecordedToolCall] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                asked[str(block.get("id"))] = (str(block.get("name")), block.get("input"))
            elif block.get("type") == "tool_result" and str(block.get("tool_use_id")) in asked:
                name, tool_input = asked.pop(str(block.get("tool_use_id")))
                records.append(RecordedToolCall(
                    name=name, input=tool_input, content=_text(block.get("content")),
                    is_error=bool(block.get("is_error"))))
    return records


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def reused_step(source: Step, new_id: str) -> Step:
    """The source step as a fork reuses it: same output, tokens and times."""
    return source.model_copy(update={"id": new_id, "reused_from": source.id})


def edited_step(agent: AgentConfig, order: int, output: str, new_id: str,
                source: Step | None) -> Step:
    """A step whose output a fork replaces by hand: it does not run and costs nothing."""
    return Step(id=new_id, order=order, role=agent.role, model=agent.model,
                input=source.input if source is not None else "", output=output,
                edited=True, started_at=source.started_at if source else None,
                finished_at=source.finished_at if source else None)
