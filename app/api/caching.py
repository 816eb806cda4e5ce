"""Cached GET answers with `X-Cache` and `ETag`/`If-None-Match` (304).

A cached answer is stored whole (status 200, body, Link/ETag headers) under a key made of the
endpoint, the caller's visibility scope, every query parameter and the generations that guard it
(see `app.cache.store`). Only 200 answers are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, cast

import orjson
from flask import Response, current_app, make_response, request
from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from app.api.http import if_match_tags_of
from app.api.json_provider import json_answer
from app.auth.tokens import AccessClaims
from app.cache.invalidation import STAFF_SCOPE, current_cache, user_scope
from app.cache.request_counters import note_counters_of
from app.cache.store import Lookup, ResponseCache, scope_generation
from app.database import read_only_session
from app.extensions import token_auth
from app.models import Role
from app.services import sessions
from app.services.actor import Actor
from app.services.errors import DomainError

STORED_HEADERS = ("Link", "ETag", "Content-Type")

CACHE_HEADERS: Any = {
    "X-Cache": {
        "description": "HIT: served from the cache; MISS: computed (and cached); BYPASS: the "
        "cache is unavailable, answered from the database"
    },
    "ETag": {"description": "Send it back as If-None-Match to get a 304 when unchanged"},
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


def if_match_tags() -> set[str] | None:
    """The `If-Match` tags of the request (`{"*"}` for a star), None without the header."""
    return if_match_tags_of(request.headers.get("If-Match"))


def caller_scope(user: Actor) -> str:
    """What the caller may see: `user:<id>` for users; admins (who also see soft-deleted tasks)
    and moderators share the staff generation but not cache entries."""
    return user_scope(user.id) if user.role == Role.USER else user.role.value


def scope_generations(user: Actor) -> list[str]:
    scope = user_scope(user.id) if user.role == Role.USER else STAFF_SCOPE
    return [scope_generation(scope)]


def body_etag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _not_modified(response: Response) -> Response:
    etag = response.headers.get("ETag")
    if etag and etag in request.headers.get("If-None-Match", ""):
        not_modified = Response(status=304)
        not_modified.headers["ETag"] = etag
        not_modified.headers["X-Cache"] = response.headers.get("X-Cache", "MISS")
        return not_modified
    return response


def _encode(response: Response) -> bytes:
    headers = {k: response.headers[k] for k in STORED_HEADERS if k in response.headers}
    return _encode_parts(headers, response.get_data())


def _encode_parts(headers: Mapping[str, str], body: bytes) -> bytes:
    """An answer as the cache stores it: its stored headers (JSON), a newline, its body."""
    stored = {k: headers[k] for k in STORED_HEADERS if k in headers}
    return orjson.dumps(stored) + b"\n" + body


def _decode(stored: bytes) -> Response:
    head, _, body = stored.partition(b"\n")
    response = Response(body, status=200)
    for name, value in orjson.loads(head).items():
        response.headers[name] = value
    return response


# generations(actor, query_args, **view_args) -> the counters guarding a cached view's answers
Generations = Callable[..., Sequence[str]]
CACHE_GENERATIONS = "cache_generations"  # attribute of a cached view: its `generations`
# direct(actor, query_args, base_url, **view_args) -> what the view answers with status 200 (its
# serialised output, as JSON-ready values or an orjson.Fragment of its JSON, and headers), or
# None; it raises pydantic's ValidationError or a DomainError where the view answers otherwise.
# Computed without Flask's dispatch (see `direct_answer`).
Direct = Callable[..., "tuple[Any, dict[str, str]] | None"]
CACHE_DIRECT = "cache_direct"  # attribute of a cached view: its `direct`
# WSGI environ: the answer read with the session's counters (before Flask, by app.api.hot_paths)
PREFETCHED = "mediaamp.cache_prefetched"


@dataclass(frozen=True)
class Prefetched:
    caller: tuple[int, Role]  # the (user id, role) the read was planned for
    looked: Lookup
    session_counters: list[bytes]  # the global and session counters, for `confirm_session`


@dataclass(frozen=True)
class CachePlan:
    """Where a caller's answer to this request is cached: a key prefix (endpoint, the caller's
    scope, view arguments and every query parameter) and the generations guarding it."""

    prefix: str
    generations: tuple[str, ...]


def cache_plan(
    generations: Generations,
    actor: Actor,
    endpoint: str | None,
    view_args: Mapping[str, Any],
    args: MultiDict[str, str],
) -> CachePlan:
    params = "&".join(sorted(f"{k}={v}" for k, v in args.items(multi=True)))
    prefix = f"{endpoint}:{caller_scope(actor)}:{dict(view_args)}:{params}"
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:40]
    return CachePlan(digest, tuple(generations(actor, args, **view_args)))


def prefetch(cache: ResponseCache, plan: CachePlan, user_id: int, role: Role) -> Prefetched | None:
    """Read a caller's cached answer in the same round trip as the counters that confirm their
    session (`sessions.session_counters`); None when the cache is unavailable."""
    looked = cache.lookup(
        plan.prefix, plan.generations, also_read=sessions.session_counters(user_id)
    )
    if looked is None:
        return None
    return Prefetched((user_id, role), looked, [looked.counters[0], *looked.also_read])


def read_cached_answer_with_session(claims: AccessClaims) -> list[bytes] | None:
    """For a cached GET, read the caller's cached answer in the same round trip as the counters
    that confirm their session (`sessions.session_counters`), planning the read with the role
    the session had last time. Returns those counters (global first) for `confirm_session`;
    None when the endpoint is not cached or the cache is unavailable. The answer is used only
    if the confirmed role turns out to be the one planned with (see `cached`)."""
    done: Prefetched | None = request.environ.get(PREFETCHED)  # by app.api.hot_paths
    if done is not None and done.caller[0] == claims.user_id:
        return done.session_counters
    cache = current_cache()
    view = current_app.view_functions.get(request.endpoint or "")
    generations: Generations | None = getattr(view, CACHE_GENERATIONS, None)
    if cache is None or generations is None:
        return None
    role = sessions.remembered_role(claims) or next(
        (r for r in Role if r.value == claims.role), Role.USER
    )
    guess = sessions.Principal(id=claims.user_id, role=role, family_id=claims.family_id)
    plan = cache_plan(generations, guess, request.endpoint, request.view_args or {}, request.args)
    done = prefetch(cache, plan, guess.id, guess.role)
    request.environ[PREFETCHED] = done
    return done.session_counters if done else None


def _prefetched(actor: Actor) -> Lookup | None:
    """The answer read with the session's counters, if it was planned for this very caller."""
    done: Prefetched | None = request.environ.pop(PREFETCHED, None)
    if done is None or done.caller != (actor.id, actor.role):
        return None
    return done.looked


def direct_answer(
    view: Callable[..., Any],
    actor: Actor,
    view_args: Mapping[str, Any],
    args: MultiDict[str, str],
    base_url: str,
) -> bytes | None:
    """A cached view's 200 answer computed by its `direct` function instead of the view, encoded
    as the cache stores it; None when the view has none or answers otherwise (Flask does then).
    Needs an app context, not a request; its session reads in autocommit, as a GET's does. The
    bytes are those the view answers through Flask (tests compare them)."""
    direct: Direct | None = getattr(view, CACHE_DIRECT, None)
    if direct is None:
        return None
    read_only_session()
    try:
        answered = direct(actor, args, base_url, **view_args)
    except (ValidationError, DomainError):
        return None
    if answered is None:
        return None
    headers, body = json_answer(current_app, *answered)
    return _encode_parts({"ETag": body_etag(body), **headers}, body)  # as `cached` adds it


def cached(generations: Generations, direct: Direct | None = None) -> Callable[[Any], Any]:
    """Cache a GET view. `generations(actor, query_args, **view_args)` names the counters
    guarding it. `direct(actor, query_args, base_url, **view_args)`, where given, computes the
    view's 200 answer for the hot-path middleware (app.api.hot_paths) on a miss, without
    Flask's dispatch."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            cache = current_cache()
            looked = None
            if cache is not None:
                actor = cast(Actor, token_auth.current_user)
                looked = _prefetched(actor)
                if looked is None:
                    plan = cache_plan(generations, actor, request.endpoint, kwargs, request.args)
                    looked = cache.lookup(plan.prefix, plan.generations)
            if looked is not None:
                note_counters_of(looked)  # for the lookups the view makes (list totals)
            if looked is not None and looked.entry is not None:
                hit = _decode(looked.entry)
                hit.headers["X-Cache"] = "HIT"
                return _not_modified(hit)
            response = make_response(view(*args, **kwargs))
            if response.status_code == 200:
                response.headers.setdefault("ETag", body_etag(response.get_data()))
                if cache is not None and looked is not None:
                    cache.set(looked.key, _encode(response))
            response.headers["X-Cache"] = "MISS" if looked is not None else "BYPASS"
            return _not_modified(response)

        setattr(wrapper, CACHE_GENERATIONS, generations)
        if direct is not None:
            setattr(wrapper, CACHE_DIRECT, direct)
        return wrapper

    return decorator
