"""Key-value stores behind the cache: Redis; a SQLite file shared by the embedded default's
processes (diskcache); and an in-process one for tests.

Generation counters (app.cache.store) start at random values, in every store: a counter that is
missing (never used yet, evicted under an `allkeys-*` policy, lost in a restart or a FLUSHDB) is
created at a random 62-bit value when it is first read or bumped, never at 0. Were it to start at
0, an evicted counter would come back to a value it had before, and an answer cached or a session
remembered (app.auth.session_memory) under that value would be trusted again although a bump had
moved the counter past it. A random start meets an old value with odds of 2**-62. 62 bits, not
63: an INCR can never overflow Redis's signed 64-bit integers.
"""

from __future__ import annotations

import threading
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


def counter_seed() -> int:
    """Where a missing counter starts: random, with room left for 2**62 increments."""
    return unique_bits(62)


class CacheBackend(Protocol):
    name: str

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    def counters(self, keys: Sequence[str]) -> list[bytes]:
        """The values of the counters `keys`, each missing one created first at a random
        value (`counter_seed`)."""
        ...

    def lookup(
        self, counters: Sequence[str], prefix: str, versioned_by: int
    ) -> tuple[list[bytes], bytes | None]:
        """In one read: the values of `counters` (as `counters` reads them), and the entry
        stored under `versioned(prefix, <the first versioned_by of those values>)`."""
        ...

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    def incr_many(self, keys: Sequence[str]) -> None:
        """Add 1 to each counter of `keys`, a missing one created first at a random value."""
        ...

    def ping(self) -> None: ...


class _TwoStepLookup:
    """`lookup` as two reads, for the in-process stores (where a read costs no round trip)."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def counters(self, keys: Sequence[str]) -> list[bytes]:
        raise NotImplementedError

    def lookup(
        self, counters: Sequence[str], prefix: str, versioned_by: int
    ) -> tuple[list[bytes], bytes | None]:
        values = self.counters(counters)
        return values, self.get_many([versioned(prefix, values[:versioned_by])])[0]


# The Redis scripts. Each reads or bumps the counters named in KEYS, and creates a missing one
# at the random value given for it in ARGV (Lua's math.random is seeded alike in every script
# run, so the caller draws the values). SET NX then GET: a key named twice is created once.
_READ_COUNTERS = """
local function read_counters(seeds_from)
  local values = redis.call('MGET', unpack(KEYS))
  for i = 1, #KEYS do
    if not values[i] then
      redis.call('SET', KEYS[i], ARGV[seeds_from + i], 'NX')
      values[i] = redis.call('GET', KEYS[i])
    end
  end
  return values
end
"""

_COUNTERS_SCRIPT = _READ_COUNTERS + "return read_counters(0)"

# The Redis `lookup`: counters and entry in one round trip, read atomically. Mirrors `versioned`.
# ARGV: the entry's prefix, how many counters version it, then a seed per counter.
_LOOKUP_SCRIPT = (
    _READ_COUNTERS
    + """
local values = read_counters(2)
local versions = {}
for i = 1, tonumber(ARGV[2]) do versions[i] = values[i] end
values[#KEYS + 1] = redis.call('GET', ARGV[1] .. ':v' .. table.concat(versions, '.'))
return values
"""
)

_BUMP_SCRIPT = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i], 'NX')
  redis.call('INCR', KEYS[i])
end
"""


def _seeds(keys: Sequence[str]) -> list[int]:
    return [counter_seed() for _ in keys]


class RedisBackend:
    """Redis with short timeouts: a slow or dead Redis costs a request at most the timeout.

    Redis may evict a counter (the cache's Redis runs with maxmemory and `allkeys-lru`) or lose
    its data (a restart without persistence, FLUSHDB): every counter is read and bumped through
    a script that creates a missing one at a random value (see the module's docstring)."""

    name = "redis"

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self._shared = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )
        self._per_thread = threading.local()
        # EVALSHA, loading the script again if the server lost it (restart, SCRIPT FLUSH).
        self._lookup = self._shared.register_script(_LOOKUP_SCRIPT)
        self._read_counters = self._shared.register_script(_COUNTERS_SCRIPT)
        self._bump = self._shared.register_script(_BUMP_SCRIPT)

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
        args: list[str | int] = [prefix, versioned_by, *_seeds(counters)]
        try:
            reply = self._lookup(keys=list(counters), args=args, client=self._client)
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc
        # A missing entry (GET's nil) ends the reply's array early.
        values = list(reply[: len(counters)])
        entry = reply[len(counters)] if len(reply) > len(counters) else None
        return values, entry

    def counters(self, keys: Sequence[str]) -> list[bytes]:
        try:
            values = self._read_counters(keys=list(keys), args=_seeds(keys), client=self._client)
        except redis.RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc
        return list(values)

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
            self._bump(keys=list(keys), args=_seeds(keys), client=self._client)
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
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            return [
                str(self._counters[k]).encode() if k in self._counters else self._entries.get(k)
                for k in keys
            ]

    def _counter(self, key: str) -> int:
        """The counter's value, created at a random one if missing (call with the lock held)."""
        return self._counters.setdefault(key, counter_seed())

    def counters(self, keys: Sequence[str]) -> list[bytes]:
        with self._lock:
            return [str(self._counter(key)).encode() for key in keys]

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        with self._lock:
            self._entries[key] = value

    def incr_many(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._counters[key] = self._counter(key) + 1

    def ping(self) -> None:
        return None


class DiskBackend(_TwoStepLookup):
    """A SQLite-file store shared by every process on the host (diskcache): the embedded
    default's web server, Celery worker and CLI see each other's invalidations.

    Counters live in a store of their own that never evicts, and start at random values all the
    same (see the module's docstring): one lost with its file does not start again from 0."""

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

    def _counter(self, key: str) -> int:
        value = self._counters.get(key)
        if value is None:
            # `add` stores only if the key is still missing (atomic across processes): of two
            # processes creating the counter at once, both read the first one's value.
            self._counters.add(key, counter_seed())
            value = self._counters.get(key)
        return int(value)

    def counters(self, keys: Sequence[str]) -> list[bytes]:
        try:
            return [str(self._counter(key)).encode() for key in keys]
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        try:
            self._entries.set(key, value, expire=ttl_seconds)
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def incr_many(self, keys: Sequence[str]) -> None:
        try:
            for key in keys:
                self._counters.incr(key, default=counter_seed())
        except diskcache.Timeout as exc:
            raise CacheUnavailable(str(exc)) from exc

    def ping(self) -> None:
        return None
