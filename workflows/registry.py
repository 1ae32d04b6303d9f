"""Every workflow class a LoopLlama worker runs, and the sandbox they run in."""

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from workflows.definition import CrewDefinitionWorkflow
from workflows.run import CrewRunWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS = (CrewDefinitionWorkflow, CrewRunWorkflow, WebhookDeliveryWorkflow)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox every worker and replayer runs workflows in.

    Modules with native extensions that cannot be imported twice in one process pass
    through it: `cryptography` (the encryption codec, core/encryption.py).
    """
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("cryptography")
    )
