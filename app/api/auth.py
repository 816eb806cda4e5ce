"""Accounts and sessions: register, login, refresh, logout, me."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.api.current_user import current_account, current_principal
from app.api.rate_limits import auth_limit, client_ip, limiter, submitted_username
from app.extensions import token_auth
from app.schemas.users import LoginIn, MeUpdateIn, RefreshIn, RegisterIn, TokenPairOut, UserOut
from app.services import accounts, sessions

bp = APIBlueprint("auth", __name__, tag={"name": "Auth", "description": "Accounts and sessions"})


@bp.post("/register")
@limiter.limit(auth_limit, key_func=client_ip)
@limiter.limit(auth_limit, key_func=submitted_username)
@bp.input(RegisterIn, arg_name="body")
@bp.output(UserOut, status_code=201, description="The new account (role `user`)")
@bp.doc(summary="Create an account", responses=[400, 409, 422])
def register(body: RegisterIn) -> Any:
    return accounts.register_user(body.username, str(body.email), body.password)


@bp.post("/login")
@limiter.limit(auth_limit, key_func=client_ip)
@limiter.limit(auth_limit, key_func=submitted_username)
@bp.input(LoginIn, arg_name="body")
@bp.output(TokenPairOut, description="An access token and a refresh token")
@bp.doc(summary="Log in", responses=[400, 401, 403, 422])
def login(body: LoginIn) -> Any:
    return sessions.login(body.username, body.password)


@bp.post("/token/refresh")
@bp.input(RefreshIn, arg_name="body")
@bp.output(TokenPairOut, description="A new pair; the presented refresh token is spent")
@bp.doc(
    summary="Rotate a refresh token",
    description="Presenting a refresh token that was already used revokes its whole session.",
    responses=[400, 401, 422],
)
def refresh(body: RefreshIn) -> Any:
    return sessions.refresh(body.refresh_token)


@bp.post("/logout")
@bp.auth_required(token_auth)
@bp.doc(
    summary="Log out",
    description="Revokes the session: its refresh tokens and its access tokens.",
    responses={204: "Logged out", 401: "Authentication error"},
)
def logout() -> tuple[str, int]:
    sessions.logout(current_principal())
    return "", 204


@bp.get("/me")
@bp.auth_required(token_auth)
@bp.output(UserOut)
@bp.doc(summary="The current account")
def me() -> Any:
    return current_account()


@bp.patch("/me")
@bp.auth_required(token_auth)
@bp.input(MeUpdateIn, arg_name="body")
@bp.output(UserOut)
@bp.doc(
    summary="Change email or password",
    description="A password change needs `current_password` and signs out all other sessions.",
    responses=[400, 401, 409, 422],
)
def update_me(body: MeUpdateIn) -> Any:
    change = accounts.ProfileChange(
        email=str(body.email) if body.email else None,
        new_password=body.password,
        current_password=body.current_password,
    )
    return accounts.update_profile(current_account(), change, current_principal().family_id)
