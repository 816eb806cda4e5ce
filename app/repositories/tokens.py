"""Persistence of token families and refresh tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from app.cache.invalidation import SESSIONS_OF_USER
from app.extensions import db
from app.models import RefreshToken, TokenFamily, User


def add_family(family: TokenFamily) -> None:
    db.session.add(family)


def add_refresh_token(token: RefreshToken) -> None:
    db.session.add(token)


def get_refresh_token(token_hash: str) -> RefreshToken | None:
    return db.session.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash))


def get_family(family_id: str) -> TokenFamily | None:
    return db.session.get(TokenFamily, family_id)


def spend_refresh_token(token_id: int, now: datetime) -> bool:
    """Mark a refresh token used, atomically: False if another request spent it first."""
    result = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def revoke_family(family_id: str, user_id: int, now: datetime, reason: str) -> None:
    """Revoke one session of `user_id` (named so that its sessions' memory is invalidated)."""
    db.session.execute(
        update(TokenFamily)
        .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
        .execution_options(synchronize_session=False, **{SESSIONS_OF_USER: user_id})
    )


def revoke_user_families(user_id: int, now: datetime, reason: str, keep: str | None = None) -> None:
    stmt = update(TokenFamily).where(
        TokenFamily.user_id == user_id, TokenFamily.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(TokenFamily.id != keep)
    db.session.execute(
        stmt.values(revoked_at=now, revoked_reason=reason).execution_options(
            synchronize_session=False, **{SESSIONS_OF_USER: user_id}
        )
    )


def get_user_with_live_family(user_id: int, family_id: str) -> User | None:
    """The token's user if its family exists for that user and is not revoked: one query per
    authenticated request."""
    return db.session.scalar(
        select(User)
        .join(TokenFamily, TokenFamily.user_id == User.id)
        .where(User.id == user_id, TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
    )
