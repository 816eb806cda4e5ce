"""Cached GET answers with `X-Cache` and `ETag`/`If-None-Match` (304).

A cached answer is stored whole (status 200, body, Link/ETag headers) under a key made of the
endpoint, the caller's visibility scope, every query parameter and the generations that guard it
(see `app.cache.store`). Only 200 answers are stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from flask import Response, make_response, request

from app.api.current_user import current_user
from app.cache.invalidation import STAFF_SCOPE, current_cache, user_scope
from app.cache.store import scope_generation
from app.models import Role, User

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
    if "If-Match" not in request.headers:
        return None
    tags = request.if_match
    return {"*"} if tags.star_tag else set(tags.as_set(include_weak=False))


def caller_scope(user: User) -> str:
    """What the caller may see: `user:<id>` for users; admins (who also see soft-deleted tasks)
    and moderators share the staff generation but not cache entries."""
    return user_scope(user.id) if user.role == Role.USER else user.role.value


def scope_generations(user: User) -> list[str]:
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
    return json.dumps(headers).encode() + b"\n" + response.get_data()


def _decode(stored: bytes) -> Response:
    head, _, body = stored.partition(b"\n")
    response = Response(body, status=200)
    for name, value in json.loads(head).items():
        response.headers[name] = value
    return response


def cached(generations: Callable[..., Sequence[str]]) -> Callable[[Any], Any]:
    """Cache a GET view. `generations(user, **view_args)` names the counters guarding it."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Response:
            cache = current_cache()
            user = current_user()
            key = None
            if cache is not None:
                params = "&".join(sorted(f"{k}={v}" for k, v in request.args.items(multi=True)))
                prefix = f"{request.endpoint}:{caller_scope(user)}:{kwargs}:{params}"
                digest = hashlib.sha256(prefix.encode()).hexdigest()[:40]
                key = cache.versioned_key(digest, generations(user, **kwargs))
            if cache is not None and key is not None:
                stored = cache.get(key)
                if stored is not None:
                    hit = _decode(stored)
                    hit.headers["X-Cache"] = "HIT"
                    return _not_modified(hit)
            response = make_response(view(*args, **kwargs))
            if response.status_code == 200:
                response.headers.setdefault("ETag", body_etag(response.get_data()))
                if cache is not None and key is not None:
                    cache.set(key, _encode(response))
            response.headers["X-Cache"] = "MISS" if key is not None else "BYPASS"
            return _not_modified(response)

        return wrapper

    return decorator
