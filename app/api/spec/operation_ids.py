"""Each operation's `operationId`: its view's name (`create_task`, `get_job`), unique in the app.

Links name their target operation by it, and client generators name their functions by it
(without one, by the path: `get_task_task_id`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.api.openapi_parts import RULE_VARIABLE


def openapi_path(rule: str) -> str:
    """`/task/<int:task_id>` -> `/task/{task_id}`."""
    return RULE_VARIABLE.sub(r"{\1}", rule)


def name_operations(spec: dict[str, Any], app: Flask) -> dict[str, Any]:
    for rule in app.url_map.iter_rules():
        item = spec["paths"].get(openapi_path(rule.rule))
        if item is None:
            continue
        for method in rule.methods or ():
            operation = item.get(method.lower())
            if operation is not None:
                operation["operationId"] = rule.endpoint.rpartition(".")[2]
    names = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise RuntimeError(f"two operations would have the same operationId: {duplicates}")
    return spec
