"""Cached GET answers with `X-Cache`, and `ETag` with werkzeug's conditional requests (304).

A cached answer is stored whole (status 200, body, Link/ETag headers) under a key made of the
endpoint, the caller's visibility scope, every query parameter and the generations that guard it
(see `app.cache.store`). Only 200 answers are stored, and only up to CACHE_MAX_ANSWER_BYTES: a
larger one is served but not kept, so no caller fills the cache with a few huge answers. A hit
is answered by the view's decorator, after Flask's before-request hooks and the authentication,
and every after-request hook applies to it as to any answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast
from urllib.parse import urlencode

import orjson
from flask import Response, current_app, g, make_response, request
from werkzeug.datastructures import ETags, MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse

from app.api.openapi_parts import string_header
from app.auth.tokens import AccessClaims
from app.cache.invalidation import STAFF_SCOPE, current_cache, user_scope
from app.cache.store import Lookup, ResponseCache, scope_generation
from app.config import Settings
from app.extensions import token_auth
from app.models import Role
from app.services import sessions
from app.services.actor import Actor

STORED_HEADERS = ("Link", "ETag", "Content-Type")

# OpenAPI header objects, for a view's `doc(responses={status: {"headers": ...}})` (given to
# `output(headers=...)`, APIFlask reads them as schema fields and documents none).
CACHE_HEADERS: Any = {
    "X-Cache": string_header(
        "HIT: served from the cache; MISS: computed (and cached); BYPASS: the cache is "
        "unavailable, answered from the database",
        enum=["HIT", "MISS", "BYPASS"],
    ),
    "ETag": string_header("Send it back as If-None-Match to get a 304 when unchanged"),
}
CACHE_DOC = (
    " Answers are cached (see `X-Cache`) and invalidated by any write that could change them;"
    " `If-None-Match` with the `ETag` answers 304 when nothing changed."
)
IF_MATCH_DOC = (
    " With `If-Match: <ETag of GET /task/{id}>` the write happens only if the task has not changed"
    " since (else 412, nothing changed); without `If-Match` the write proceeds."
)


def quote_etag(tag: str) -> str:
    return f'"{tag}"'


def if_match() -> ETags | None:
    """The request's `If-Match` tags (werkzeug's, `*` included), None without the header."""
    return request.if_match if "If-Match" in request.headers else None


def caller_scope(user: Actor) -> str:
    """What the caller may see: `user:<id>` for users; admins (who also see soft-deleted tasks)
    and moderators share the staff generation but not cache entries."""
    return user_scope(user.id) if user.role == Role.USER else user.role.value


def scope_generations(user: Actor) -> list[str]:
    scope = user_scope(user.id) if user.role == Role.USER else STAFF_SCOPE
    return [scope_generation(scope)]


def body_etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _encode(response: Response) -> bytes:
    """An answer as the cache stores it: its stored headers (JSON), a newline, its body."""
    headers = {k: response.headers[k] for k in STORED_HEADERS if k in response.headers}
    return orjson.dumps(headers) + b"\n" + response.get_data()


def _decode(stored: bytes) -> Response:
    head, _, body = stored.partition(b"\n")
    response = Response(body, status=200)
    for name, value in orjson.loads(head).items():
        response.headers[name] = value
    return response


def _worth_keeping(body: bytes) -> bool:
    settings: Settings = current_app.config["SETTINGS"]
    return len(body) <= settings.cache_max_answer_bytes


# generations(actor, query_args, **view_args) -> the counters guarding a cached view's answers
Generations = Callable[..., Sequence[str]]
CACHE_GENERATIONS = "cache_generations"  # attribute of a cached view: its `generations`
_PREFETCHED = "cache_prefetched"  # flask.g: the answer read with the session's counters


@dataclass(frozen=True)
class Prefetched:
    caller: tuple[int, Role]  # the (user id, role) the read was planned for
    looked: Lookup
    session_counters: list[bytes]  # the global and session counters, for `confirm_session`


def cache_key_prefix(
    actor: Actor, endpoint: str | None, view_args: Mapping[str, Any], args: MultiDict[str, str]
) -> str:
    """Where a caller's answer to this request is cached: a digest of the endpoint, the
    caller's scope, the view arguments and every query parameter. The parameters are
    URL-encoded, name and value, in one canonical order, so that two different questions never
    share a key (a value holding `&` or `=` is encoded, not taken for a separator) and the same
    parameters in another order share one."""
    params = urlencode(sorted(args.items(multi=True)))
    described = f"{endpoint}:{caller_scope(actor)}:{sorted(view_args.items())!r}:{params}"
    return hashlib.sha256(described.encode()).hexdigest()[:40]


def _lookup(
    cache: ResponseCache, generations: Generations, actor: Actor, also_read: Sequence[str] = ()
) -> Lookup | None:
    view_args = request.view_args or {}
    prefix = cache_key_prefix(actor, request.endpoint, view_args, request.args)
    names = generations(actor, request.args, **view_args)
    return cache.lookup(prefix, names, also_read=also_read)


def read_cached_answer_with_session(claims: AccessClaims) -> list[bytes] | None:
    """For a cached GET, read the caller's cached answer in the same round trip as the counters
    that confirm their session (`sessions.session_counters`), planning the read with the role
    the session had last time. Returns those counters (global first) for `confirm_session`;
    None when the endpoint is not cached or the cache is unavailable. The answer is used only
    if the confirmed role turns out to be the one planned with (see `cached`)."""
    cache = current_cache()
    view = current_app.view_functions.get(request.endpoint or "")
    generations: Generations | None = getattr(view, CACHE_GENERATIONS, None)
    if cache is None or generations is None:
        return None
    role = sessions.remembered_role(claims) or next(
        (r for r in Role if r.value == claims.role), Role.USER
    )
    guess = sessions.Principal(id=claims.user_id, role=role, family_id=claims.family_id)
    looked = _lookup(cache, generations, guess, sessions.session_counters(guess.id))
    if looked is None:
        return None
    counters = [looked.counters[0], *looked.also_read]
    setattr(g, _PREFETCHED, Prefetched((guess.id, guess.role), looked, counters))
    return counters


def _prefetched(actor: Actor) -> Lookup | None:
    """The answer read with the session's counters, if it was planned for this very caller."""
    done: Prefetched | None = g.pop(_PREFETCHED, None)
    if done is None or done.caller != (actor.id, actor.role):
        return None
    return done.looked


def cached(generations: Generations) -> Callable[[Any], Any]:
    """Cache a GET view. `generations(actor, query_args, **view_args)` names the counters
    guarding its answers."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> WerkzeugResponse:
            cache = current_cache()
            looked = None
            if cache is not None:
                actor = cast(Actor, token_auth.current_user)
                looked = _prefetched(actor) or _lookup(cache, generations, actor)
            if looked is not None and looked.entry is not None:
                response = _decode(looked.entry)
                response.headers["X-Cache"] = "HIT"
                return response.make_conditional(request)
            response = make_response(view(*args, **kwargs))
            if response.status_code == 200:
                body = response.get_data()
                response.headers.setdefault("ETag", body_etag(body))
                if cache is not None and looked is not None and _worth_keeping(body):
                    cache.set(looked.key, _encode(response))
            response.headers["X-Cache"] = "MISS" if looked is not None else "BYPASS"
            return response.make_conditional(request)

        setattr(wrapper, CACHE_GENERATIONS, generations)
        return wrapper

    return decorator
