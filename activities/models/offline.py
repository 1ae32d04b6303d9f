"""`loopllama-offline`: a deterministic stand-in model that needs no network and no key.

It exists so the quick start and the tests run anywhere. Given the same request it
always answers the same way. Its rules, which the README documents:

- It answers with text that quotes the task it was given and names its instructions.
- It calls a tool it was offered, once per step, when the task asks for it:
  `ask_human` when the task says "ask me"; `send_email` when the task contains an
  email address; `http_request` when the task contains an http(s) URL; a custom tool
  when the task mentions the tool's name; an MCP tool (`mcp__<server>__<tool>`) when
  the task mentions its name or its server's name for it (`<tool>`).
- After tool results come back it writes its final answer, quoting them.
- Token usage is the number of whitespace-separated words read and written.
"""

from __future__ import annotations

import re
from typing import Any

from core.mcp_names import mcp_tool_parts
from core.types import ASK_HUMAN_TOOL, ModelRequest, ModelResponse

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"https?://[^\s\"'<>]+")
ORIGINAL_REQUEST = "Original request:\n"
PRIOR_OUTPUT = "\n\nPrior agent output:"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content", "")))
        elif block.get("type") == "tool_use":
            parts.append(str(block.get("input", "")))
    return " ".join(parts)


def _words(text: str) -> int:
    return len(text.split())


def _first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _condensed(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _request_in(task: str) -> str:
    # Later agents get "Original request:\n<input>\n\nPrior agent output:..."; questions
    # and subjects read better about the request than about that header.
    if task.startswith(ORIGINAL_REQUEST):
        return task[len(ORIGINAL_REQUEST):].split(PRIOR_OUTPUT, 1)[0]
    return task


def _tool_input(tool: dict[str, Any], full_task: str) -> dict[str, Any] | None:
    name = tool["name"]
    task = _request_in(full_task)
    if name == ASK_HUMAN_TOOL:
        if "ask me" not in task.lower():
            return None
        return {"question": f"Before I start on “{_first_line(task, 60)}”: what should I know?"}
    if name == "send_email":
        match = _EMAIL.search(task)
        if match is None:
            return None
        return {
            "to": match.group(0),
            "subject": _first_line(task, 60),
            "body": f"Hello,\n\nAs requested: {_first_line(task, 200)}\n\n— LoopLlama",
        }
    if name == "http_request":
        match = _URL.search(task)
        return None if match is None else {"method": "GET", "url": match.group(0)}
    mcp = mcp_tool_parts(name)
    names = [name] if mcp is None else [name, mcp[1]]
    if not any(known.lower() in task.lower() for known in names):
        return None
    schema = tool.get("input_schema") or {}
    properties = schema.get("properties") or {}
    return {
        key: _first_line(task, 200)
        for key, spec in properties.items()
        if isinstance(spec, dict) and spec.get("type", "string") == "string"
    }


def offline_reply(request: ModelRequest) -> ModelResponse:
    """The offline model's answer to one Messages request."""
    task = _text_of(request.messages[0]["content"]) if request.messages else ""
    read = _words(request.system) + sum(_words(_text_of(m["content"])) for m in request.messages)
    already_called = {
        block.get("name")
        for message in request.messages
        if message["role"] == "assistant" and not isinstance(message["content"], str)
        for block in message["content"]
        if block.get("type") == "tool_use"
    }
    turn = sum(1 for m in request.messages if m["role"] == "assistant")
    for tool in request.tools:
        if tool["name"] in already_called:
            continue
        tool_input = _tool_input(tool, task)
        if tool_input is not None:
            note = f"I will use {tool['name']}."
            return ModelResponse(
                content=[
                    {"type": "text", "text": note},
                    {
                        "type": "tool_use",
                        "id": f"toolu_offline_{turn}_{tool['name']}",
                        "name": tool["name"],
                        "input": tool_input,
                    },
                ],
                stop_reason="tool_use",
                tokens_in=read,
                tokens_out=_words(note) + _words(str(tool_input)),
            )

    lines = [f"[{request.model}] {_first_line(request.system) or 'No instructions.'}"]
    lines.append(f"Task ({_words(task)} words): {_condensed(task, 240)}")
    results = [
        _text_of(block.get("content", ""))
        for message in request.messages
        if message["role"] == "user" and not isinstance(message["content"], str)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]
    for result in results:
        lines.append(f"Tool result: {_first_line(result, 200)}")
    text = "\n".join(lines)
    return ModelResponse(
        content=[{"type": "text", "text": text}],
        stop_reason="end_turn",
        tokens_in=read,
        tokens_out=_words(text),
    )


class OfflineProvider:
    """The offline model as a provider: no client, nothing to close."""

    # As traces have always called it.
    name = "loopllama-offline"

    async def call(self, request: ModelRequest) -> ModelResponse:
        """Answer as `offline_reply` does."""
        return offline_reply(request)

    async def close(self) -> None:
        """Nothing to close."""
