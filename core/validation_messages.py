"""Turn pydantic validation errors into sentences that say what to send instead."""

from __future__ import annotations

from typing import Any

# What a strict type error asks for, by pydantic error type.
_EXPECTED = {
    "int_type": "an integer (a JSON number such as 10, without quotes)",
    "bool_type": "true or false (a JSON boolean, without quotes)",
    "string_type": "a string (in double quotes)",
    "float_type": "a number",
    "list_type": "a list (a JSON array)",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}
_ROOT_NOT_AN_OBJECT = ("model_type", "model_attributes_type", "dict_type")
_CONTENT_TYPE = (
    "The request body must be JSON sent with the header 'Content-Type: application/json'."
)


def describe_validation_errors(errors: list[Any]) -> str:
    """One sentence per problem: where it is and what to send instead."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        where = ".".join(loc)
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            parts.append(f"Unknown field '{where}': remove it.")
        elif kind == "missing":
            parts.append(f"Missing required field '{where}'." if where else "Missing request body.")
        elif kind == "json_invalid":
            parts.append("The request body is not valid JSON.")
        elif kind in _ROOT_NOT_AN_OBJECT and not where:
            # FastAPI hands over the raw bytes when the body was not sent as JSON.
            if isinstance(err.get("input"), bytes | bytearray):
                parts.append(_CONTENT_TYPE)
            else:
                parts.append("The request body must be a JSON object.")
        elif kind in _EXPECTED and "input" in err:
            got = _json_kind(err["input"])
            parts.append(f"{where or 'The request body'}: send {_EXPECTED[kind]}, not {got}.")
        else:
            message = str(err.get("msg", "is invalid")).removeprefix("Value error, ").rstrip(".")
            parts.append(f"{where}: {message}." if where else f"{message}.")
    return " ".join(parts) or "The request is invalid."


def _json_kind(value: Any) -> str:
    """What `value` was in the JSON that was sent, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)" if len(repr(value)) <= 20 else "a number"
    if isinstance(value, str):
        return f"{value!r} (a string)" if len(value) <= 20 else "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
