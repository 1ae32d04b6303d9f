"""The tools an agent can be offered: their schemas, input checks and one-line summaries.

Pure and deterministic, so the run workflow can use it to decide what to offer the model,
whether a call is valid, and what to show a human who must approve it.

A call is checked here before anyone is asked to approve it, so everything the built-in
tools would refuse about their input is refused here first (the tools check again):

- Email: `to` is one plain address (`local@domain`, RFC 5321's dot-atom local part and
  a host name of at least two labels, ASCII only: a domain in its `xn--` form); no
  display name, list, comment or quoted part, so no comma, semicolon, angle bracket,
  quote, parenthesis, bracket, backslash, colon or whitespace. No header value (`to`,
  `subject`) holds a control character: C0 controls, DEL, C1 controls (NEL among them),
  U+2028 and U+2029, or the bidirectional embedding, override and isolate controls
  (U+202A-U+202E, U+2066-U+2069), which reorder what the approver reads. The body may
  hold any text but NUL.
- `http_request`: a URL httpx can parse, without a user name or password or any of those
  control characters; header names are RFC 9110 tokens and header values printable
  ASCII or tabs on one line.

These are checked in code, not by schema `pattern`s alone: in Python's `re`, which
applies a schema's patterns, `$` also matches before a trailing newline, so `^[^\\n]*$`
accepts "Hi\\n".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from core.mcp_names import MCP_PREFIX, mcp_server_of, mcp_tool_name, mcp_tool_parts
from core.types import ASK_HUMAN_TOOL, AgentConfig, CustomToolConfig, McpServerConfig


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
    # The rules that no schema keyword states exactly are in `email_problem`. The
    # validating keywords are the ones runs recorded before it were checked with
    # (`input_problem(..., builtin_rules=False)`): change them only behind a patch.
    send_email_schema = {
        "type": "object",
        "properties": {
            "to": {"type": "string", "format": "email",
                   "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                   "description": "One recipient as a plain address, like name@example.com: "
                   "no display name, no list (one address per email)."},
            # One line: a line break would forge extra headers (and mislead the approver).
            "subject": {"type": "string", "minLength": 1, "maxLength": 300,
                        "pattern": "^[^\\r\\n]*$",
                        "description": "One line of text, without control characters."},
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
            "headers": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Header names are tokens (letters, digits, "
                        "!#$%&'*+.^_`|~-); values are printable ASCII on one line."},
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
    agent: AgentConfig, custom: list[CustomToolConfig], allow_input_requests: bool,
    mcp_servers: list[McpServerConfig] | None = None,
) -> list[dict[str, Any]]:
    """The Messages API `tools` for this agent: the question tool first, then its own,
    in the order it names them (`mcp__<server>` for all of a server's, as listed)."""
    by_name = {tool.name: tool for tool in custom}
    servers = {server.name: server for server in mcp_servers or []}
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
        else:
            definitions.extend(_mcp_definitions(name, servers))
    return _first_of_each(definitions)


def _mcp_definitions(name: str, servers: dict[str, McpServerConfig]) -> list[dict[str, Any]]:
    parts = mcp_tool_parts(name)
    server = servers.get(parts[0] if parts is not None else mcp_server_of(name) or "")
    if server is None:
        return []
    return [
        {"name": mcp_tool_name(server.name, tool.name), "description": tool.description,
         "input_schema": tool.input_schema}
        for tool in server.tools if parts is None or tool.name == parts[1]
    ]


def _first_of_each(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # An agent may name a server's tool and the whole server; a model is offered each
    # tool once.
    seen: set[str] = set()
    unique = []
    for definition in definitions:
        if definition["name"] not in seen:
            seen.add(definition["name"])
            unique.append(definition)
    return unique


def needs_approval(name: str, approval_required_tools: list[str]) -> bool:
    """Whether a person must approve a call of the tool `name`: it is listed, or it is
    an MCP tool whose whole server (`mcp__<server>`) is."""
    if name in approval_required_tools:
        return True
    parts = mcp_tool_parts(name)
    return parts is not None and f"{MCP_PREFIX}{parts[0]}" in approval_required_tools


# The input a provider gives a tool call whose arguments were not a JSON object
# (activities/models/openai_compatible.py): refused whatever the schema, so the model is
# told and may write better ones.
UNPARSED_ARGUMENTS = "_unparsed_arguments"


def input_problem(schema: dict[str, Any], tool_input: Any, *,
                  builtin_rules: bool = True) -> str | None:
    """Why `tool_input` does not fit `schema`, or None when it does.

    An input for a built-in tool must also keep that tool's rules (`email_problem`,
    `http_request_problem`), checked first for their clearer messages. A built-in tool is
    recognised by its schema: a custom tool cannot take a built-in's name, and one that
    copies a built-in's schema gets its rules. `builtin_rules=False` checks the schema
    alone, as runs recorded before those rules were (for a `workflow.patched` gate).
    """
    if isinstance(tool_input, dict) and set(tool_input) == {UNPARSED_ARGUMENTS}:
        return "the arguments were not a JSON object; send the input as a JSON object"
    if builtin_rules and isinstance(tool_input, dict):
        builtin = builtin_definitions()
        rules = (email_problem if schema == builtin["send_email"]["input_schema"]
                 else http_request_problem if schema == builtin["http_request"]["input_schema"]
                 else None)
        if rules is not None and (problem := rules(tool_input)):
            return problem
    return _schema_problem(schema, tool_input)


def _schema_problem(schema: dict[str, Any], tool_input: Any) -> str | None:
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


# ------------------------------------------------------------------------------- email

# Every character `str.splitlines` treats as a line boundary.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# Characters no header value may hold (the line breaks among them); see the docstring.
_HEADER_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
MAX_ADDRESS_LENGTH = 254  # RFC 5321's path limit, less the angle brackets
_MAX_LOCAL_LENGTH = 64
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# What would make one field more than one plain address: lists, display names, quoted
# parts, comments, domain literals, route syntax.
_NOT_IN_ADDRESS = frozenset(',;<>"()[]\\:')
_ONE_ADDRESS = ("give one plain address, like name@example.com: no display name, list, "
                "quotes or comments (one address per email)")


def control_character_in(value: str) -> str | None:
    """The first character of `value` that no header may hold, described for a person
    (`a line break (U+000A)`), or None."""
    found = _HEADER_CONTROL.search(value)
    if found is None:
        return None
    char = found.group()
    kind = ("a line break" if char in LINE_BREAKS
            else "a bidirectional control character" if char in _BIDI_CONTROLS
            else "a control character")
    return f"{kind} (U+{ord(char):04X})"


def address_problem(value: str) -> str | None:
    """Why `value` is not exactly one plain email address, or None."""
    if found := control_character_in(value):
        return f"contains {found}; {_ONE_ADDRESS}"
    if odd := next((c for c in value if c in _NOT_IN_ADDRESS or c.isspace()), None):
        return f"contains {odd!r}; {_ONE_ADDRESS}"
    if other := next((c for c in value if not c.isascii()), None):
        return (f"contains the non-ASCII character {other!r}; give the address in ASCII, "
                "with an internationalised domain in its xn-- form")
    if (signs := value.count("@")) != 1:
        count = "no @ sign" if signs == 0 else f"{signs} @ signs, not one"
        return f"has {count}; {_ONE_ADDRESS}"
    if len(value) > MAX_ADDRESS_LENGTH:
        return f"is longer than {MAX_ADDRESS_LENGTH} characters"
    local, domain = value.split("@")
    if not 0 < len(local) <= _MAX_LOCAL_LENGTH or not _LOCAL_PART.fullmatch(local):
        return (f"has an invalid part before the @: it must be 1 to {_MAX_LOCAL_LENGTH} "
                "letters, digits or !#$%&'*+/=?^_`{|}~- with single dots between them")
    labels = domain.split(".")
    if (len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels)
            or not labels[-1][0].isalpha()):
        return ("has an invalid domain: it must be a host name like example.com (labels "
                "of letters, digits and inner hyphens, at most 63 each)")
    return None


def email_problem(tool_input: Mapping[str, Any]) -> str | None:
    """Why `send_email` would refuse this input (types aside: the schema checks those)."""
    to, subject, body = (tool_input.get(key) for key in ("to", "subject", "body"))
    if isinstance(to, str) and (problem := address_problem(to)):
        return f"to: {problem}"
    if isinstance(subject, str) and (found := control_character_in(subject)):
        return f"subject: contains {found}; the subject must be one line of plain text"
    if isinstance(body, str) and "\x00" in body:
        return "body: contains a NUL character (U+0000), which no email may carry"
    return None


# ------------------------------------------------------------------------ http_request

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


def header_problem(headers: Mapping[str, str]) -> str | None:
    """Why these HTTP headers cannot be sent as they are, or None."""
    for name, value in headers.items():
        shown = name if len(name) <= 64 else name[:63] + "…"
        if not _TOKEN.fullmatch(name):
            return (f"{shown!r} is not a valid header name (letters, digits and "
                    "!#$%&'*+.^_`|~- only)")
        if not _HEADER_VALUE.fullmatch(value):
            bad = next(c for c in value if c != "\t" and not "\x20" <= c <= "\x7e")
            what = (control_character_in(bad)
                    or f"the non-ASCII character {bad!r} (U+{ord(bad):04X})")
            return (f"the value of header {shown!r} contains {what}; header values are "
                    "printable ASCII on one line")
    return None


def url_problem(url: str) -> str | None:
    """Why an HTTP tool would refuse `url` whatever the network rules say, or None.

    Parsed by httpx, the parser that sends the request. A control character is refused
    even where httpx would percent-encode it: the approver reads the URL as written.
    """
    if found := control_character_in(url):
        return f"contains {found}"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as err:
        return f"is not a valid URL ({err})"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "is not an http(s) URL with a host"
    if parsed.userinfo:
        return "carries a user name or password; tools do not send credentials"
    return None


def http_request_problem(tool_input: Mapping[str, Any]) -> str | None:
    """Why `http_request` would refuse this input before any network check, or None."""
    url, headers = tool_input.get("url"), tool_input.get("headers")
    if isinstance(url, str) and (problem := url_problem(url)):
        return f"url: {problem}"
    if isinstance(headers, dict):
        texts = {name: value for name, value in headers.items()
                 if isinstance(name, str) and isinstance(value, str)}
        if problem := header_problem(texts):
            return f"headers: {problem}"
    return None


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
