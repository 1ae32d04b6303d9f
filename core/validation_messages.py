"""Turn pydantic validation errors into sentences that say what to send instead."""

from __future__ import annotations

from typing import Any


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
        elif kind in ("model_attributes_type", "dict_type") and not where:
            parts.append("The request body must be a JSON object.")
        else:
            message = str(err.get("msg", "is invalid")).removeprefix("Value error, ").rstrip(".")
            parts.append(f"{where}: {message}." if where else f"{message}.")
    return " ".join(parts) or "The request is invalid."
