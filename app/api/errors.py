"""One JSON error shape for every failure: `{code, message, description, errors?}`."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import g, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from app.extensions import token_auth
from app.services import errors as domain

log = logging.getLogger(__name__)

DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.UnreadableInput: 400,
    domain.AuthenticationFailed: 401,
    domain.PermissionDenied: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.PreconditionFailed: 412,
    domain.InvalidInput: 422,
    domain.ServiceUnavailable: 503,
}

GENERIC_DESCRIPTIONS = {
    401: "Authentication is required: send a valid bearer access token.",
    403: "You do not have permission to do this.",
    422: "The request is well-formed but some fields are invalid; see `errors`.",
}


def error_body(
    status: int, description: str, errors: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": status,
        "message": HTTP_STATUS_CODES.get(status, "Error"),
        "description": description,
    }
    if errors:
        body["errors"] = errors
    return body


def _from_http_error(error: HTTPError) -> tuple[dict[str, Any], int, Any]:
    status = error.status_code
    errors = error.detail if isinstance(error.detail, dict) and error.detail else None
    if status == 401 and g.get("auth_failure"):
        description = g.auth_failure
    elif error.message and error.message != HTTP_STATUS_CODES.get(status):
        description = error.message
    else:
        description = GENERIC_DESCRIPTIONS.get(status, HTTP_STATUS_CODES.get(status, "Error"))
    headers = dict(error.headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="api"')
    return error_body(status, description, errors), status, headers


def _from_werkzeug(exc: HTTPException) -> tuple[dict[str, Any], int, Any]:
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    description = exc.description or HTTP_STATUS_CODES.get(status, "Error")
    return error_body(status, description), status, headers


def _from_domain(exc: domain.DomainError) -> tuple[dict[str, Any], int, Any]:
    status = DOMAIN_STATUS.get(type(exc), 400)
    errors = {exc.location: exc.errors} if exc.errors else None
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if status == 401 else {}
    return error_body(status, exc.message, errors), status, headers


def _unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
    # Never leak a stack trace to the client; the log has it.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_body(500, InternalServerError.description), 500


def register_error_handlers(app: APIFlask) -> None:
    app.error_processor(_from_http_error)
    token_auth.error_processor(_from_http_error)
    # Replace APIFlask's werkzeug handler: it drops the exception's description.
    app.register_error_handler(HTTPException, _from_werkzeug)
    for exc_type in DOMAIN_STATUS:
        app.register_error_handler(exc_type, _from_domain)
    app.register_error_handler(Exception, _unexpected)
