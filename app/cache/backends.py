"""Key-value stores behind the cache: Redis; a SQLite file shared by the embedded default's
processes (diskcache); and an in-process one for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

import diskcache
import redis
from cachetools import TTLCache

from app.unique import unique_bits

# Generation counters (see app.cache.store) are the keys with this prefix.
COUNTER_PREFIX = "gen:"


class CacheUnavailable(Exception):
    """The store did not answer (down, or slower than its timeout)."""


def versioned(prefix: str, versions: Sequence[bytes]) -> str:
    """An entry's key: its prefix and the versions of the counters that guard it."""
    return f"{prefix}:v{b'.'.join(versions).decode()}"


class CacheBackend(Protocol):
    name: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def lookup(
        self, counters: Sequence[str], prefix: str, versioned_by: int
    ) -> tuple[list[bytes], bytes | None]:
        """In one read: the values of `counters` (b"0" for one never bumped), and the entry
        stored under `versioned(prefix, <the first versioned_by of those values>)`."""
        ...

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    def incr_many(self, keys: Sequence[str]) -> None: ...

    def claim(self, key: str, ttl_seconds: float) -> bool:
        """Take `key` unless someone holds it (until `ttl_seconds` have passed): True if taken.
        Atomic across every process sharing the store."""
        ...

    def release(self, key: str) -> None:
        """Give up a claimed `key` before its time."""
        ...

    def ping(self) -> None: ...


class _TwoStepLookup:
    """`lookup` as two reads, for the in-process stores (where a read costs no round trip)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def lookup(
        self, counters: Sequence[str], prefix: str, versioned_by: int
    ) -> tuple[list[bytes], bytes | None]:
        values = [v or b"0" for v in self.get_many(counters)]
        return values, self.get_many([versioned(prefix, values[:versioned_by])])[0]


# The Redis `lookup`: counters and entry in one round trip, read atomically. Mirrors `versioned`.
# KEYS[1] is the seeded counter (see RedisBackend): found missing, it is seeded with ARGV[3].
_LOOKUP_SCRIPT = """
local values = redis.call('MGET', unpack(KEYS))
if not values[1] then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  values[1] = redis.call('GET', KEYS[1])
end
local versions = {}
for i = 1, #KEYS do
  if not values[i] then values[i] = '0' end
  if i <= tonumber(ARGV[2]) then versions[i] = values[i] end
end
values[#KEYS + 1] = redis.call('GET', ARGV[1] .. ':v' .. table.concat(versions, '.'))
return values
"""


def _seed() -> int:
    """A random starting value for a seeded counter (room left for 2**62 increments)."""
    return unique_bits(62)


class RedisBackend:
    """Redis with short timeouts: a slow or dead Redis costs a request at most the timeout.

    Redis may lose its data (a restart without persistence, FLUSHDB), and counters would then
    start again from 0 and reach values they had before: an entry remembered outside Redis under
    an old value (app.auth.session_memory) could match again. So `seeded_counter` (the global
    generation, read and bumped with every other) is never created at 0 but at a random value,
    which the lost data's values will not meet again."""

    name = "redis"

    def __init__(self, url: str, timeout_seconds: float, seeded_counter: str) -> None:
        self._shared = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )
        self._per_thread = threading.local()
        self._seeded = seeded_counter
        # EVALSHA, loading the script again if the server lost it (restart, SCRIPT FLUSH).
        self._lookup = self._shared.register_script(_LOOKUP_SCRIPT)

    @property
    def _client(self) -> redis.Redis:
        """This thread's client, holding one connection of the shared pool for the thread's
        life: taking a connection from the pool and giving it back for every command costs
        redis-py more than the command (a server's threads are few and long-lived). It
        reconnects by itself after an error, as the pool's connections do."""
        client: redis.Redis | None = getattr(self._per_thread, "client", None)
        if client is None:
            client = redis.Redis(
                connection_pool=self._shared.connection_pool, single_connection_client=True
            )
            self._per_thread.client = client
        return client

    def lookup(
        self, counters: Sequence[str], prefix: str, versioned_by: int
    ) -> tuple[list[bytes], bytes | None]:
        if not counters or counters[0] != self._seeded:
            raise ValueError(f"lookup reads {self._seeded} first")
        try:
            reply = self._lookup(
                keys=list(counters), args=[prefix, versioned_by, _seed()], client=self._client
            )
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc
        # A missing entry (GET's nil) ends the reply's array early.
        values = list(reply[: len(counters)])
        entry = reply[len(counters)] if len(reply) > len(counters) else None
        return values, entry

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            values: list[bytes | None] = list(self._client.mget(list(keys)))  # type: ignore[arg-type]
            if self._seeded in keys and values[keys.index(self._seeded)] is None:
                self._client.set(self._seeded, _seed(), nx=True)  # only after a loss of data
                values = list(self._client.mget(list(keys)))  # type: ignore[arg-type]
            return values
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
            if self._seeded in keys:
                pipe.set(self._seeded, _seed(), nx=True)
            for key in keys:
                pipe.incr(key)
            pipe.execute()
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def claim(self, key: str, ttl_seconds: float) -> bool:
        try:
            return bool(self._client.set(key, b"1", nx=True, px=max(1, int(ttl_seconds * 1000))))
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def release(self, key: str) -> None:
        try:
            self._client.delete(key)
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc


class MemoryBackend(_TwoStepLookup):
    """Per-process store: for tests, and single-process use."""

    name = "memory"

    def __init__(self, max_entries: int, max_ttl_seconds: int) -> None:
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=max_ttl_seconds)
        self._counters: dict[str, int] = {}
        self._claims: TTLCache[str, float] = TTLCache(maxsize=max_entries, ttl=max_ttl_seconds)
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

    def claim(self, key: str, ttl_seconds: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._claims.get(key, 0.0) > now:
                return False
            self._claims[key] = now + ttl_seconds
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def ping(self) -> None:
        return None


class DiskBackend(_TwoStepLookup):
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

    def claim(self, key: str, ttl_seconds: float) -> bool:
        try:
            return bool(self._entries.add(key, b"1", expire=ttl_seconds))
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def release(self, key: str) -> None:
        try:
            self._entries.delete(key)
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def ping(self) -> None:
        return None
