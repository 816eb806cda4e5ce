"""Bearer-token authentication hooked into APIFlask's `auth_required`."""

from __future__ import annotations

from typing import cast

from flask import g

from app.extensions import token_auth
from app.models import User
from app.services import sessions
from app.services.errors import AuthenticationFailed


def _verify_token(token: str) -> sessions.Principal | None:
    if not token:
        g.auth_failure = "missing bearer token"
        return None
    try:
        return sessions.authenticate_access_token(token)
    except AuthenticationFailed as exc:
        g.auth_failure = exc.message  # shown in the 401 body by the error processor
        return None


def _roles(principal: sessions.Principal) -> list[str]:
    # The role comes from the database, not the token: a demotion takes effect at once.
    return [principal.user.role.value]


# Registered by call, not as decorators: Flask-HTTPAuth's decorators are untyped.
token_auth.verify_token(_verify_token)
token_auth.get_user_roles(_roles)


def current_principal() -> sessions.Principal:
    return cast(sessions.Principal, token_auth.current_user)


def current_user() -> User:
    return current_principal().user
