"""Every workflow class a LoopLlama worker runs."""

from workflows.definition import CrewDefinitionWorkflow
from workflows.run import CrewRunWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow

WORKFLOWS = (CrewDefinitionWorkflow, CrewRunWorkflow, WebhookDeliveryWorkflow)
