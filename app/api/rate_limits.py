"""Rate limits (Flask-Limiter): per IP and per username on the auth endpoints, and an optional
per-caller limit on every endpoint. Counts live in Redis when configured, so every server
worker shares them. If Redis fails, limits fail open (configurable): counting continues in each
process's memory rather than refusing every request."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

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


View = TypeVar("View", bound=Callable[..., Any])
LimitValue = str | Callable[[], str]
KeyFunc = Callable[[], str]
ENFORCED_VIEWS = "rate_limited_views"
APP_LIMITER = "rate_limiter"
_BASE_VIEW = "__rate_limited_view__"


class AppRateLimits:
    """Limits declared on the views once (at import), enforced by a Flask-Limiter instance of
    each app's own.

    Flask-Limiter keeps its state (enabled, storage, in-memory fallback) on the Limiter object.
    One module-level Limiter shared by several apps in a process (tests, tools) ran every app
    with the settings and storage of the app initialised last: an app built with limits off
    turned them off in the others, and two apps shared counts through that last app's store
    (even `memory://`) rather than through their own.
    """

    def __init__(self, key_func: KeyFunc) -> None:
        self._key_func = key_func
        self._declared: dict[Callable[..., Any], list[tuple[LimitValue, KeyFunc]]] = {}
        self._exempt: list[Callable[..., Any]] = []

    def limit(self, limit_value: LimitValue, *, key_func: KeyFunc) -> Callable[[View], View]:
        def decorate(view: View) -> View:
            base = getattr(view, _BASE_VIEW, view)
            self._declared.setdefault(base, []).append((limit_value, key_func))
            if base is not view:  # stacked limits: `view` already dispatches to the app's limiter
                return view

            @wraps(base)
            def dispatch(*args: Any, **kwargs: Any) -> Any:
                enforced = current_app.extensions.get(ENFORCED_VIEWS, {}).get(base, base)
                return enforced(*args, **kwargs)

            setattr(dispatch, _BASE_VIEW, base)
            return cast(View, dispatch)

        return decorate

    def exempt(self, view: View) -> View:
        self._exempt.append(view)
        return view

    def init_app(self, app: Flask) -> Limiter:
        app_limiter = Limiter(key_func=self._key_func)
        enforced: dict[Callable[..., Any], Callable[..., Any]] = {}
        for base, limits in self._declared.items():
            view = base
            for limit_value, key_func in limits:
                view = app_limiter.limit(limit_value, key_func=key_func)(view)
            enforced[base] = view
        for exempt_view in self._exempt:
            app_limiter.exempt(exempt_view)
        app_limiter.init_app(app)
        app.extensions[ENFORCED_VIEWS] = enforced
        app.extensions[APP_LIMITER] = app_limiter  # the limits hold it by a weak reference
        return app_limiter


# The default limit (RATELIMIT_DEFAULT) counts per caller; the auth limits name their own keys.
limiter = AppRateLimits(key_func=caller)


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
