"""The error answers of every operation, documented by rule in one place.

Some answers can come from any operation, or from every operation of a kind, whatever its view
does: a URL or headers over the limits (414, 431: app.api.request_limits), a rate limit (429;
every endpoint but the probes: app.api.rate_limits), the database gone (503: app.api.errors),
a body that is no JSON, too large or of another media type (400, 413, 415: app.api.http), an
invalid parameter (422), no valid token (401), a role that may not (403), an id that matches
nothing (404), a retried request still in progress (409: app.api.idempotency). Each is added
here to the operations it applies to, with the error body's schema; a route documents only
the answers of its own, or its own wording of one of these, which is kept.
"""

from __future__ import annotations

import copy
from typing import Any

from app.api.docs import error_schema
from app.api.idempotency import IN_PROGRESS_RESPONSE, KEY_ERRORS
from app.api.openapi_parts import METHODS, string_header

HTTP_ERROR = "#/components/schemas/HTTPError"
VALIDATION_ERROR = "#/components/schemas/ValidationError"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Load balancers' probes: outside every rate limit, and /ready answers its own 503.
PROBES = frozenset({"/health", "/ready"})

TEXTS = {
    400: "The body is not valid JSON, or is nested too deeply",
    401: "No valid bearer access token (missing, malformed, expired or revoked)",
    403: "The account's role may not do this",
    404: "Not found (an id that is not one, too: `/task/abc` answers as `/task/424242`)",
    413: "The body is over the size limit (MAX_JSON_BODY_BYTES)",
    414: "The URL (path and query) is longer than MAX_URL_BYTES",
    415: "The body is not `application/json`",
    422: "Some fields are invalid (see `errors`)",
    429: "Over a rate limit; retry after `Retry-After` seconds",
    431: "More headers than MAX_HEADER_COUNT, or larger than MAX_HEADER_BYTES together",
    503: "The database is unavailable or did not answer in time; retry after `Retry-After` seconds",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds after which a retry may succeed",
        "schema": {"type": "integer"},
    }
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": string_header("The bearer challenge")},
    429: RETRY_AFTER,
    503: RETRY_AFTER,
}


def route_responses(responses: dict[int, str | dict[str, Any]]) -> Any:
    """A view's own `doc(responses=...)`: per status, a description or a response object (with
    `headers`). APIFlask takes the two mixed; its annotation, one kind or the other."""
    return responses


def error_response(status: int, description: str) -> dict[str, Any]:
    schema = VALIDATION_ERROR if status == 422 else HTTP_ERROR
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": schema}}},
    }
    if status in HEADERS:
        response["headers"] = HEADERS[status]
    return response


def statuses_by_rule(path: str, operation: dict[str, Any]) -> list[int]:
    """The error statuses `operation` can answer whatever its view does."""
    statuses = [414, 431]
    if path not in PROBES:
        statuses += [429, 503]
    security = operation.get("security") or []
    if security:
        statuses.append(401)
    if any(scopes for requirement in security for scopes in requirement.values()):
        statuses.append(403)
    parameters = operation.get("parameters", [])
    if any(parameter["in"] == "path" for parameter in parameters):
        statuses.append(404)
    if "requestBody" in operation:
        statuses += [400, 413, 415]
    if "requestBody" in operation or any(parameter["in"] != "path" for parameter in parameters):
        statuses.append(422)  # a path parameter that does not convert matches no route: 404
    return statuses


def _idempotent(operation: dict[str, Any]) -> bool:
    return any(
        parameter["in"] == "header" and parameter["name"] == IDEMPOTENCY_HEADER
        for parameter in operation.get("parameters", [])
    )


def _document_operation(path: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status in statuses_by_rule(path, operation):
        responses.setdefault(str(status), error_response(status, TEXTS[status]))
    if _idempotent(operation):
        responses.setdefault("409", copy.deepcopy(IN_PROGRESS_RESPONSE))
        responses["422"]["description"] += KEY_ERRORS
    for status, headers in HEADERS.items():  # a route's own wording lacks them
        if str(status) in responses:
            responses[str(status)].setdefault("headers", headers)
    if "422" in responses:  # every 422 lists its fields: a route's own wording too
        responses["422"]["content"] = {"application/json": {"schema": {"$ref": VALIDATION_ERROR}}}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("HTTPError", error_schema(title="HTTPError"))
    validation = error_schema(title="ValidationError", errors_required=True)
    schemas.setdefault("ValidationError", validation)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                _document_operation(path, operation)
    return spec
