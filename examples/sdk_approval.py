"""Trigger a run and answer its pauses from Python.

    loopllama dev                      # in another terminal
    python examples/sdk_approval.py

The writer asks about tone (the offline model does when the task says "ask me"), then
wants to email the brief; this script answers the question and approves emails to
example.com only.
"""

from __future__ import annotations

import json
from pathlib import Path

from loopllama import LoopLlama, approve, reject
from loopllama.types import Decision, Run


def decide(run: Run) -> str | Decision:
    """Called whenever the run waits for a person."""
    pending = run.pending
    assert pending is not None
    if pending.kind == "input":
        print(f"agent asks: {pending.prompt}")
        return "Friendly and concise, for small-business owners."
    print(f"approval: {pending.prompt}")
    to = str((pending.tool_input or {}).get("to", ""))
    return approve() if to.endswith("@example.com") else reject("Only example.com, please.")


def main() -> None:
    # Reads LOOPLLAMA_API_KEY / LOOPLLAMA_BASE_URL; `loopllama dev` prints both.
    client = LoopLlama()
    spec = json.loads((Path(__file__).parent / "crew.json").read_text())
    workflow = client.workflows.create(spec)
    run = client.runs.trigger_and_poll(
        workflow.id,
        "Draft a launch brief for our feature-flag system; ask me about tone, then email "
        "it to team@example.com.",
        on_waiting_input=decide,
    )
    print(run.status, f"({run.tokens_in}→{run.tokens_out} tokens)")
    for step in client.runs.get(run).steps:
        print(f"--- {step.role} ---\n{step.output}")


if __name__ == "__main__":
    main()
