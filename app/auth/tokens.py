"""Access tokens (HS256 JWTs) and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cachetools import LRUCache

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "role", "jti", "fid", "exp", "iat", "nbf", "iss", "typ"]
# A user id as issued: ASCII digits (str.isdigit() also takes superscripts and other scripts'
# digits), no leading zero, within the 32-bit INTEGER range of users.id (a larger value is a
# database error on PostgreSQL and an OverflowError on SQLite).
_SUBJECT = re.compile(r"[1-9][0-9]{0,9}")
MAX_USER_ID = 2**31 - 1


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    role: str
    jti: str
    family_id: str
    valid_from: float = 0.0  # Unix time: the later of iat and nbf
    expires_at: float = float("inf")  # Unix time (exp)


class InvalidToken(Exception):
    """The token is malformed, badly signed, expired, not yet valid or missing a claim."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def issue_access_token(
    *,
    secret: str,
    issuer: str,
    user_id: int,
    role: str,
    family_id: str,
    now: datetime,
    ttl: timedelta,
) -> str:
    claims: dict[str, Any] = {
        "sub": str(user_id),  # PyJWT >= 2.10 requires a string subject
        "role": role,
        "jti": uuid.uuid4().hex,
        "fid": family_id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "iss": issuer,
        "typ": "access",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str, issuer: str) -> AccessClaims:
    """Verify signature, algorithm (HS256 only: `none` and RS/HS confusion are refused), expiry,
    not-before, issuer and the presence of every claim."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise InvalidToken("token not yet valid") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid token") from exc
    sub = claims["sub"]
    if claims["typ"] != "access" or not isinstance(sub, str) or not _SUBJECT.fullmatch(sub):
        raise InvalidToken("invalid token")
    if int(sub) > MAX_USER_ID:
        raise InvalidToken("invalid token")
    return AccessClaims(
        user_id=int(sub),
        role=str(claims["role"]),
        jti=str(claims["jti"]),
        family_id=str(claims["fid"]),
        valid_from=max(float(claims["iat"]), float(claims["nbf"])),
        expires_at=float(claims["exp"]),
    )


class VerifiedTokens:
    """The claims of access tokens this process has verified, by the exact token text: a token
    presented again is neither parsed nor its signature recomputed, only its validity window is
    checked again (as PyJWT does, with no leeway). Bounded; thread-safe."""

    def __init__(self, max_entries: int) -> None:
        self._claims: LRUCache[str, AccessClaims] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    def recall(self, token: str, now: float) -> AccessClaims | None:
        with self._lock:
            claims = self._claims.get(token)
        if claims is None or not claims.valid_from <= now < claims.expires_at:
            return None
        return claims

    def remember(self, token: str, claims: AccessClaims) -> None:
        with self._lock:
            self._claims[token] = claims


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_family_id() -> str:
    return str(uuid.uuid4())
