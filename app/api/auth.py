"""Accounts and sessions: register, login, refresh, logout, me."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.api.current_user import current_account, current_principal
from app.api.rate_limits import (
    auth_limit,
    authenticated_user,
    client_ip,
    client_ip_and_username,
    failed_login,
    limiter,
    login_per_address_and_username_limit,
    login_per_username_limit,
    profile_limit,
    submitted_username,
)
from app.extensions import token_auth
from app.schemas.users import LoginIn, MeUpdateIn, RefreshIn, RegisterIn, TokenPairOut, UserOut
from app.services import accounts, sessions

bp = APIBlueprint("auth", __name__, tag={"name": "Auth", "description": "Accounts and sessions"})


@bp.post("/register")
@limiter.limit(auth_limit, key_func=client_ip)
@limiter.limit(auth_limit, key_func=submitted_username)
@bp.input(RegisterIn, arg_name="body")
@bp.output(UserOut, status_code=201, description="The new account (role `user`)")
@bp.doc(
    summary="Create an account",
    description="The username must be free (409); the email need not be: it is only contact "
    "information, and refusing one that is taken would tell who has an account.",
    responses={409: "The username is taken"},
)
def register(body: RegisterIn) -> Any:
    return accounts.register_user(body.username, str(body.email), body.password)


# Failed logins are counted per username too, but only failed ones, and one address can use
# only a share of a username's allowance: see app.api.rate_limits.
@bp.post("/login")
@limiter.limit(auth_limit, key_func=client_ip)
@limiter.limit(
    login_per_address_and_username_limit, key_func=client_ip_and_username, deduct_when=failed_login
)
@limiter.limit(login_per_username_limit, key_func=submitted_username, deduct_when=failed_login)
@bp.input(LoginIn, arg_name="body")
@bp.output(TokenPairOut, description="An access token and a refresh token")
@bp.doc(
    summary="Log in",
    responses={401: "Wrong username or password", 403: "The account is disabled"},
)
def login(body: LoginIn) -> Any:
    return sessions.login(body.username, body.password)


@bp.post("/token/refresh")
@bp.input(RefreshIn, arg_name="body")
@bp.output(TokenPairOut, description="A new pair; the presented refresh token is spent")
@bp.doc(
    summary="Rotate a refresh token",
    description="Presenting a refresh token that was already used revokes its whole session.",
    responses={401: "The refresh token is invalid, expired, revoked or already used"},
)
def refresh(body: RefreshIn) -> Any:
    return sessions.refresh(body.refresh_token)


@bp.post("/logout")
@bp.auth_required(token_auth)
@bp.doc(
    summary="Log out",
    description="Revokes the session: its refresh tokens and its access tokens.",
    responses={204: "Logged out"},
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


# Limited per user under the authentication: each wrong current password costs an argon2 check.
@bp.patch("/me")
@bp.auth_required(token_auth)
@limiter.limit(profile_limit, key_func=authenticated_user)
@bp.input(MeUpdateIn, arg_name="body")
@bp.output(UserOut)
@bp.doc(
    summary="Change email or password",
    description="A password change needs `current_password` and signs out all other sessions. "
    "Any email is accepted, one that another account has too.",
    responses={
        401: "No valid access token, or a wrong `current_password`",
        422: "Some fields are invalid (see `errors`)",
    },
)
def update_me(body: MeUpdateIn) -> Any:
    change = accounts.ProfileChange(
        email=str(body.email) if body.email else None,
        new_password=body.password,
        current_password=body.current_password,
    )
    return accounts.update_profile(current_account(), change, current_principal().family_id)
