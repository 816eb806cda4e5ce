"""The `Idempotency-Key` header on a write: a retried request is answered, not done, again.

`@idempotent(bp)` goes between a view's body `input` and its `output`: the body is validated
first (an invalid request claims nothing), and the answer it sees is the final response, whose
status, body and Location are what a retry gets back. The rules are in
app.services.idempotency; here the request is fingerprinted and the answer recorded or replayed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from functools import wraps
from typing import IO, Annotated, Any

from apiflask import APIBlueprint
from flask import Response, current_app, request
from pydantic import BaseModel, Field, WithJsonSchema, field_validator, model_validator

from app.api.current_user import current_user
from app.api.errors import database_unavailable
from app.models.types import utcnow
from app.services import idempotency
from app.services.idempotency import (
    IDEMPOTENCY_KEY_TTL,
    IN_PROGRESS_TAKEOVER_AFTER,
    Claim,
    StoredAnswer,
)

View = Callable[..., Any]

REPLAYED_HEADER = "Idempotent-Replayed"
ARG_NAME = "idempotency"
MAX_KEY_LENGTH = 255
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
FILE_CHUNK_BYTES = 1 << 16
BAD_KEY = f"must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces), e.g. a UUID"

HEADER_DOC = (
    "Makes the request safe to retry. A retry with the same key and the same request (body, or "
    f"file and form fields) within {IDEMPOTENCY_KEY_TTL.total_seconds() / 3600:g} hours is not "
    "done again: it gets the first answer (status, body, Location) with "
    f"`{REPLAYED_HEADER}: true`. The same key with another body or on another endpoint: 422. "
    "While the first request with the key is still being answered, a retry does not wait: it "
    "gets 409 with `Retry-After`, and retrying then gets the answer. Only successful (2xx) "
    "answers are kept: after an error the key may be used again. A key whose request never "
    "finished (the server died) is freed for a retry after "
    f"{IN_PROGRESS_TAKEOVER_AFTER.total_seconds():g} seconds. Keys are per user; without the "
    "header the request is done every time."
)
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]+$"}

# The answers the header adds, documented on every operation that takes it (app.api.spec.errors).
IN_PROGRESS_RESPONSE: Any = {
    "description": "A request with the same Idempotency-Key is still in progress",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}},
    "headers": {
        "Retry-After": {
            "description": "Seconds after which a retry gets the answer",
            "schema": {"type": "integer"},
        }
    },
}
KEY_ERRORS = "; or an Idempotency-Key that is malformed or was used with another request"


def _without_default(schema: dict[str, Any]) -> None:
    # Optional, not nullable: an absent header has no value to document.
    schema.pop("default", None)


class IdempotencyKeyHeader(BaseModel):
    """The optional header, read by APIFlask from the request's headers and documented as an
    OpenAPI header parameter (by its alias, the header's name)."""

    idempotency_key: Annotated[str | None, WithJsonSchema(KEY_SCHEMA)] = Field(
        default=None,
        alias="Idempotency-Key",
        description=HEADER_DOC,
        json_schema_extra=_without_default,
    )

    @model_validator(mode="before")
    @classmethod
    def _as_sent(cls, headers: Any) -> Any:
        # APIFlask names headers in snake case (X-Token: x_token); errors name the header as
        # it is sent, like the 422 of a key used with another request.
        if isinstance(headers, dict) and "idempotency_key" in headers:
            headers = {**headers, "Idempotency-Key": headers["idempotency_key"]}
        return headers

    @field_validator("idempotency_key")
    @classmethod
    def _visible_ascii(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > MAX_KEY_LENGTH or not VISIBLE_ASCII.fullmatch(value)
        ):
            raise ValueError(BAD_KEY)
        return value


def idempotent(bp: APIBlueprint) -> Callable[[View], View]:
    """Honour an `Idempotency-Key` on the view; without one, the view runs as it would."""

    def decorator(view: View) -> View:
        @wraps(view)
        def answer(*args: Any, **kwargs: Any) -> Any:
            key = kwargs.pop(ARG_NAME).idempotency_key
            if key is None:
                return view(*args, **kwargs)
            return _answer_once(key, lambda: view(*args, **kwargs))

        read_header = bp.input(IdempotencyKeyHeader, location="headers", arg_name=ARG_NAME)
        return read_header(answer)

    return decorator


def _answer_once(key: str, work: Callable[[], Any]) -> Response:
    """The stored answer to this request; or the work's, kept if it succeeded."""
    outcome = idempotency.claim_or_replay(current_user().id, key, request_fingerprint(), utcnow())
    if isinstance(outcome, StoredAnswer):
        return _replay(outcome)
    try:
        response = current_app.make_response(work())
    except Exception as exc:
        # With the database gone the release would fail too: the claim is taken over later.
        if not database_unavailable(exc):
            idempotency.release(outcome)
        raise
    _settle(outcome, response)
    return response


def _settle(claim: Claim, response: Response) -> None:
    if 200 <= response.status_code < 300:
        body = response.get_data(as_text=True)
        stored = StoredAnswer(response.status_code, body, response.headers.get("Location"))
        idempotency.remember(claim, stored)
    else:
        idempotency.release(claim)


def _replay(answer: StoredAnswer) -> Response:
    response = current_app.response_class(
        answer.body, status=answer.status, mimetype="application/json"
    )
    if answer.location is not None:
        response.headers["Location"] = answer.location
    response.headers[REPLAYED_HEADER] = "true"
    return response


def request_fingerprint() -> str:
    """SHA-256 (hex) of what makes two requests the same: method, path and content. A JSON
    body counts as parsed (keys sorted), so spacing and key order do not matter; a multipart
    upload as its form fields and its files' bytes, not as the raw body, whose boundary changes
    with every send."""
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    if request.mimetype == "multipart/form-data":
        digest.update(json.dumps(sorted(request.form.items(multi=True))).encode())
        for name, upload in sorted(request.files.items(multi=True), key=lambda item: item[0]):
            digest.update(f"\nfile {json.dumps(name)} {_file_sha256(upload.stream)}".encode())
    else:
        body = request.get_json()
        digest.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()


def _file_sha256(stream: IO[bytes]) -> str:
    """The file's SHA-256, its stream put back where it was for the view to read."""
    start = stream.tell()
    file_hash = hashlib.sha256()
    for chunk in iter(lambda: stream.read(FILE_CHUNK_BYTES), b""):
        file_hash.update(chunk)
    stream.seek(start)
    return file_hash.hexdigest()
