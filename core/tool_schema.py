"""Custom tool input schemas: bounded, checked and resolved before a workflow stores them.

Pure functions of the schema, so the API checks a request with them (off its event loop,
api/body_guard.py) and the definition workflow checks a change with the same rules.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema_specifications
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

# A custom tool's input_schema, bounded before anything costly reads it. Generous for
# real tools (hundreds of properties with descriptions); at these limits one tool is
# checked in about 70 ms and a whole workflow's tools in about 0.3 s, in the API and
# again in the worker that applies a change (see README "Human in the loop and tools").
MAX_TOOL_SCHEMA_BYTES = 64 * 1024
MAX_TOOL_SCHEMA_DEPTH = 32
# Members: object entries and array items, wherever they are in the schema.
MAX_TOOL_SCHEMA_MEMBERS = 2_000
MAX_TOOLS_SCHEMA_MEMBERS = 8_000

_SCHEMA_BASE = "urn:loopllama:tool-input-schema"
_MESSAGE_CHARS = 300


def json_extent(value: Any, *, max_depth: int, max_members: int) -> tuple[int, int]:
    """How deep `value` nests (1 for `{}` or `[]`, 0 for a scalar) and how many members
    (object entries and array items) it holds, counted without recursion.

    Counting stops as soon as either passes its maximum, so the work is bounded by the
    maximums and an answer past one of them is only a lower bound.
    """
    depth = members = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth = max(depth, level)
        members += len(children)
        if depth > max_depth or members > max_members:
            break
        stack.extend((child, level + 1) for child in children)
    return depth, members


def tool_schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot be a custom tool's input_schema, or None when it can.

    Its depth, size and members are bounded first (without recursion), then it is checked
    against the JSON Schema 2020-12 meta-schema and every `$ref` is followed, so any
    schema this accepts can be applied to tool inputs.
    """
    if schema.get("type") != "object":
        return 'input_schema must be a JSON schema with "type": "object"'
    depth, members = json_extent(
        schema, max_depth=MAX_TOOL_SCHEMA_DEPTH, max_members=MAX_TOOL_SCHEMA_MEMBERS
    )
    if depth > MAX_TOOL_SCHEMA_DEPTH:
        return (
            f"input_schema nests more than {MAX_TOOL_SCHEMA_DEPTH} levels deep; send a "
            f"flatter schema (at most {MAX_TOOL_SCHEMA_DEPTH} levels of objects and "
            "arrays; a part used in several places can move to '$defs', referred to with "
            "'$ref')"
        )
    if members > MAX_TOOL_SCHEMA_MEMBERS:
        return (
            f"input_schema has more than {MAX_TOOL_SCHEMA_MEMBERS} members (object entries "
            "and array items, enum values included); send a smaller schema: fewer "
            "properties or enum values, or split the tool in two"
        )
    try:
        size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":"),
                              allow_nan=False).encode())
    except (TypeError, ValueError):
        return ("input_schema must hold only JSON values (no NaN or Infinity, no unpaired "
                "surrogates in strings)")
    if size > MAX_TOOL_SCHEMA_BYTES:
        return (
            f"input_schema is {size} bytes as compact JSON; send at most "
            f"{MAX_TOOL_SCHEMA_BYTES} (shorter descriptions, or split the tool in two)"
        )
    error = next(_meta_schema_validator().iter_errors(schema), None)
    if error is not None:
        where = error.json_path.removeprefix("$").removeprefix(".")
        at = f" (at {where})" if where else ""
        return f"input_schema is not a valid JSON schema: {_shorten(error.message)}{at}"
    problem = unresolvable_ref(schema)
    return None if problem is None else f"input_schema: {problem}"


def tools_size_problem(tools: Any) -> str | None:
    """Why a workflow's `tools` (as sent) are too large together, or None.

    Counted before any tool is checked, so a workflow of many tools at the per-tool
    limits costs no more than one of `MAX_TOOLS_SCHEMA_MEMBERS` members. A tool past the
    per-tool limit is left to its own check, which names it.
    """
    if not isinstance(tools, list):
        return None
    total = 0
    for tool in tools:
        schema = tool.get("input_schema") if isinstance(tool, dict) else None
        if schema is None:
            continue
        members = json_extent(schema, max_depth=MAX_TOOL_SCHEMA_DEPTH,
                              max_members=MAX_TOOL_SCHEMA_MEMBERS)[1]
        if members > MAX_TOOL_SCHEMA_MEMBERS:
            return None
        total += members
        if total > MAX_TOOLS_SCHEMA_MEMBERS:
            return (
                f"tools: the input_schemas together have more than "
                f"{MAX_TOOLS_SCHEMA_MEMBERS} members (object entries and array items); "
                f"send smaller schemas or fewer tools (at most {MAX_TOOLS_SCHEMA_MEMBERS} "
                f"across a workflow, {MAX_TOOL_SCHEMA_MEMBERS} in one tool)"
            )
    return None


def _shorten(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


@cache
def _meta_schema_validator() -> Draft202012Validator:
    """A validator of the JSON Schema 2020-12 meta-schema, as one flat document.

    The published meta-schema is seven vocabularies joined by `allOf` and
    `$dynamicRef: "#meta"`, which jsonschema resolves again for every subschema (about
    0.3 ms each). Here the vocabularies' properties and `$defs` are merged into one
    document and each `$dynamicRef` to the meta-schema is a `$ref` to its root, which is
    what it resolves to when a schema is checked against it: the same rules, checked ten
    times faster (tests/test_schema_properties.py compares the two).
    """
    base = "https://json-schema.org/draft/2020-12/"
    root = jsonschema_specifications.REGISTRY[base + "schema"].contents
    properties: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    for part in root["allOf"]:
        vocabulary = jsonschema_specifications.REGISTRY[base + part["$ref"]].contents
        properties.update(vocabulary.get("properties", {}))
        definitions.update(vocabulary.get("$defs", {}))
    properties.update(root["properties"])
    flat = _flattened({
        "$schema": base + "schema",
        "$id": "urn:loopllama:json-schema-2020-12-flat",
        "type": ["object", "boolean"],
        "properties": properties,
        "$defs": definitions,
    })
    return Draft202012Validator(flat, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _flattened(node: Any) -> Any:
    """`node` with every reference rewritten to point inside the flat meta-schema."""
    if isinstance(node, list):
        return [_flattened(item) for item in node]
    if not isinstance(node, dict):
        return node
    flat = {}
    for key, value in node.items():
        if key == "$dynamicRef" and value == "#meta":
            flat["$ref"] = "#"
        elif key == "$ref" and isinstance(value, str) and "#/$defs/" in value:
            flat["$ref"] = "#/$defs/" + value.split("#/$defs/", 1)[1]
        else:
            flat[key] = _flattened(value)
    return flat


def unresolvable_ref(schema: dict[str, Any]) -> str | None:
    """Why a `$ref` in `schema` cannot be followed, or None when all of them can.

    Only references inside the schema itself are allowed: a remote one would be fetched
    (or fail) at the first tool call, inside a running run. A reference must lead to a
    schema (an object or a boolean), not to a value such as an enum's.
    """
    nested = _nested_resource(schema)
    if nested is not None:
        return (
            f"{nested!r} is allowed only at the top of the schema (nested schema resources "
            "are not supported); define shared parts in '$defs' and refer to them as "
            "'#/$defs/<name>'"
        )
    try:
        # Crawled once up front: otherwise every anchor lookup crawls the schema again.
        resolver = Registry().with_resource(
            _SCHEMA_BASE, DRAFT202012.create_resource(schema)
        ).crawl().resolver(base_uri=_SCHEMA_BASE)
    except ValueError:
        return "its '$id' is not a usable URI; send a valid absolute URI, or leave it out"
    targets: dict[str, Any] = {}
    for ref in dict.fromkeys(_refs(schema)):
        if not ref.startswith("#"):
            return (
                f"$ref {_shorten(ref)!r} points outside the schema; only references inside "
                "it (such as '#/$defs/address') are allowed"
            )
        try:
            target = resolver.lookup(ref).contents
        except Unresolvable:
            return f"$ref {_shorten(ref)!r} does not resolve inside the schema; define its target"
        if not isinstance(target, dict | bool):
            return (
                f"$ref {_shorten(ref)!r} points at {_shorten(json.dumps(target))}, which is "
                "not a schema; point it at an object such as '#/$defs/address'"
            )
        targets[ref] = target
    loop = _in_place_loop(schema, targets)
    if loop is not None:
        return (
            f"$ref {_shorten(loop)!r} leads back to where it is used without going into "
            "the input (through allOf, anyOf, oneOf, not, if, then, else, dependentSchemas "
            "or $ref alone), so checking any input would never end; make the loop pass "
            "through a keyword such as properties or items"
        )
    return None


# Keywords that apply their schemas to the same value (in place), and those that apply
# them to the value's members; a `$ref` applies its target in place.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAP = ("dependentSchemas",)
_MEMBERS_ONE = ("additionalProperties", "propertyNames", "items", "contains",
                "unevaluatedItems", "unevaluatedProperties", "contentSchema")
_MEMBERS_MANY = ("prefixItems",)
_MEMBERS_MAP = ("properties", "patternProperties", "$defs")


def _applied(node: dict[str, Any], targets: dict[str, Any], *, in_place: bool) -> list[Any]:
    """The subschemas `node` applies in place (or, `in_place=False`, all of them)."""
    one: tuple[str, ...] = _IN_PLACE_ONE
    many: tuple[str, ...] = _IN_PLACE_MANY
    maps: tuple[str, ...] = _IN_PLACE_MAP
    if not in_place:
        one, many, maps = one + _MEMBERS_ONE, many + _MEMBERS_MANY, maps + _MEMBERS_MAP
    found = [node[key] for key in one if key in node]
    found += [item for key in many if isinstance(node.get(key), list) for item in node[key]]
    found += [item for key in maps if isinstance(node.get(key), dict)
              for item in node[key].values()]
    ref = node.get("$ref")
    if isinstance(ref, str) and ref in targets:
        found.append(targets[ref])
    return [item for item in found if isinstance(item, dict)]


def _nested_resource(schema: dict[str, Any]) -> str | None:
    """`$id` or `$schema` when a subschema of `schema` declares one, else None."""
    pending = _applied(schema, {}, in_place=False)
    while pending:
        node = pending.pop()
        keyword = next((key for key in ("$id", "$schema") if key in node), None)
        if keyword is not None:
            return keyword
        pending.extend(_applied(node, {}, in_place=False))
    return None


def _in_place_loop(schema: dict[str, Any], targets: dict[str, Any]) -> str | None:
    """A `$ref` on a loop of in-place applications (endless for every input), or None.

    Iterative depth-first search over the schema's objects, by identity.
    """
    nodes: dict[int, dict[str, Any]] = {}
    pending: list[dict[str, Any]] = [schema]
    while pending:
        node = pending.pop()
        if id(node) not in nodes:
            nodes[id(node)] = node
            pending.extend(_applied(node, targets, in_place=False))
    state: dict[int, bool] = {}  # False: on the current path; True: done
    for start in nodes.values():
        if id(start) in state:
            continue
        state[id(start)] = False
        path = [(start, iter(_applied(start, targets, in_place=True)))]
        while path:
            node, successors = path[-1]
            successor = next(successors, None)
            if successor is None:
                state[id(node)] = True
                path.pop()
            elif id(successor) not in state:
                state[id(successor)] = False
                path.append((successor, iter(_applied(successor, targets, in_place=True))))
            elif state[id(successor)] is False:
                on_loop = [entry[0] for entry in path]
                on_loop = on_loop[next(i for i, n in enumerate(on_loop) if n is successor):]
                return next((n["$ref"] for n in on_loop
                             if isinstance(n.get("$ref"), str) and n["$ref"] in targets), "$ref")
    return None


def _refs(schema: dict[str, Any]) -> list[str]:
    """Every `$ref` string in `schema`, found without recursion."""
    found: list[str] = []
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                found.append(node["$ref"])
            stack.extend(reversed(node.values()))
    return found
