"""Writes answered in front of Flask (by app.api.hot_paths) for callers it remembers: the
hot `PUT /task/<id>` without Flask's request, hooks and dispatch.

A view offers it with `@direct_write(handler)`: `handler(actor, body, if_match, **view_args)`
gets the parsed JSON body and the `If-Match` tags, and returns what the view answers with status
200 (its serialised output and headers). For any other answer it raises: pydantic's
ValidationError for a body the view's input model refuses, a DomainError for what the service
refuses (404, 409, 412...). Nothing is committed then, and Flask answers the request from the
start, with its own validation and error handling, so every answer other than 200 is Flask's.
The same holds for a request this path does not take: no JSON content type, no or too long a
body, a body that is not JSON.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask
from pydantic import ValidationError
from werkzeug.http import parse_options_header

from app.extensions import db
from app.services.actor import Actor
from app.services.errors import DomainError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

# handler(actor, body, if_match, **view_args) -> (the view's 200 output, its headers)
DirectWrite = Callable[..., tuple[Any, dict[str, str]]]
DIRECT_WRITE = "direct_write"  # attribute of a view: its `handler`


def direct_write(handler: DirectWrite) -> Callable[[Any], Any]:
    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, DIRECT_WRITE, handler)
        return view

    return decorator


def json_body(environ: WSGIEnvironment, max_bytes: int | None) -> bytes | None:
    """The request's body, if it is declared JSON with a length within `max_bytes`; None
    otherwise. Whatever is read is put back for Flask (`wsgi.input`)."""
    mimetype, _ = parse_options_header(environ.get("CONTENT_TYPE", ""))
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if mimetype != "application/json" or length <= 0 or (max_bytes and length > max_bytes):
        return None
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", ""):
        return None
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body if len(body) == length else None


def direct_write_of(view: Callable[..., Any]) -> DirectWrite | None:
    """The view's direct write, if it offers one (`direct_write`)."""
    handler: DirectWrite | None = getattr(view, DIRECT_WRITE, None)
    return handler


def written_answer(
    app: Flask,
    handler: DirectWrite,
    actor: Actor,
    view_args: dict[str, Any],
    body: bytes,
    if_match: set[str] | None,
) -> tuple[Any, dict[str, str]] | None:
    """Run a view's direct write (`direct_write_of`) in an app context; None when Flask must
    answer instead (nothing committed)."""
    try:
        parsed = app.json.loads(body)
    except (ValueError, RecursionError):
        return None  # Flask answers 400
    with app.app_context():
        try:
            return handler(actor, {} if parsed is None else parsed, if_match, **view_args)
        except (ValidationError, DomainError):
            db.session.rollback()
            return None
