"""Rate limits (Flask-Limiter): per IP and per username on the auth endpoints, and an optional
per-caller limit on every endpoint. Counts live in Redis when configured, so every gunicorn
worker shares them. If Redis fails, limits fail open (configurable): counting continues in each
process's memory rather than refusing every request."""

from __future__ import annotations

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from app.auth.tokens import InvalidToken, decode_access_token
from app.config import Settings


def auth_limit() -> str:
    settings: Settings = current_app.config["SETTINGS"]
    return settings.ratelimit_auth


def client_ip() -> str:
    return f"ip:{get_remote_address()}"


def submitted_username() -> str:
    """The username a login or registration is for: guessing one account's password from many
    addresses is limited as well as many guesses from one address."""
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    if isinstance(name, str) and name.strip():
        return f"username:{name.strip().lower()[:64]}"
    return client_ip()


def caller() -> str:
    """The authenticated user (a valid access token's subject), else the client address."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        settings: Settings = current_app.config["SETTINGS"]
        try:
            claims = decode_access_token(
                header[7:], secret=settings.jwt_secret_key, issuer=settings.jwt_issuer
            )
            return f"user:{claims.user_id}"
        except InvalidToken:
            pass
    return client_ip()


# The default limit (RATELIMIT_DEFAULT) counts per caller; the auth limits name their own keys.
limiter = Limiter(key_func=caller)


def init_rate_limits(app: Flask, settings: Settings) -> None:
    storage = settings.ratelimit_storage
    app.config.update(
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        RATELIMIT_STORAGE_URI=storage,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=settings.ratelimit_fail_open,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=settings.ratelimit_fail_open,
        RATELIMIT_DEFAULT=settings.ratelimit_default or "",
        RATELIMIT_DEFAULTS_PER_METHOD=False,
        RATELIMIT_KEY_PREFIX="mediaamp",
    )
    if storage.startswith("redis"):
        timeout = settings.cache_timeout_ms / 1000
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    limiter.init_app(app)
