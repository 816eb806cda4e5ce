"""The document's schemas as a client generator and a fuzzer read them.

APIFlask files each model's nested models under the parent's name (`TaskOut.TaskStatus`,
`JobOut.TaskStatus`, ...): one model becomes several components with the same title, which a
client generator refuses as duplicates. Here they become one component, named as the model is.

It also leaves out what pydantic cannot say about an HTTP request: that a body with required
fields is itself required (an absent body fails on them), that a query or path parameter cannot
be null (pydantic's `None` means absent there), and that a 304 has no body.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from app.api.openapi_parts import METHODS

REF_PREFIX = "#/components/schemas/"


def _rewrite_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX) and ref[len(REF_PREFIX) :] in names:
            return {**node, "$ref": REF_PREFIX + names[ref[len(REF_PREFIX) :]]}
        return {key: _rewrite_refs(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(item, names) for item in node]
    return node


def merge_nested_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """`Parent.Child` components become one `Child` when they are the same schema. Nested
    names are resolved first, so two parents' copies of a model that itself nests one compare
    equal. A name with two different schemas keeps its parents' names, with titles made unique."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    names = {name: name.rpartition(".")[2] for name in schemas if "." in name}
    rewritten = _rewrite_refs(schemas, names)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in schemas:
        groups[names.get(name, name)].append(name)
    merged: dict[str, Any] = {}
    kept: dict[str, str] = {}
    for short, members in groups.items():
        bodies = {json.dumps(rewritten[member], sort_keys=True) for member in members}
        if len(bodies) == 1:
            merged[short] = rewritten[members[0]]
            continue
        for member in members:  # different schemas under one name: each keeps its own
            kept[member] = member
            merged[member] = {**schemas[member], "title": member.replace(".", "")}
    final_names = {name: short for name, short in names.items() if name not in kept}
    spec["components"]["schemas"] = _rewrite_refs(merged, final_names)
    spec["paths"] = _rewrite_refs(spec["paths"], final_names)
    return spec


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        resolved: dict[str, Any] = spec["components"]["schemas"][ref[len(REF_PREFIX) :]]
        return resolved
    return node


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without pydantic's `null` branch and `null` default."""
    schema = {key: value for key, value in schema.items() if key != "default" or value is not None}
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [option for option in options if option != {"type": "null"}]
        schema.pop("anyOf")
        if len(kept) == 1:
            schema = {**kept[0], **schema}
        else:
            schema["anyOf"] = kept
    return schema


def complete_operations(spec: dict[str, Any]) -> dict[str, Any]:
    for item in spec["paths"].values():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            body = operation.get("requestBody")
            if body is not None:
                schemas = [_resolve(spec, media["schema"]) for media in body["content"].values()]
                body["required"] = any(schema.get("required") for schema in schemas)
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = _not_null(parameter["schema"])
            not_modified = operation.get("responses", {}).get("304")
            if not_modified is not None:
                not_modified.pop("content", None)
    return spec
