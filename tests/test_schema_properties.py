"""Properties of the custom tool schema checker (core/tool_schema.py `tool_schema_problem`).

Hypothesis generates JSON schemas built from JSON Schema 2020-12 keywords, well and badly
typed, with references inside them, and inputs to apply them to:

- the flat meta-schema the checker uses agrees with jsonschema's own check_schema,
- a schema the checker accepts can be applied to any input without raising,
- a schema within the limits is checked within a time bound,
- a schema past a limit is refused with a message naming it, never another exception.

`$dynamicRef` is left out: one that leads nowhere is accepted at create and fails as a
tool error at run time (tests/test_lifecycle.py shows it).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError

from core.tool_schema import (
    MAX_TOOL_SCHEMA_BYTES,
    MAX_TOOL_SCHEMA_DEPTH,
    MAX_TOOL_SCHEMA_MEMBERS,
    _meta_schema_validator,
    json_extent,
    tool_schema_problem,
)
from core.types import CustomTool

# Enough examples to find the odd keyword combination, few enough for a fast suite.
EXAMPLES = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["a", "b", "c", "$ref", "0", ""])
refs = st.sampled_from([
    "#", "#/properties/a", "#/properties/b", "#/$defs/a", "#/$defs/b", "#/allOf/0",
    "#/items", "#/anyOf/1", "#/$defs/a/properties/a", "#/properties/a/enum/0", "#/nowhere",
    "#anchor", "#/%24defs/a", "#/$defs/a~1b", "other.json", "https://example.com/s.json",
])
patterns = st.sampled_from(["^a", "a+b", "(", "[a-z]{2,}", "\\d", "^(ab)*$", "", "\\"])
types = st.sampled_from(["object", "string", "integer", "number", "array", "boolean",
                         "null", "thing"])


def keyword_values(schema: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    """For each 2020-12 keyword, values as a schema writer would send them, plus noise."""
    schema_map = st.dictionaries(names, schema, max_size=3)
    schema_list = st.lists(schema, min_size=0, max_size=3)
    count = st.integers(-1, 5)
    number = st.one_of(st.integers(-5, 5), st.floats(-1e6, 1e6, allow_nan=False),
                       st.sampled_from([1e-300, 1e300, 0.1, 0]))
    return {
        "type": st.one_of(types, st.lists(types, max_size=3)),
        "properties": schema_map, "patternProperties": st.dictionaries(patterns, schema,
                                                                      max_size=2),
        "additionalProperties": schema, "propertyNames": schema,
        "items": schema, "prefixItems": schema_list, "contains": schema,
        "allOf": schema_list, "anyOf": schema_list, "oneOf": schema_list, "not": schema,
        "if": schema, "then": schema, "else": schema,
        "dependentSchemas": schema_map,
        "dependentRequired": st.dictionaries(names, st.lists(names, max_size=2), max_size=2),
        "unevaluatedProperties": schema, "unevaluatedItems": schema,
        "$defs": schema_map, "$ref": refs, "$anchor": st.sampled_from(["anchor", "1bad"]),
        "$id": st.sampled_from(["urn:loopllama:t", "https://example.com/s.json", "http://[",
                                "relative/s.json"]),
        "$schema": st.sampled_from(["https://json-schema.org/draft/2020-12/schema",
                                    "http://json-schema.org/draft-07/schema#"]),
        "enum": st.lists(json_values, max_size=3), "const": json_values,
        "required": st.lists(names, max_size=3), "minLength": count, "maxLength": count,
        "minItems": count, "maxItems": count, "minProperties": count,
        "maxProperties": count, "minContains": count, "maxContains": count,
        "uniqueItems": st.booleans(), "pattern": patterns,
        "minimum": number, "maximum": number, "exclusiveMinimum": number,
        "exclusiveMaximum": number, "multipleOf": number,
        "format": st.sampled_from(["email", "date-time", "uri", "whatever"]),
        "title": st.text(max_size=5), "description": st.text(max_size=5),
        "default": json_values, "examples": st.lists(json_values, max_size=2),
        "deprecated": st.booleans(), "readOnly": st.booleans(),
        "contentEncoding": st.text(max_size=5), "contentSchema": schema,
        "x-extension": json_values,
    }


def schema_objects(schema: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = keyword_values(schema)
    # Mostly well-typed keyword values, sometimes any JSON value in their place.
    entry = st.sampled_from(sorted(values)).flatmap(
        lambda key: st.tuples(st.just(key), values[key] | json_values
                              if key != "$ref" else values[key]))
    return st.lists(entry, max_size=4).map(dict)


subschemas: st.SearchStrategy[Any] = st.recursive(st.booleans() | st.just({}), schema_objects,
                                                  max_leaves=10)
tool_schemas = schema_objects(subschemas).map(lambda schema: {**schema, "type": "object"})


@EXAMPLES
@given(tool_schemas)
def test_the_flat_meta_schema_agrees_with_jsonschemas_own_check(schema: dict[str, Any]) -> None:
    flat_valid = next(_meta_schema_validator().iter_errors(schema), None) is None
    try:
        Draft202012Validator.check_schema(schema)
        official_valid = True
    except SchemaError:
        official_valid = False
    assert flat_valid == official_valid


@EXAMPLES
@given(tool_schemas, st.lists(json_values, min_size=1, max_size=4))
def test_an_accepted_schema_applies_to_any_input_without_raising(
    schema: dict[str, Any], inputs: list[Any]
) -> None:
    if tool_schema_problem(schema) is not None:
        return
    validator = Draft202012Validator(schema)
    for value in inputs:
        list(validator.iter_errors(value))
        list(validator.iter_errors({"a": value, "b": [value]}))


@EXAMPLES
@given(tool_schemas)
def test_the_checker_answers_a_sentence_or_none_never_an_exception(
    schema: dict[str, Any]
) -> None:
    problem = tool_schema_problem(schema)
    assert problem is None or (problem.startswith("input_schema") and len(problem) < 600)
    # Through the model, a problem is a validation error (a 400 at the API).
    tool = {"name": "t", "description": "d", "url": "https://tools.example.com/t",
            "input_schema": schema}
    if problem is None:
        CustomTool.model_validate(tool)
    else:
        with pytest.raises(ValidationError):
            CustomTool.model_validate(tool)


# ------------------------------------------------------------------------- the limits


def widest(members: int, shape: str) -> dict[str, Any]:
    """A schema of exactly `members` members, in one of the costliest shapes to check."""
    entries = members - 2
    if shape == "patternProperties":
        return {"type": "object", "patternProperties": {f"^p{i}$": {} for i in range(entries)}}
    if shape == "properties":
        return {"type": "object", "properties": {f"p{i}": {} for i in range(entries)}}
    if shape == "allOf":
        return {"type": "object", "allOf": [{} for _ in range(entries)]}
    if shape == "refs":
        quarter = entries // 4
        return {"type": "object",
                "properties": {f"p{i}": {"$ref": f"#a{i}"} for i in range(quarter)},
                "$defs": {f"d{i}": {"$anchor": f"a{i}"} for i in range(quarter)}}
    return {"type": "object", "enum": list(range(entries))}


def nested(levels: int, key: str) -> dict[str, Any]:
    """A schema nesting exactly `levels` (odd) levels through `key`."""
    schema: dict[str, Any] = {"type": "object"}
    for _ in range((levels - 1) // 2):
        schema = {"type": "object", key: {"a": schema}} if key != "allOf" else {
            "type": "object", "allOf": [schema]}
    return schema


# Generous for slow and busy machines: at the limits a check takes about 80 ms here
# (the 20,000-property schema took 6.4 s before the limits).
CHECK_SECONDS = 3.0


# No explain phase: it traces every line, which is what would be timed.
@settings(max_examples=20, deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(st.sampled_from(["patternProperties", "properties", "allOf", "refs", "enum"]),
       st.integers(MAX_TOOL_SCHEMA_MEMBERS - 10, MAX_TOOL_SCHEMA_MEMBERS))
def test_a_schema_within_the_limits_is_checked_within_a_time_bound(shape: str,
                                                                   members: int) -> None:
    schema = widest(members, shape)
    assert json_extent(schema, max_depth=99, max_members=10**6)[1] <= MAX_TOOL_SCHEMA_MEMBERS
    started = time.perf_counter()
    assert tool_schema_problem(schema) is None
    assert time.perf_counter() - started < CHECK_SECONDS


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["patternProperties", "properties", "allOf", "enum"]),
       st.integers(MAX_TOOL_SCHEMA_MEMBERS + 1, 20 * MAX_TOOL_SCHEMA_MEMBERS))
def test_a_schema_past_the_member_limit_is_refused_at_once(shape: str, members: int) -> None:
    schema = widest(members, shape)
    started = time.perf_counter()
    problem = tool_schema_problem(schema)
    assert problem is not None and f"more than {MAX_TOOL_SCHEMA_MEMBERS} members" in problem
    assert time.perf_counter() - started < 0.1


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["properties", "patternProperties", "$defs", "allOf"]),
       st.integers(MAX_TOOL_SCHEMA_DEPTH + 1, 5000))
def test_a_schema_past_the_depth_limit_is_refused_with_a_sentence(key: str, levels: int) -> None:
    # Deeper than Python's recursion limit too: nothing here recurses.
    schema = nested(levels | 1, key)
    problem = tool_schema_problem(schema)
    assert problem is not None and f"more than {MAX_TOOL_SCHEMA_DEPTH} levels" in problem
    with pytest.raises(ValidationError, match="levels deep"):
        CustomTool.model_validate({"name": "t", "description": "d",
                                   "url": "https://tools.example.com/t", "input_schema": schema})


@settings(max_examples=10, deadline=None)
@given(st.integers(MAX_TOOL_SCHEMA_BYTES + 1, 4 * MAX_TOOL_SCHEMA_BYTES))
def test_a_schema_past_the_byte_limit_is_refused_with_a_sentence(size: int) -> None:
    schema = {"type": "object", "description": ""}
    schema["description"] = "x" * (size - len('{"type":"object","description":""}'))
    problem = tool_schema_problem(schema)
    assert problem is not None and f"send at most {MAX_TOOL_SCHEMA_BYTES}" in problem


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "\ud800", {1, 2}])
def test_a_schema_holding_what_json_cannot_is_refused_with_a_sentence(value: Any) -> None:
    problem = tool_schema_problem({"type": "object", "default": value})
    assert problem is not None and "only JSON values" in problem
