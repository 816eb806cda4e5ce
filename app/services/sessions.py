"""Login sessions: token pairs, rotation with reuse detection, logout, access-token checks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.auth import tokens
from app.cache.store import auth_generation
from app.extensions import db
from app.models import RefreshToken, Role, TokenFamily, User
from app.models.types import utcnow
from app.repositories import tokens as token_repo
from app.repositories import users as user_repo
from app.services.context import (
    passwords,
    response_cache,
    session_memory,
    settings,
    verified_tokens,
)
from app.services.errors import AuthenticationFailed, PermissionDenied

INVALID_CREDENTIALS = "invalid username or password"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 (the scheme name, not a secret)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request: an `Actor` (account id and current role) and the
    session (token family) the access token belongs to."""

    id: int
    role: Role
    family_id: str


def _issue_pair(user: User, family_id: str, now: datetime) -> TokenPair:
    s = settings()
    access = tokens.issue_access_token(
        secret=s.jwt_secret_key,
        issuer=s.jwt_issuer,
        user_id=user.id,
        role=user.role.value,
        family_id=family_id,
        now=now,
        ttl=timedelta(seconds=s.access_token_ttl_seconds),
    )
    refresh = tokens.new_refresh_token()
    token_repo.add_refresh_token(
        RefreshToken(
            token_hash=tokens.hash_refresh_token(refresh),
            family_id=family_id,
            user_id=user.id,
            created_at=now,
            expires_at=now + timedelta(seconds=s.refresh_token_ttl_seconds),
        )
    )
    return TokenPair(
        access_token=access, refresh_token=refresh, expires_in=s.access_token_ttl_seconds
    )


def login(username: str, password: str) -> TokenPair:
    """Start a session. Unknown users and wrong passwords get the same answer in the same time
    (a dummy hash is verified for unknown users)."""
    user = user_repo.get_user_by_username(username)
    pw = passwords()
    if not pw.verify(user.password_hash if user else None, password) or user is None:
        raise AuthenticationFailed(INVALID_CREDENTIALS)
    if not user.is_active:
        raise PermissionDenied("this account is disabled")
    now = utcnow()
    if user.password_hash and pw.needs_rehash(user.password_hash):
        user.password_hash = pw.hash(password)
    user.last_login_at = now
    family_id = tokens.new_family_id()
    token_repo.add_family(TokenFamily(id=family_id, user_id=user.id, created_at=now))
    db.session.flush()
    pair = _issue_pair(user, family_id, now)
    db.session.commit()
    return pair


def refresh(refresh_token: str) -> TokenPair:
    """Spend a refresh token for a new pair in the same family. Presenting a spent token again
    means it leaked: the whole family (and its access tokens) is revoked."""
    now = utcnow()
    stored = token_repo.get_refresh_token(tokens.hash_refresh_token(refresh_token))
    if stored is None:
        raise AuthenticationFailed("invalid refresh token")
    family = token_repo.get_family(stored.family_id)
    if family is None or family.revoked_at is not None:
        raise AuthenticationFailed("refresh token revoked")
    if stored.used_at is not None or not token_repo.spend_refresh_token(stored.id, now):
        token_repo.revoke_family(stored.family_id, stored.user_id, now, "reuse_detected")
        db.session.commit()
        raise AuthenticationFailed("refresh token already used; the session has been revoked")
    if stored.expires_at <= now:
        db.session.commit()
        raise AuthenticationFailed("refresh token expired")
    user = user_repo.get_user(stored.user_id)
    if user is None or not user.is_active:
        token_repo.revoke_family(stored.family_id, stored.user_id, now, "deactivated")
        db.session.commit()
        raise AuthenticationFailed("account is disabled")
    pair = _issue_pair(user, stored.family_id, now)
    db.session.commit()
    return pair


def logout(principal: Principal) -> None:
    """Revoke the caller's session: its refresh tokens and every access token of its family."""
    token_repo.revoke_family(principal.family_id, principal.id, utcnow(), "logout")
    db.session.commit()


def decode_access_token(raw_token: str) -> tokens.AccessClaims:
    """The claims of a well-formed, correctly signed, current access token (no query), or
    AuthenticationFailed with the reason."""
    memory = verified_tokens()
    claims = memory.recall(raw_token, time.time())
    if claims is not None:
        return claims
    s = settings()
    try:
        claims = tokens.decode_access_token(raw_token, secret=s.jwt_secret_key, issuer=s.jwt_issuer)
    except tokens.InvalidToken as exc:
        raise AuthenticationFailed(exc.reason) from exc
    memory.remember(raw_token, claims)
    return claims


def session_counters(user_id: int) -> list[str]:
    """The counters (besides the global one) guarding what is remembered of a user's sessions."""
    return [auth_generation(user_id)]


def remembered_role(claims: tokens.AccessClaims) -> Role | None:
    """The role this process last verified for the token's session, whether or not that is
    still true: a guess to plan reads with, never a decision."""
    memory = session_memory()
    return memory.last_role(claims.user_id, claims.family_id) if memory else None


def confirm_session(
    claims: tokens.AccessClaims, counters: Sequence[bytes] | None = None
) -> Principal:
    """The caller behind verified claims if their session is live and the account active, or
    AuthenticationFailed.

    The answer comes from the database, or from this process's memory of it while the counters
    guarding it are unchanged and the memory recent (app.auth.session_memory): a hot read then
    needs no query. `counters` are the values of the global counter and `session_counters`, if
    the caller has read them already (along with other things, in one round trip)."""
    cache = response_cache()
    memory = session_memory()
    if memory is not None and cache is not None and counters is None:
        # Read before the database is asked, so a change committed meanwhile moves them on.
        counters = cache.counters(session_counters(claims.user_id))
    if memory is not None and counters is not None:
        role = memory.recall(claims.user_id, claims.family_id, counters)
        if role is not None:
            return Principal(id=claims.user_id, role=role, family_id=claims.family_id)
    # Taken before the database is asked (its answer is as of this moment or later: each
    # statement reads what was committed when it starts): a revocation committed just after
    # must find the memory's trust run out `TRUST_SECONDS` after this moment at the latest.
    asked_at = time.monotonic()
    user = token_repo.get_user_with_live_family(claims.user_id, claims.family_id)
    if user is None:
        raise AuthenticationFailed("token revoked")
    if not user.is_active:
        raise AuthenticationFailed("account is disabled")
    if memory is not None and counters is not None:
        memory.remember(user.id, claims.family_id, counters, user.role, asked_at)
    return Principal(id=user.id, role=user.role, family_id=claims.family_id)
