"""Bearer-token authentication hooked into APIFlask's `auth_required`."""

from __future__ import annotations

from typing import cast

from flask import g

from app.api.caching import read_cached_answer_with_session
from app.extensions import token_auth
from app.models import User
from app.repositories import users as user_repo
from app.services import sessions
from app.services.errors import AuthenticationFailed


def _verify_token(token: str) -> sessions.Principal | None:
    if not token:
        g.auth_failure = "missing bearer token"
        return None
    try:
        claims = sessions.decode_access_token(token)
        return sessions.confirm_session(claims, read_cached_answer_with_session(claims))
    except AuthenticationFailed as exc:
        g.auth_failure = exc.message  # shown in the 401 body by the error processor
        return None


def _roles(principal: sessions.Principal) -> list[str]:
    # The role is the session's current one, not the token's: a demotion takes effect at once.
    return [principal.role.value]


# Registered by call, not as decorators: Flask-HTTPAuth's decorators are untyped.
token_auth.verify_token(_verify_token)
token_auth.get_user_roles(_roles)


def current_principal() -> sessions.Principal:
    return cast(sessions.Principal, token_auth.current_user)


def current_user() -> sessions.Principal:
    """The caller as the services see it (an `Actor`: id and current role); no query."""
    return current_principal()


def current_account() -> User:
    """The caller's account row, for the endpoints that show or change the account itself."""
    user = user_repo.get_user(current_principal().id)
    if user is None:  # deleted since the session was verified
        raise AuthenticationFailed("account no longer exists")
    return user
