"""Every workflow class a LoopLlama worker runs, and the sandbox they run in."""

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.definition import CrewDefinitionWorkflow
from workflows.run import CrewRunWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS = (CrewDefinitionWorkflow, CrewRunWorkflow, WebhookDeliveryWorkflow)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox every worker and replayer runs workflows in.

    Every module passes through: the sandbox re-imported the workflow modules (and what
    they import) for each run: a fifth of the worker's CPU per run (46 -> 37 ms)
    (`python -m bench.bench_runs --profile`). The sandbox still refuses non-deterministic
    calls (clocks, randomness, I/O) at run time; what it no longer isolates is module
    state, so modules that workflows import keep no mutable globals
    (tests/test_workflow_modules.py holds them to that).
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    )
