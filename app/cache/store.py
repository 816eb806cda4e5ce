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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from pydantic import TypeAdapter, ValidationError

from app.cache.backends import CacheBackend, CacheUnavailable, versioned

log = logging.getLogger(__name__)

GLOBAL_GENERATION = "gen:global"
# What every stored entry's key starts with (answers, and the lists' totals beside them). The
# number is the format of what is stored (an answer's headers as JSON, a newline, its body; a
# total in ASCII digits): a change of format changes it, so that no process reads an entry
# written in another format (during a rolling deploy, say).
ENTRY_FORMAT = 1
ENTRY_KEY_PREFIX = f"resp{ENTRY_FORMAT}:"


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
        )

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
