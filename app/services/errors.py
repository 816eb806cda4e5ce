"""Domain errors raised by services; `app.api.errors` maps each to one HTTP status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: a message for the client and optional per-field details."""

    def __init__(
        self, message: str, errors: dict[str, Any] | None = None, location: str = "json"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.location = location  # where the fields in `errors` are: json, query, file...


class UnreadableInput(DomainError):
    """The input cannot be read at all: not the format it claims, or not decodable (400)."""


class AuthenticationFailed(DomainError):
    """Credentials or token missing, wrong, expired or revoked (401)."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this (403)."""


class NotFound(DomainError):
    """The object does not exist or is not visible to the caller (404)."""


class Conflict(DomainError):
    """The request contradicts the current state, e.g. a taken username (409)."""


class PreconditionFailed(DomainError):
    """An `If-Match` precondition does not hold: the object changed since it was read (412)."""


class InvalidInput(DomainError):
    """Well-formed input that breaks a business rule, reported per field (422)."""


class ServiceUnavailable(DomainError):
    """A dependency (database, broker) is down; the client may retry later (503)."""


class RequestInProgress(Conflict):
    """Another request with the same `Idempotency-Key` is still being answered (409): the client
    retries after `retry_after_seconds` and gets its answer."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
