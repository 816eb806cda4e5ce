"""The response cache: versioned keys, exact invalidation, and graceful degradation.

Every cached answer's key embeds the current values of the generation counters that guard it
(a global one, the caller's visibility scope, and e.g. one task or one log date). A write bumps
the counters of everything it could change, so every answer that could contain the written task
becomes unreachable at once: no sweep over keys, no stale read. Unreachable entries expire by TTL.

When the store fails (down, or slower than its timeout) the cache is bypassed for a short while
and requests are answered from the database. A process that saw the store fail bumps the global
generation first thing when the store answers again, so entries written before the outage cannot
be served after it: not only the bumps it missed itself, but those another process (worker) may
have missed during the same outage. A process that noticed no outage learns of another's missed
bump only when that one replays it (on its next use of the cache).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from cachetools import TTLCache
from pydantic import TypeAdapter, ValidationError

from app.cache.backends import CacheBackend, CacheUnavailable, versioned

log = logging.getLogger(__name__)

GLOBAL_GENERATION = "gen:global"
# What a process keeps copies of (a list's total or ordered ids, a day's entries: read for every
# page of that list), bounded by size: an entry costs its bytes plus about this much for its key.
# A day of 100,000 entries takes 2.8 MB (app.repositories.task_logs.ENTRY_BYTES each), a list of
# 100,000 tasks 0.4 MB: room for ten days and the lists most asked for.
LOCAL_COPY_BYTES = 64 * 1024 * 1024
LOCAL_COPY_OVERHEAD = 200


# What every stored entry's key starts with (answers, and what lists remember beside them).
ENTRY_KEY_PREFIX = "resp:"


def _entry_key(prefix: str, versions: Sequence[bytes]) -> str:
    return versioned(f"{ENTRY_KEY_PREFIX}{prefix}", versions)


def scope_generation(scope: str) -> str:
    return f"gen:scope:{scope}"


def task_generation(task_id: int) -> str:
    return f"gen:task:{task_id}"


# Bumped when a task's deleted state changes or its row goes (soft delete, restore, purge): with
# a day's counter it guards what the date view reads from the log alone (a day's entries),
# which no other change to a task can alter (the log's snapshots and creation times are fixed).
DELETIONS_GENERATION = "gen:deletions"


def auth_generation(user_id: int) -> str:
    """Bumped when the user's role or active flag changes or one of their sessions is revoked:
    it guards what a process remembers of that user's sessions (app.auth.session_memory)."""
    return f"gen:auth:{user_id}"


_DAY = TypeAdapter(date)


def date_generation(day: str) -> str:
    """The counter of one day's log. `day` is read the way the query schema reads `?date=`, so
    every spelling it accepts (`2024-03-01`, `2024-03-01T00:00:00`, a midnight Unix timestamp)
    names the counter the loader bumps (`date.isoformat()`)."""
    with contextlib.suppress(ValidationError):  # not a day: refused (422), nothing cached
        day = _DAY.validate_python(day).isoformat()
    return f"gen:date:{day}"


@dataclass(frozen=True)
class Lookup:
    key: str  # where the answer is (or is to be) stored
    entry: bytes | None  # the stored answer, if any
    counters: list[bytes]  # values of the global counter, the key's generations (and also_read)
    also_read: list[bytes]  # values of the extra counters read along
    counter_names: tuple[str, ...] = ()  # the names of `counters`, in order

    def counter_values(self) -> dict[str, bytes]:
        named = self.counters[: len(self.counter_names)]  # `also_read`'s values follow them
        return dict(zip(self.counter_names, named, strict=True))


@dataclass(frozen=True)
class CacheStatus:
    backend: str
    healthy: bool


class ResponseCache:
    def __init__(
        self, backend: CacheBackend, ttl_seconds: int, retry_after_seconds: float = 5.0
    ) -> None:
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self._retry_after = retry_after_seconds
        self._down_until = 0.0
        # Failures seen, and how many of them a global bump made since covers. Counted rather
        # than flagged, so a replay cannot clear a failure that happened while it ran.
        self._failures = 0
        self._failures_replayed = 0
        self._lock = threading.Lock()
        self._work_locks = tuple(threading.Lock() for _ in range(64))
        # This process's copies of entries read again and again (a list's total or ids, a
        # day's entries, for every page of it): by prefix, the one copy of its latest versioned
        # key read here (a write makes the next read take a new key, and the copy under the old
        # one, which will never be read again, goes instead of piling up until the size bound);
        # exact for as long as the key is current, and dropped when the entry would expire (the
        # TTL also bounds a change made outside the app, which bumps nothing).
        self._copies: TTLCache[str, tuple[str, bytes]] = TTLCache(
            maxsize=LOCAL_COPY_BYTES,
            ttl=ttl_seconds,
            getsizeof=lambda copy: len(copy[1]) + LOCAL_COPY_OVERHEAD,
        )
        self._copies_lock = threading.Lock()

    def local_lock(self, work: str) -> threading.Lock:
        """A lock of this process for the work named `work` (one of a fixed set, by hash): the
        threads about to do the same work take turns, and the later ones find it done. Other
        processes coordinate through `claim`."""
        return self._work_locks[hash(work) % len(self._work_locks)]

    # --- health ---------------------------------------------------------------------------

    @property
    def _missed_bumps(self) -> bool:
        return self._failures != self._failures_replayed

    def _replayed(self, failures: int) -> None:
        with self._lock:
            self._failures_replayed = max(self._failures_replayed, failures)

    def _available(self) -> bool:
        if time.monotonic() < self._down_until:
            return False
        if self._missed_bumps:
            return self._replay_missed_bumps()
        return True

    def _failed(self, exc: CacheUnavailable) -> None:
        with self._lock:
            if time.monotonic() >= self._down_until:
                log.warning("cache %s unavailable, bypassing it: %s", self.backend.name, exc)
            self._down_until = time.monotonic() + self._retry_after
            # Writes (here or in other processes) may have lost their bumps during this outage:
            # invalidate everything on recovery.
            self._failures += 1

    def _replay_missed_bumps(self) -> bool:
        failures = self._failures
        try:
            self.backend.incr_many([GLOBAL_GENERATION])
        except CacheUnavailable as exc:
            self._failed(exc)
            return False
        self._replayed(failures)
        log.info("cache %s is back; invalidated everything cached before", self.backend.name)
        return True

    def status(self) -> CacheStatus:
        try:
            self.backend.ping()
        except CacheUnavailable as exc:
            self._failed(exc)
            return CacheStatus(self.backend.name, healthy=False)
        if self._missed_bumps:
            self._replay_missed_bumps()
        return CacheStatus(self.backend.name, healthy=True)

    # --- reads and writes -----------------------------------------------------------------

    def counters(self, generations: Sequence[str]) -> list[bytes] | None:
        """The current values of the global counter and then of each of `generations` (b"0"
        for one never bumped); None when the store is unavailable (bypass the cache)."""
        if not self._available():
            return None
        try:
            values = self.backend.get_many([GLOBAL_GENERATION, *generations])
        except CacheUnavailable as exc:
            self._failed(exc)
            return None
        return [v or b"0" for v in values]

    def lookup(
        self, prefix: str, generations: Sequence[str], also_read: Sequence[str] = ()
    ) -> Lookup | None:
        """One read: the entry for `prefix` under the current values of the global counter and
        `generations`, plus the values of the counters `also_read` (not part of the key);
        None when the store is unavailable (bypass the cache)."""
        if not self._available():
            return None
        names = [GLOBAL_GENERATION, *generations]
        try:
            values, entry = self.backend.lookup(
                [*names, *also_read], f"{ENTRY_KEY_PREFIX}{prefix}", versioned_by=len(names)
            )
        except CacheUnavailable as exc:
            self._failed(exc)
            return None
        return Lookup(
            key=_entry_key(prefix, values[: len(names)]),
            entry=entry,
            counters=values,
            also_read=values[len(names) :],
            counter_names=tuple(names),
        )

    def key_for(
        self, prefix: str, generations: Sequence[str], known: Mapping[str, bytes]
    ) -> str | None:
        """The key `lookup` would give for `prefix` if the counters still have the values
        `known` (read by an earlier lookup, e.g. this request's own); None unless every one of
        them is known."""
        names = [GLOBAL_GENERATION, *generations]
        if not all(name in known for name in names):
            return None
        return _entry_key(prefix, [known[name] for name in names])

    def local_copy(self, prefix: str, key: str) -> bytes | None:
        """This process's copy of the entry under `key` (of `prefix`: see `keep_local_copy`)."""
        with self._copies_lock:
            copy = self._copies.get(prefix)
        return copy[1] if copy is not None and copy[0] == key else None

    def keep_local_copy(self, prefix: str, key: str, value: bytes) -> None:
        """Keep an entry of `prefix` in this process too, in place of any other version of it:
        a versioned key names one value forever. One larger than the whole budget is not kept."""
        if len(value) + LOCAL_COPY_OVERHEAD > LOCAL_COPY_BYTES:
            return
        with self._copies_lock:
            self._copies[prefix] = (key, value)

    def set(self, key: str, value: bytes) -> None:
        try:
            self.backend.set(key, value, self.ttl_seconds)
        except CacheUnavailable as exc:
            self._failed(exc)

    def claim(self, key: str, seconds: float) -> bool:
        """Take the work named `key` for `seconds`, across processes: False if another holds
        it. True when the store is unavailable (nobody can coordinate: everyone works)."""
        if not self._available():
            return True
        try:
            return self.backend.claim(key, seconds)
        except CacheUnavailable as exc:
            self._failed(exc)
            return True

    def release(self, key: str) -> None:
        """Give up a claim (the work failed): the others need not wait for it any longer."""
        try:
            self.backend.release(key)
        except CacheUnavailable as exc:
            self._failed(exc)

    def bump(self, generations: Sequence[str]) -> None:
        """Make every answer guarded by these counters unreachable (and replay a missed bump)."""
        failures = self._failures
        replay = self._missed_bumps
        names = [*generations, GLOBAL_GENERATION] if replay else list(generations)
        try:
            self.backend.incr_many(names)
        except CacheUnavailable as exc:
            self._failed(exc)
            return
        if replay:
            self._replayed(failures)
