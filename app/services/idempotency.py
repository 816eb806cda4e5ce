"""Idempotency keys: a write retried with the same key is answered once.

A request with a key claims it (an INSERT committed before the work starts), does the work, and
stores its answer on the claim. A retry of the same request gets the stored answer; the same
key with another request is refused. While the first request is working, a retry is told to
come back (409 with Retry-After) rather than held waiting: a slow import would otherwise hold a
server thread and a database connection per retry.

Keys are per user and last `IDEMPOTENCY_KEY_TTL`; an expired key is as good as absent. Only
successful answers are kept: a claim whose work failed is released, so the client may retry
with the same key. A claim left by a request that died (the process was killed mid-request) is
taken over by a retry after `IN_PROGRESS_TAKEOVER_AFTER`.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.models import IdempotencyKey
from app.repositories import idempotency as key_repo
from app.services.errors import InvalidInput, RequestInProgress

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
# Longer than any request may run (the CSV upload's synchronous import is the slowest): a claim
# still unanswered after this is taken to be abandoned, and a retry does the work again.
IN_PROGRESS_TAKEOVER_AFTER = timedelta(seconds=60)
RETRY_AFTER_SECONDS = 1
# Each attempt loses only to a request that claimed, released or replaced the key meanwhile.
CLAIM_ATTEMPTS = 3

KEY_FIELD = "Idempotency-Key"
KEY_REUSED = (
    "this Idempotency-Key was already used with a different request (another body or "
    "endpoint); use a new key for a new request"
)
STILL_IN_PROGRESS = (
    "a request with this Idempotency-Key is still in progress; retry after Retry-After seconds "
    "to get its answer"
)


@dataclass(frozen=True)
class Claim:
    """The key is this request's: do the work, then `remember` its answer or `release` it."""

    key_id: int


@dataclass(frozen=True)
class StoredAnswer:
    """A successful answer, as sent the first time."""

    status: int
    body: str
    location: str | None


def claim_or_replay(
    user_id: int, key: str, fingerprint: str, now: datetime
) -> Claim | StoredAnswer:
    """Claim `key` for the request `fingerprint` (committed before the work starts), or return
    the answer stored for it. Raises InvalidInput if the key belongs to another request,
    RequestInProgress while the request that claimed it is still working."""
    for _attempt in range(CLAIM_ATTEMPTS):
        claimed = key_repo.insert_claim(user_id, key, fingerprint, now, now + IDEMPOTENCY_KEY_TTL)
        if claimed is not None:
            db.session.commit()
            return Claim(claimed)
        row = key_repo.find(user_id, key)
        if row is not None and _replaceable(row, fingerprint, now):
            key_repo.delete_if_stale(row.id, now, now - IN_PROGRESS_TAKEOVER_AFTER)
            row = None
        # Ends the transaction (on SQLite, the write lock the INSERT took) before answering.
        db.session.commit()
        if row is None:  # released, expired or abandoned: claim it afresh
            continue
        if row.fingerprint != fingerprint:
            raise InvalidInput(KEY_REUSED, errors={KEY_FIELD: [KEY_REUSED]}, location="headers")
        if row.response_status is None:
            raise RequestInProgress(STILL_IN_PROGRESS, RETRY_AFTER_SECONDS)
        return StoredAnswer(row.response_status, row.response_body or "", row.response_location)
    raise RequestInProgress(STILL_IN_PROGRESS, RETRY_AFTER_SECONDS)


def _replaceable(row: IdempotencyKey, fingerprint: str, now: datetime) -> bool:
    """Expired (whatever it was for), or claimed by this same request long ago and never
    answered: its request died."""
    if row.expires_at <= now:
        return True
    abandoned = row.created_at <= now - IN_PROGRESS_TAKEOVER_AFTER
    return row.fingerprint == fingerprint and row.response_status is None and abandoned


def remember(claim: Claim, answer: StoredAnswer) -> None:
    """Store the answer of the claimed request's successful work, for its retries. The work is
    done and committed by now: if storing fails, the answer is still sent (the key stays in
    progress until a retry takes it over)."""
    try:
        if not key_repo.store_answer(claim.key_id, answer.status, answer.body, answer.location):
            log.warning("idempotency key %s was taken over before its answer", claim.key_id)
        db.session.commit()
    except SQLAlchemyError:
        log.warning("the answer to idempotency key %s was not stored", claim.key_id, exc_info=True)
        _discard_transaction()


def release(claim: Claim) -> None:
    """The claimed request's work failed: forget the key, so that a retry does the work."""
    try:
        db.session.rollback()  # whatever the failed work left uncommitted
        key_repo.delete_claim(claim.key_id)
        db.session.commit()
    except SQLAlchemyError:
        log.warning("idempotency key %s was not released", claim.key_id, exc_info=True)
        _discard_transaction()


def _discard_transaction() -> None:
    with suppress(SQLAlchemyError):
        db.session.rollback()


def purge_expired_idempotency_keys(now: datetime) -> int:
    """Delete the keys expired at `now`; how many. (Expired keys are ignored anyway: this only
    keeps the table small.)"""
    purged = key_repo.delete_expired(now)
    db.session.commit()
    return purged
