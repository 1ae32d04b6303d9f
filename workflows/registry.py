"""Every workflow class a LoopLlama worker runs."""

from workflows.definition import CrewDefinitionWorkflow
from workflows.run import CrewRunWorkflow

WORKFLOWS = (CrewDefinitionWorkflow, CrewRunWorkflow)
