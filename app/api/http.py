"""Request and response rules shared by every endpoint: the client's address behind proxies,
JSON bodies and security headers."""

from __future__ import annotations

from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.sessions import NullSession, SecureCookieSessionInterface
from flask_cors import CORS
from werkzeug.exceptions import BadRequest, NotFound, UnsupportedMediaType
from werkzeug.middleware.proxy_fix import ProxyFix

from app.api.not_found import not_found_message
from app.api.request_limits import refuse_oversized_requests
from app.config import VALIDATION_FAILED
from app.database import end_read_only_session, read_only_session
from app.models.types import MAX_ID
from app.schemas.common import NOT_A_JSON_OBJECT, ROOT_ERROR_FIELD
from app.services.errors import InvalidInput

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
READ_METHODS = frozenset({"GET", "HEAD"})


class ApiRequest(Request):
    """Turns undecodable and absurdly nested JSON into a 400 instead of a 500. A request with no
    body and no JSON content type has no JSON (so a body whose fields are all optional may be
    left out); an empty body declared as JSON is malformed JSON."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not self.is_json and not self.get_data(cache=True):
            return None
        try:
            return super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError as exc:
            raise BadRequest("The JSON body is nested too deeply.") from exc

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        raise BadRequest("The body is not valid JSON.") from e


class NoCookieSessions(SecureCookieSessionInterface):
    """The API is stateless (bearer tokens, never cookies): no request opens a cookie session,
    which would otherwise cost every request a signature check of a cookie nobody sends."""

    def open_session(self, app: Flask, request: Request) -> NullSession:
        return self.make_null_session(app)


def _sends_body_to_a_json_endpoint() -> bool:
    if request.method not in BODY_METHODS or request.endpoint is None:
        return False
    view = current_app.view_functions.get(request.endpoint)
    spec = getattr(view, "_spec", {})
    has_body = bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", ""
    )
    return has_body and "body" in spec and spec.get("content_type") == "application/json"


def require_json_content_type() -> None:
    """A JSON endpoint answers 415 to any other media type, before the body is read."""
    if _sends_body_to_a_json_endpoint() and not request.is_json:
        raise UnsupportedMediaType("Send the body as application/json.")


def refuse_null_json_body() -> None:
    """A JSON body of `null` is no object: 422 as for `[]`. (APIFlask reads it as no body, which
    an endpoint whose fields are all optional would take for an empty object.)"""
    if (
        _sends_body_to_a_json_endpoint()
        # Parsed once: the view's input reads the cached result.
        and request.get_json(silent=True) is None
        and request.get_data(cache=True).strip() == b"null"
    ):
        raise InvalidInput(
            VALIDATION_FAILED, errors={ROOT_ERROR_FIELD: [NOT_A_JSON_OBJECT]}, location="json"
        )


def reads_only() -> None:
    """GET and HEAD change nothing: their database session reads without a transaction."""
    if request.method in READ_METHODS:
        read_only_session()


def end_reads_only(_error: BaseException | None) -> None:
    end_read_only_session()


def refuse_impossible_ids(_endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An `<int:...>` id past the INTEGER columns' range cannot exist: 404 before it reaches
    SQL, where it would be an out-of-range error; worded as the resource's own 404."""
    for name, value in (values or {}).items():
        if isinstance(value, int) and value > MAX_ID:
            raise NotFound(not_found_message(name) or "No such object.")


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if current_app.config["PREFERRED_URL_SCHEME"] == "https":  # staging and production
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


CORS_EXPOSE_HEADERS = [
    "ETag",
    "Link",
    "X-Cache",
    "X-Request-ID",
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
]
CORS_ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
    "Idempotency-Key",
]


def install_cors(app: Flask, origins: list[str]) -> None:
    """CORS for the configured browser origins only; none configured, no CORS headers at all.
    Bearer tokens travel in a header, never in cookies, so credentials are not allowed."""
    if not origins:
        return
    CORS(
        app,
        origins=origins,
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_headers=CORS_ALLOW_HEADERS,
        supports_credentials=False,
    )


def trust_proxies(app: Flask, hops: int) -> None:
    """Behind `hops` proxies (a load balancer, an ingress), the client's address, scheme, host
    and path prefix are those the proxies forwarded (X-Forwarded-*), taken `hops` entries from
    the right: what a client writes in them itself is ignored. With 0 the peer is the client, so
    rate limits behind an untrusted proxy would count every client as one."""
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )


def install(app: Flask) -> None:
    settings = app.config.get("SETTINGS")
    trust_proxies(app, getattr(settings, "trusted_proxy_hops", 0))
    app.request_class = ApiRequest
    app.session_interface = NoCookieSessions()
    app.url_value_preprocessor(refuse_impossible_ids)
    # Before every other check of the request (the rate limits' come later: init_rate_limits).
    app.before_request(refuse_oversized_requests)
    app.before_request(reads_only)
    app.teardown_request(end_reads_only)
    app.before_request(require_json_content_type)
    app.before_request(refuse_null_json_body)
    app.after_request(add_security_headers)
    install_cors(app, list(getattr(settings, "cors_origins", None) or []))
