"""The served OpenAPI document: APIFlask's, completed where it cannot say enough by itself."""

from __future__ import annotations

from typing import Any

from apiflask import APIFlask

from app.api.spec.errors import document_errors
from app.api.spec.links import add_links
from app.api.spec.operation_ids import name_operations
from app.api.spec.schemas import complete_operations, merge_nested_schemas


def install(app: APIFlask) -> None:
    def complete(spec: dict[Any, Any] | str) -> dict[Any, Any] | str:
        assert isinstance(spec, dict)  # SPEC_FORMAT is json: APIFlask passes the dict
        spec = complete_operations(merge_nested_schemas(spec))
        return add_links(name_operations(document_errors(spec), app))

    app.spec_processor(complete)
