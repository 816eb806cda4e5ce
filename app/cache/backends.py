"""Key-value stores behind the cache: Redis, and an in-process one for the embedded default."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import diskcache
import redis
from cachetools import TTLCache

# Generation counters (see app.cache.store) are the keys with this prefix.
COUNTER_PREFIX = "gen:"


class CacheUnavailable(Exception):
    """The store did not answer (down, or slower than its timeout)."""


class CacheBackend(Protocol):
    name: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    def incr_many(self, keys: Sequence[str]) -> None: ...

    def ping(self) -> None: ...


class RedisBackend:
    """Redis with short timeouts: a slow or dead Redis costs a request at most the timeout."""

    name = "redis"

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            return list(self._client.mget(list(keys)))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            self._client.set(key, value, ex=ttl_seconds)
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def incr_many(self, keys: Sequence[str]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.incr(key)
            pipe.execute()
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc


class MemoryBackend:
    """Per-process store: for tests, and single-process use."""

    name = "memory"

    def __init__(self, max_entries: int, max_ttl_seconds: int) -> None:
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=max_ttl_seconds)
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            return [
                str(self._counters[k]).encode() if k in self._counters else self._entries.get(k)
                for k in keys
            ]

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        with self._lock:
            self._entries[key] = value

    def incr_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._counters[key] = self._counters.get(key, 0) + 1

    def ping(self) -> None:
        return None


class DiskBackend:
    """A SQLite-file store shared by every process on the host (diskcache): the embedded
    default's web server, Celery worker and CLI see each other's invalidations.

    Counters live in a store of their own that never evicts: an evicted counter would restart
    at 0 and could make an old entry reachable again."""

    name = "disk"

    def __init__(self, directory: str, max_bytes: int, timeout_seconds: float) -> None:
        self._entries = diskcache.Cache(
            f"{directory}/entries",
            size_limit=max_bytes,
            timeout=timeout_seconds,
            eviction_policy="least-recently-stored",
        )
        self._counters = diskcache.Cache(
            f"{directory}/counters", timeout=timeout_seconds, eviction_policy="none"
        )

    def _store(self, key: str) -> diskcache.Cache:
        return self._counters if key.startswith(COUNTER_PREFIX) else self._entries

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            values = [self._store(key).get(key) for key in keys]
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc
        # Counters are stored as integers (incr); callers get bytes like Redis gives.
        return [str(v).encode() if isinstance(v, int) else v for v in values]

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            self._entries.set(key, value, expire=ttl_seconds)
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def incr_many(self, keys: Sequence[str]) -> None:
        try:
            for key in keys:
                self._counters.incr(key, default=0)
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def ping(self) -> None:
        return None
