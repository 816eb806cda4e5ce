"""Statements on idempotency keys: claim, read, answer, release and purge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.models import IdempotencyKey


def _dialect() -> Any:
    return postgresql if db.engine.dialect.name == "postgresql" else sqlite


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def insert_claim(
    user_id: int, key: str, fingerprint: str, now: datetime, expires_at: datetime
) -> int | None:
    """A new in-progress row for (user, key); its id, or None if the user holds the key already
    (the unique constraint decides between concurrent requests, on both backends)."""
    stmt = (
        _dialect()
        .insert(IdempotencyKey)
        .values(
            user_id=user_id,
            key=key,
            fingerprint=fingerprint,
            created_at=now,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(IdempotencyKey.id)
    )
    claimed: int | None = db.session.scalar(stmt)
    return claimed


def find(user_id: int, key: str) -> IdempotencyKey | None:
    """The user's row for `key` as it is now, detached: a snapshot that ending the transaction
    does not expire (and that a later read does not return instead of the row's new state)."""
    row = db.session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
    )
    if row is not None:
        db.session.expunge(row)
    return row


def delete_if_stale(key_id: int, now: datetime, abandoned_before: datetime) -> bool:
    """Delete the row if it expired, or is still in progress since before `abandoned_before`;
    False if it changed meanwhile (answered, or taken over by another request)."""
    stale = or_(
        IdempotencyKey.expires_at <= now,
        and_(
            IdempotencyKey.response_status.is_(None),
            IdempotencyKey.created_at <= abandoned_before,
        ),
    )
    result = db.session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.id == key_id, stale)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def store_answer(key_id: int, status: int, body: str, location: str | None) -> bool:
    """Record the answer on the claimed row; False if the row is no longer this claim's (it was
    taken over as abandoned, and deleted)."""
    result = db.session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == key_id, IdempotencyKey.response_status.is_(None))
        .values(response_status=status, response_body=body, response_location=location)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


def delete_claim(key_id: int) -> None:
    """Release an unanswered claim (an answered row is never released)."""
    db.session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.id == key_id, IdempotencyKey.response_status.is_(None))
        .execution_options(synchronize_session=False)
    )


def delete_expired(now: datetime) -> int:
    """Delete every row expired at `now` (on the expires_at index); how many went."""
    result = db.session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.expires_at <= now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)
