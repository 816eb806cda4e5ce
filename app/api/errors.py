"""One JSON error shape for every failure: `{code, message, description, errors?}`."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from apiflask import APIFlask, HTTPError
from flask import g, request
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound
from werkzeug.http import HTTP_STATUS_CODES

from app.api.not_found import resource_not_found
from app.extensions import db, token_auth
from app.services import errors as domain

log = logging.getLogger(__name__)

DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.UnreadableInput: 400,
    domain.AuthenticationFailed: 401,
    domain.PermissionDenied: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.RequestInProgress: 409,
    domain.PreconditionFailed: 412,
    domain.InvalidInput: 422,
    domain.ServiceUnavailable: 503,
}

MAX_FIELD_ERRORS = 100

GENERIC_DESCRIPTIONS = {
    401: "Authentication is required: send a valid bearer access token.",
    403: "You do not have permission to do this.",
    422: "The request is well-formed but some fields are invalid; see `errors`.",
}

# Database unreachable (down, restarting, connection lost, pool exhausted, statement timed out):
# a 503 the client may retry, not a 500.
DATABASE_RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE = (
    "The database is unavailable or did not answer in time; the request was not completed. "
    "Retry later."
)


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


def _capped(errors: dict[str, Any]) -> dict[str, Any]:
    """At most MAX_FIELD_ERRORS fields per location: a body of 60,000 unknown keys must not get an
    answer of 60,000 messages (megabytes, several times the request)."""
    return {
        location: dict(list(fields.items())[:MAX_FIELD_ERRORS])
        if isinstance(fields, dict)
        else fields
        for location, fields in errors.items()
    }


def _from_http_error(error: HTTPError) -> tuple[dict[str, Any], int, Any]:
    status = error.status_code
    errors = _capped(error.detail) if isinstance(error.detail, dict) and error.detail else None
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
    # An exception outside the view (an after_request hook) reaches here as a 500 wrapping it.
    original = getattr(exc, "original_exception", None)
    if isinstance(original, Exception) and database_unavailable(original):
        return _from_database(original)
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    description = exc.description or HTTP_STATUS_CODES.get(status, "Error")
    if isinstance(exc, NotFound) and request.url_rule is None:
        # Routing found no rule: on a resource's path (a malformed id), the resource's own 404.
        description = resource_not_found(request.path) or description
    return error_body(status, description), status, headers


def _from_domain(exc: domain.DomainError) -> tuple[dict[str, Any], int, Any]:
    status = DOMAIN_STATUS.get(type(exc), 400)
    errors = {exc.location: exc.errors} if exc.errors else None
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if status == 401 else {}
    if isinstance(exc, domain.RequestInProgress):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return error_body(status, exc.message, errors), status, headers


def _unexpected(exc: Exception) -> tuple[dict[str, Any], int]:
    # Never leak a stack trace to the client; the log has it.
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_body(500, InternalServerError.description), 500


def database_unavailable(exc: Exception) -> bool:
    """A failure to reach the database, as opposed to a bug in a statement."""
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def _discard_transaction() -> None:
    """Roll back without anything querying the dead database again: loaded objects are detached
    first, so nothing expires and reloads them (the request log reads the user's id from the
    identity key, not from a query)."""
    session = db.session
    session.expunge_all()
    # The connection may be gone: the session is closed at teardown anyway.
    with contextlib.suppress(sa_exc.SQLAlchemyError):
        session.rollback()


def _from_database(exc: Exception) -> tuple[dict[str, Any], int, Any]:
    if not database_unavailable(exc):
        return (*_unexpected(exc), {})
    _discard_transaction()
    cause = getattr(exc, "orig", None) or exc
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    # One line per request, no stack trace: an outage would otherwise flood the log.
    log.warning(
        "database unavailable on %s %s: %s: %s",
        request.method,
        request.path,
        type(cause).__name__,
        reason,
    )
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
    return error_body(503, DATABASE_UNAVAILABLE), 503, headers


def register_error_handlers(app: APIFlask) -> None:
    app.error_processor(_from_http_error)
    token_auth.error_processor(_from_http_error)
    # Replace APIFlask's werkzeug handler: it drops the exception's description.
    app.register_error_handler(HTTPException, _from_werkzeug)
    for exc_type in DOMAIN_STATUS:
        app.register_error_handler(exc_type, _from_domain)
    # Before the catch-all: Flask picks the handler of the nearest class in the exception's MRO.
    app.register_error_handler(sa_exc.DBAPIError, _from_database)
    app.register_error_handler(sa_exc.TimeoutError, _from_database)
    app.register_error_handler(Exception, _unexpected)
    # Runs before Flask-SQLAlchemy's own teardown (registered earlier; teardowns run in reverse).
    app.teardown_appcontext(_close_session)


def _close_session(_exc: BaseException | None) -> None:
    """End the request's session; a connection found dead here (the database went away after the
    request's last statement) is discarded with a warning instead of failing the response."""
    try:
        db.session.remove()
    except sa_exc.SQLAlchemyError as error:
        log.warning("database connection lost at the end of a request: %s", type(error).__name__)
        try:
            db.session.remove()  # the connection is invalidated by now: this only discards it
        except sa_exc.SQLAlchemyError:
            db.session.registry.clear()
