"""Rate limits (Flask-Limiter). Counts live in Redis when configured, so every server worker
shares them. If Redis fails, limits fail open (configurable): counting continues in each
process's memory rather than refusing every request. Over them: 429 with `Retry-After`.

Every caller: RATELIMIT_DEFAULT (1200/minute; empty: off) over all its requests together, per
user for a valid access token, else per client address. It is checked before the view (so
before authentication) on every endpoint except the probes (`/health`, `/ready`), `/metrics`
and static files: a load balancer or a scraper, often behind one address with other clients,
must not see a healthy instance refuse it.

`POST /login`, three limits:
- per client address, any username, every attempt: RATELIMIT_AUTH (10/minute), so one address
  can neither spray many usernames nor make the server compute many password hashes;
- per (address, username), failed logins (401) only: RATELIMIT_AUTH, and at most a quarter of
  RATELIMIT_LOGIN_PER_USERNAME within that limit's window (`ADDRESS_SHARE_OF_USERNAME_LIMIT`);
- per username from any address, failed logins only: RATELIMIT_LOGIN_PER_USERNAME (100/hour),
  so guessing one account's password from many addresses is limited too.
A correct login never counts toward the username limits.

How Flask-Limiter applies them: a view's limits are checked in order of window length and the
first one exceeded refuses the request. A limit with `deduct_when` is only tested before the
view and counted after it, when the answer qualifies (a 401): a refused request (429) never
reaches the view, so it counts toward no failed-login limit. An attacker at one address is thus
refused once it has used its share, and adds nothing more to the username's count: it cannot
keep the user, logging in from elsewhere, out. (Tested before and counted after, concurrent
failures can overshoot a limit by the number in flight.)

The trade-off: an attacker spread over at least four addresses (IPv6: four /64 networks) can
fill the per-username limit and keep the account's owner out until its window ends, from
everywhere. That is the price of limiting distributed guessing at all; a lower
RATELIMIT_LOGIN_PER_USERNAME guesses fewer passwords and locks out sooner. Clients behind one
address (a NAT; every client, behind a proxy when TRUSTED_PROXY_HOPS is not set) share the
per-address limits.

`PATCH /me`: RATELIMIT_PROFILE (10/minute) per user, every call (each wrong current password
costs an argon2 check), keyed by the session authentication verified.

`POST /register`: RATELIMIT_AUTH per address and per username, every attempt.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many

from app.config import Settings
from app.extensions import token_auth
from app.services import sessions
from app.services.errors import AuthenticationFailed

# One address may use at most this fraction of a username's failed-login allowance: locking an
# account out takes failed logins from at least this many addresses.
ADDRESS_SHARE_OF_USERNAME_LIMIT = 4
# Endpoints outside every limit (besides those marked `@limiter.exempt` and static files).
UNLIMITED_ENDPOINTS = ("metrics",)
# IPv6 clients are counted by network: a subscriber usually gets a whole /64 and can send from
# any address in it.
IPV6_CLIENT_PREFIX = 64


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def auth_limit() -> str:
    return _settings().ratelimit_auth


def profile_limit() -> str:
    return _settings().ratelimit_profile


def login_per_username_limit() -> str:
    return _settings().ratelimit_login_per_username


def login_per_address_and_username_limit() -> str:
    """RATELIMIT_AUTH, and a share of each per-username limit in the same window."""
    per_username = login_per_username_limit()
    shares = [
        f"{max(1, item.amount // ADDRESS_SHARE_OF_USERNAME_LIMIT)} per {item.multiples} "
        f"{item.GRANULARITY.name}"
        for item in (parse_many(per_username) if per_username else [])
    ]
    return "; ".join(limit for limit in (auth_limit(), *shares) if limit)


def failed_login(response: Response) -> bool:
    return response.status_code == 401


def client_network(address: str) -> str:
    """The address an IPv4 client is counted by, or the /64 of an IPv6 one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def client_ip() -> str:
    return f"ip:{client_network(get_remote_address())}"


def submitted_username() -> str:
    """The username a login or registration is for: guessing one account's password from many
    addresses is limited as well as many guesses from one address."""
    body = request.get_json(silent=True)
    name = body.get("username") if isinstance(body, dict) else None
    if isinstance(name, str) and name.strip():
        return f"username:{name.strip().lower()[:64]}"
    return client_ip()


def client_ip_and_username() -> str:
    return f"{client_ip()}|{submitted_username()}"


def caller() -> str:
    """The user of a valid access token, else the client address. Checked before the view's
    authentication, which then finds the token among those this process verified already
    (`sessions.decode_access_token`): the signature is checked once per request."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            return f"user:{sessions.decode_access_token(token.strip()).user_id}"
        except AuthenticationFailed:
            pass
    return client_ip()


def authenticated_user() -> str:
    """The user whose session the view's authentication verified (limits declared under
    `auth_required`)."""
    principal = token_auth.current_user
    if isinstance(principal, sessions.Principal):
        return f"user:{principal.id}"
    return caller()


View = TypeVar("View", bound=Callable[..., Any])
LimitValue = str | Callable[[], str]
KeyFunc = Callable[[], str]
DeductWhen = Callable[[Response], bool]
ENFORCED_VIEWS = "rate_limited_views"
APP_LIMITER = "rate_limiter"
_BASE_VIEW = "__rate_limited_view__"


@dataclass(frozen=True)
class DeclaredLimit:
    value: LimitValue
    key_func: KeyFunc
    # Count only requests whose answer this accepts (checked before the view either way).
    deduct_when: DeductWhen | None = None


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
        self._declared: dict[Callable[..., Any], list[DeclaredLimit]] = {}
        self._exempt: list[Callable[..., Any]] = []

    def limit(
        self,
        limit_value: LimitValue,
        *,
        key_func: KeyFunc,
        deduct_when: DeductWhen | None = None,
    ) -> Callable[[View], View]:
        def decorate(view: View) -> View:
            base = getattr(view, _BASE_VIEW, view)
            declared = DeclaredLimit(limit_value, key_func, deduct_when)
            self._declared.setdefault(base, []).append(declared)
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
            for declared in limits:
                view = app_limiter.limit(
                    declared.value, key_func=declared.key_func, deduct_when=declared.deduct_when
                )(view)
            enforced[base] = view
        for exempt_view in self._exempt:
            app_limiter.exempt(exempt_view)
        app_limiter.init_app(app)
        app.extensions[ENFORCED_VIEWS] = enforced
        app.extensions[APP_LIMITER] = app_limiter  # the limits hold it by a weak reference
        return app_limiter


# The per-caller limit (RATELIMIT_DEFAULT) counts by `caller`; the others name their own keys.
limiter = AppRateLimits(key_func=caller)


def init_rate_limits(app: Flask, settings: Settings) -> None:
    storage = settings.ratelimit_storage
    app.config.update(
        RATELIMIT_ENABLED=settings.ratelimit_enabled,
        RATELIMIT_STORAGE_URI=storage,
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=settings.ratelimit_fail_open,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=settings.ratelimit_fail_open,
        # Flask-Limiter's application limit, not its default limits: those count each endpoint
        # apart (a caller would get the limit once per endpoint) and skip every view that has
        # limits of its own (login, registration, PATCH /me).
        RATELIMIT_APPLICATION=settings.ratelimit_default or "",
        RATELIMIT_DEFAULT="",
        # Stop at the first limit exceeded: the later ones are neither counted nor tested.
        RATELIMIT_FAIL_ON_FIRST_BREACH=True,
        RATELIMIT_KEY_PREFIX="mediaamp",
    )
    if storage.startswith("redis"):
        timeout = settings.cache_timeout_ms / 1000
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        }
    app_limiter = limiter.init_app(app)
    for endpoint in UNLIMITED_ENDPOINTS:
        if endpoint in app.view_functions:
            app_limiter.exempt(app.view_functions[endpoint])
