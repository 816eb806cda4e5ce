"""Cached reads answered in front of Flask: a WSGI middleware that serves a remembered caller's
cached answer without building Flask's request, running its hooks and dispatching the view.

It only takes requests whose every outcome it knows, and hands anything else to Flask unchanged:
a GET of a cached endpoint (app.api.caching.cached), a bearer token this process has verified
before (app.auth.tokens.VerifiedTokens), a session it remembers (app.auth.session_memory), and
neither CORS nor a default rate limit configured (those belong to Flask's hooks). It then reads
the answer and the session's counters in one round trip, as the Flask path does, and answers
only if the counters confirm the session with the role the answer was planned for.

A miss is answered here too when the endpoint has a `direct` function (`GET /task/<id>`), which
computes the view's 200 answer without Flask's dispatch; the answer is stored as Flask's would
be. Any other miss (no such function, or an answer other than 200) is handed to Flask together
with what was read, so nothing is read twice.

An answer carries what Flask's hooks would add (request id, security headers, `X-Cache`, 304
on a matching `If-None-Match`) and is logged and counted in the metrics the same way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter
from werkzeug.wrappers import Request

from app.api.caching import CACHE_GENERATIONS, PREFETCHED, cache_plan, direct_answer, prefetch
from app.api.http import security_headers
from app.auth.session_memory import SessionMemory
from app.auth.tokens import VerifiedTokens
from app.cache.store import ResponseCache
from app.config import Settings
from app.models.types import MAX_ID
from app.observability.logging import REQUEST_ID_HEADER, log_request, request_id_from
from app.observability.metrics import CACHE_LOOKUPS, count_request
from app.services.sessions import Principal

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class CacheShortcut:
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
        if self.enabled and environ.get("REQUEST_METHOD") == "GET":
            try:
                answer = self._cached_answer(environ)
            except Exception:  # Flask answers instead, with its error handling if it fails too
                log.exception("the cache shortcut failed; answering through Flask")
                environ.pop(PREFETCHED, None)
                answer = None
            if answer is not None:
                status, headers, body = answer
                start_response(status, headers)
                return [body]
        return self.next_app(environ, start_response)

    def _cached_answer(
        self, environ: WSGIEnvironment
    ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        started = time.perf_counter()
        extensions = self.app.extensions
        cache: ResponseCache | None = extensions.get("response_cache")
        memory: SessionMemory | None = extensions.get("session_memory")
        tokens: VerifiedTokens | None = extensions.get("verified_tokens")
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if cache is None or memory is None or tokens is None or scheme != "Bearer":
            return None
        claims = tokens.recall(token, time.time())
        role = memory.last_role(claims.user_id, claims.family_id) if claims else None
        if claims is None or role is None:
            return None
        path = environ.get("PATH_INFO", "")
        if not path.isascii():
            return None  # Flask decodes it
        try:
            rule, view_args = self._routes.match(path, "GET", return_rule=True)
        except HTTPException:
            return None
        view = self.app.view_functions.get(rule.endpoint)
        generations = getattr(view, CACHE_GENERATIONS, None)
        if (
            view is None
            or generations is None
            or any(isinstance(v, int) and v > MAX_ID for v in view_args.values())
        ):
            return None
        request = Request(environ)
        actor = Principal(id=claims.user_id, role=role, family_id=claims.family_id)
        plan = cache_plan(generations, actor, rule.endpoint, view_args, request.args)
        done = prefetch(cache, plan, actor.id, role)
        environ[PREFETCHED] = done  # a miss: Flask uses what was read
        if done is None or memory.recall(actor.id, actor.family_id, done.session_counters) != role:
            return None  # no cache, or the session changed: Flask asks the database
        entry, x_cache = done.looked.entry, "HIT"
        if entry is None:
            with self.app.app_context():
                entry = direct_answer(view, actor, view_args)
            if entry is None:
                return None
            cache.set(done.looked.key, entry)
            x_cache = "MISS"
        environ.pop(PREFETCHED)

        head, _, body = entry.partition(b"\n")
        stored: dict[str, Any] = orjson.loads(head)
        etag = stored.get("ETag")
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        headers = [("X-Cache", x_cache), (REQUEST_ID_HEADER, request_id)]
        headers += security_headers(self.app)
        if etag and etag in request.headers.get("If-None-Match", ""):
            status, body, headers = 304, b"", [("ETag", etag), *headers]
        else:
            status = 200
            headers += [(name, str(value)) for name, value in stored.items()]
            headers.append(("Content-Length", str(len(body))))
        seconds = time.perf_counter() - started
        count_request("GET", rule.rule, status, seconds)
        CACHE_LOOKUPS.labels(x_cache.lower()).inc()
        log_request(
            environ,
            status,
            round(seconds * 1000, 2),
            actor.id,
            write_line=self.write_log_line,
            request_id=request_id,
        )
        return ("200 OK" if status == 200 else "304 NOT MODIFIED"), headers, body


def install_cache_shortcut(app: Flask) -> None:
    app.wsgi_app = CacheShortcut(app, app.wsgi_app)  # type: ignore[method-assign]
