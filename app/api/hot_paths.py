"""Hot requests answered in front of Flask: a WSGI middleware that serves a remembered caller's
cached reads, and the hot write, without building Flask's request, running its hooks and
dispatching the view.

It only takes requests whose every outcome it knows, and hands anything else to Flask unchanged:
a bearer token this process has verified before (app.auth.tokens.VerifiedTokens), a session it
remembers (app.auth.session_memory), and neither CORS nor a default rate limit configured (those
belong to Flask's hooks). The session is confirmed with its counters in Redis before anything is
answered, with the role the process remembers.

- A GET of a cached endpoint (app.api.caching.cached): the answer and the session's counters are
  read in one round trip, as the Flask path does. A miss is answered here too when the endpoint
  has a `direct` function (`GET /task/<id>`), which computes the view's 200 answer without
  Flask's dispatch; the answer is stored as Flask's would be. Any other miss (no such function,
  or an answer other than 200) is handed to Flask with what was read, so nothing is read twice.
- A PUT of an endpoint with a direct write (app.api.direct_writes: `PUT /task/<id>`): the view's
  input model, service and output model run here; any answer other than 200 is Flask's.

An answer carries what Flask's hooks would add (request id, security headers, `X-Cache` for
reads, 304 on a matching `If-None-Match`) and is logged and counted in the metrics the same way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from flask import Flask
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter, Rule
from werkzeug.wrappers import Request

from app.api.caching import CACHE_GENERATIONS, PREFETCHED, cache_plan, direct_answer, prefetch
from app.api.direct_writes import direct_write_of, json_body, written_answer
from app.api.http import if_match_tags_of, security_headers
from app.api.json_provider import json_answer
from app.auth.session_memory import SessionMemory
from app.auth.tokens import AccessClaims, VerifiedTokens
from app.cache.request_counters import note_counters_of
from app.cache.store import ResponseCache
from app.config import Settings
from app.models import Role
from app.models.types import MAX_ID
from app.observability.logging import REQUEST_ID_HEADER, log_request, request_id_from
from app.observability.metrics import count_cache_lookup, count_request
from app.services import sessions
from app.services.sessions import Principal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class HotPaths:
    def __init__(self, app: Flask, next_app: WSGIApplication) -> None:
        self.app = app
        self.next_app = next_app
        settings: Settings = app.config["SETTINGS"]
        self.write_log_line = settings.request_log
        self.enabled = (
            not settings.cors_origins
            and not (settings.ratelimit_enabled and settings.ratelimit_default)
            and not app.url_map.host_matching
        )

    @functools.cached_property
    def _routes(self) -> MapAdapter:
        # Bound once, at the first request (all routes are registered by then): the app's
        # routes match on the path and method alone (no host or subdomain rules).
        return self.app.url_map.bind("localhost")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if self.enabled and method in ("GET", "PUT"):
            try:
                answer = self._read(environ) if method == "GET" else self._write(environ)
            except DBAPIError:  # the database failed: Flask answers (503) and logs it
                environ.pop(PREFETCHED, None)
                answer = None
            except Exception:  # Flask answers instead, with its error handling if it fails too
                log.exception("the hot path failed; answering through Flask")
                environ.pop(PREFETCHED, None)
                answer = None
            if answer is not None:
                status, headers, body = answer
                start_response(status, headers)
                return [body]
        return self.next_app(environ, start_response)

    def _caller(self, environ: WSGIEnvironment) -> tuple[AccessClaims, Role] | None:
        """The caller's verified claims and the role remembered for their session (to be
        confirmed with the session's counters), if this process knows them."""
        memory: SessionMemory | None = self.app.extensions.get("session_memory")
        tokens: VerifiedTokens | None = self.app.extensions.get("verified_tokens")
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if memory is None or tokens is None or scheme != "Bearer":
            return None
        claims = tokens.recall(token, time.time())
        role = memory.last_role(claims.user_id, claims.family_id) if claims else None
        return (claims, role) if claims is not None and role is not None else None

    def _route(
        self, environ: WSGIEnvironment, method: str
    ) -> tuple[Rule, Callable[..., Any], dict[str, Any]] | None:
        path = environ.get("PATH_INFO", "")
        if not path.isascii():
            return None  # Flask decodes it
        try:
            rule, view_args = self._routes.match(path, method, return_rule=True)
        except HTTPException:
            return None
        view: Callable[..., Any] | None = self.app.view_functions.get(rule.endpoint)
        if view is None or any(isinstance(v, int) and v > MAX_ID for v in view_args.values()):
            return None
        return rule, view, dict(view_args)

    def _confirmed(self, claims: AccessClaims, role: Role, counters: list[bytes]) -> bool:
        memory: SessionMemory = self.app.extensions["session_memory"]
        return memory.recall(claims.user_id, claims.family_id, counters) == role

    def _read(self, environ: WSGIEnvironment) -> Answer | None:
        started = time.perf_counter()
        cache: ResponseCache | None = self.app.extensions.get("response_cache")
        caller = self._caller(environ)
        route = self._route(environ, "GET") if caller and cache else None
        generations = getattr(route[1], CACHE_GENERATIONS, None) if route else None
        if cache is None or caller is None or route is None or generations is None:
            return None
        (claims, role), (rule, view, view_args) = caller, route
        request = Request(environ)
        actor = Principal(id=claims.user_id, role=role, family_id=claims.family_id)
        plan = cache_plan(generations, actor, rule.endpoint, view_args, request.args)
        done = prefetch(cache, plan, actor.id, role)
        environ[PREFETCHED] = done  # a miss: Flask uses what was read
        if done is None or not self._confirmed(claims, role, done.session_counters):
            return None  # no cache, or the session changed: Flask asks the database
        entry, x_cache = done.looked.entry, "HIT"
        if entry is None:
            with self.app.app_context():
                note_counters_of(done.looked)
                entry = direct_answer(view, actor, view_args, request.args, request.base_url)
            if entry is None:
                return None
            cache.set(done.looked.key, entry)
            x_cache = "MISS"
        environ.pop(PREFETCHED)

        head, _, body = entry.partition(b"\n")
        stored: dict[str, Any] = orjson.loads(head)
        etag = stored.get("ETag")
        if etag and etag in request.headers.get("If-None-Match", ""):
            status, body, stored = 304, b"", {"ETag": etag}
        else:
            status = 200
        count_cache_lookup(x_cache)
        return self._answer(
            environ, rule, actor, status, {"X-Cache": x_cache, **stored}, body, started
        )

    def _write(self, environ: WSGIEnvironment) -> Answer | None:
        started = time.perf_counter()
        cache: ResponseCache | None = self.app.extensions.get("response_cache")
        caller = self._caller(environ)
        route = self._route(environ, "PUT") if caller and cache else None
        if cache is None or caller is None or route is None:
            return None
        (claims, role), (rule, view, view_args) = caller, route
        handler = direct_write_of(view)
        if handler is None:
            return None
        body = json_body(environ, self.app.config.get("MAX_CONTENT_LENGTH"))
        counters = cache.counters(sessions.session_counters(claims.user_id))
        if body is None or counters is None or not self._confirmed(claims, role, counters):
            return None
        actor = Principal(id=claims.user_id, role=role, family_id=claims.family_id)
        if_match = if_match_tags_of(environ.get("HTTP_IF_MATCH"))
        answered = written_answer(self.app, handler, actor, view_args, body, if_match)
        if answered is None:
            return None
        headers, out = json_answer(self.app, *answered)
        return self._answer(environ, rule, actor, 200, headers, out, started)

    def _answer(
        self,
        environ: WSGIEnvironment,
        rule: Rule,
        actor: Principal,
        status: int,
        own_headers: dict[str, Any],
        body: bytes,
        started: float,
    ) -> Answer:
        """The answer with what Flask's hooks would add, logged and counted as they would."""
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        headers = [(REQUEST_ID_HEADER, request_id), *security_headers(self.app)]
        headers += [(name, str(value)) for name, value in own_headers.items()]
        if status != 304:
            headers.append(("Content-Length", str(len(body))))
        seconds = time.perf_counter() - started
        method = environ["REQUEST_METHOD"]
        count_request(method, rule.rule, status, seconds)
        log_request(
            environ,
            status,
            round(seconds * 1000, 2),
            actor.id,
            write_line=self.write_log_line,
            request_id=request_id,
        )
        return _STATUS_LINES[status], headers, body


_STATUS_LINES = {200: "200 OK", 304: "304 NOT MODIFIED"}
Answer = tuple[str, list[tuple[str, str]], bytes]


def install_hot_paths(app: Flask) -> None:
    app.wsgi_app = HotPaths(app, app.wsgi_app)  # type: ignore[method-assign]
