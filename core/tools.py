"""The tools an agent can be offered: their schemas, input checks and one-line summaries.

Pure and deterministic, so the run workflow can use it to decide what to offer the model,
whether a call is valid, and what to show a human who must approve it.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from core.types import ASK_HUMAN_TOOL, AgentConfig, CustomToolConfig


def builtin_definitions() -> dict[str, dict[str, Any]]:
    """The built-in tools' Messages API definitions, built fresh on every call.

    Fresh because workers import this module once for every run (workflows/registry.py):
    a module-level dict that one run changed would change every later run's requests.
    """
    ask_human_schema = {
        "type": "object",
        "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 4000}},
        "required": ["question"],
        "additionalProperties": False,
    }
    send_email_schema = {
        "type": "object",
        "properties": {
            "to": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
            # One line: a line break would forge extra headers (and mislead the approver).
            "subject": {"type": "string", "minLength": 1, "maxLength": 300,
                        "pattern": "^[^\\r\\n]*$"},
            "body": {"type": "string", "maxLength": 100_000},
        },
        "required": ["to", "subject", "body"],
        "additionalProperties": False,
    }
    http_request_schema = {
        "type": "object",
        "properties": {
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
            "url": {"type": "string", "pattern": r"^https?://"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": {"type": "string", "maxLength": 100_000},
        },
        "required": ["url"],
        "additionalProperties": False,
    }
    return {
        ASK_HUMAN_TOOL: {
            "name": ASK_HUMAN_TOOL,
            "description": "Ask the human running this task a question and wait for the "
            "answer. Use it when you need information or a decision only they can give.",
            "input_schema": ask_human_schema,
        },
        "send_email": {
            "name": "send_email",
            "description": "Send a plain-text email.",
            "input_schema": send_email_schema,
        },
        "http_request": {
            "name": "http_request",
            "description": "Make an HTTP request to an allowed host and get the status and "
            "the start of the response body.",
            "input_schema": http_request_schema,
        },
    }


def tool_definitions(
    agent: AgentConfig, custom: list[CustomToolConfig], allow_input_requests: bool
) -> list[dict[str, Any]]:
    """The Messages API `tools` for this agent: the question tool first, then its own."""
    by_name = {tool.name: tool for tool in custom}
    builtin = builtin_definitions()
    definitions = []
    if allow_input_requests:
        definitions.append(builtin[ASK_HUMAN_TOOL])
    for name in agent.tools:
        if name in by_name:
            tool = by_name[name]
            definitions.append(
                {"name": tool.name, "description": tool.description,
                 "input_schema": tool.input_schema}
            )
        elif name in builtin:
            definitions.append(builtin[name])
    return definitions


def input_problem(schema: dict[str, Any], tool_input: Any) -> str | None:
    """Why `tool_input` does not fit `schema`, or None when it does."""
    try:
        errors = sorted(
            Draft202012Validator(schema).iter_errors(tool_input), key=lambda e: list(e.path)
        )
    except Exception as err:  # noqa: BLE001 - a schema that cannot be applied is a tool error
        return f"the tool's input schema could not be applied ({type(err).__name__}: {err})"
    if not errors:
        return None
    first = errors[0]
    where = ".".join(str(p) for p in first.path) or "input"
    return f"{where}: {first.message}"


def approval_summary(name: str, tool_input: dict[str, Any]) -> str:
    """One line a human can approve or reject."""
    if name == "send_email":
        return f"Send an email to {tool_input.get('to')} with subject “{tool_input.get('subject')}”"
    if name == "http_request":
        return f"{tool_input.get('method', 'GET')} {tool_input.get('url')}"
    arguments = json.dumps(tool_input, ensure_ascii=False, sort_keys=True)
    if len(arguments) > 200:
        arguments = arguments[:199] + "…"
    return f"Call {name} with {arguments}"
