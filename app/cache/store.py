"""The response cache: versioned keys, exact invalidation, and graceful degradation.

Every cached answer's key embeds the current values of the generation counters that guard it
(a global one, the caller's visibility scope, and e.g. one task or one log date). A write bumps
the counters of everything it could change, so every answer that could contain the written task
becomes unreachable at once: no sweep over keys, no stale read. Unreachable entries expire by TTL.
The same counters guard what each process remembers of verified sessions
(app.auth.session_memory): the global one and `gen:auth:<user>`. Counters start at random values
(app.cache.backends), so one that is evicted or lost never comes back to a value it had.

When the store fails (down, or slower than its timeout) the cache is bypassed for a short while
and requests are answered from the database. A process that saw the store fail owes a global
bump, and bypasses the cache until it has made it: entries written before the outage cannot be
served after it, not only for the bumps it missed itself, but for those another process (worker)
may have missed during the same outage.

A write's bumps are not best-effort. After its commit (app.cache.invalidation):

1. They are sent; most of the time that is all.
2. If that fails, the write retries them in its request, after 10 ms then doubling up to 200 ms
   between tries, and answers only once they have landed, for at most its patience:
   `REVOCATION_PATIENCE_SECONDS` for bumps that guard sessions (an auth counter, or the global
   one), `BUMP_PATIENCE_SECONDS` for the others (enough to ride out a blip). A write that guards
   answers only does not wait at all while a background replay (3.) is already running: the
   store has been failing for longer than a blip, and the replay covers its bump too.
3. A bump that has not landed by then is owed as a global bump, which a thread of the process
   keeps retrying (200 ms apart) until it lands, for as long as an answer cached before could
   still be served (the cache's TTL); the process bypasses the cache meanwhile.

Why no process can accept a revoked session once the revocation has been answered, even one
whose own reads of the store never failed (the writer alone is cut off from the store, or the
store is down and back before that process notices): either the bump landed before the answer,
and every process reads the moved counter; or the write waited `REVOCATION_PATIENCE_SECONDS`
after its commit, longer than any process trusts a remembered session
(app.auth.session_memory.TRUST_SECONDS), so every memory of the session verified before the
commit has run out and the next request asks the database. Cached answers get the same retries;
after a bump given up, another process that noticed no outage may serve an answer cached before
it until the replay lands (within 200 ms of the store answering this process again).
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

from app.auth.session_memory import TRUST_SECONDS
from app.cache.backends import CacheBackend, CacheUnavailable, versioned

log = logging.getLogger(__name__)

# A failed bump is tried again after 10 ms, then twice as long each time, 200 ms at most.
FIRST_RETRY_SECONDS = 0.01
LONGEST_RETRY_SECONDS = 0.2
# How long a write waits for bumps that guard sessions to land: longer than any process trusts
# a remembered session without asking the database (see the module's docstring).
REVOCATION_PATIENCE_SECONDS = TRUST_SECONDS + 0.5
# How long a write waits for bumps that guard answers only: a blip of the store.
BUMP_PATIENCE_SECONDS = 0.5

GLOBAL_GENERATION = "gen:global"
# What every stored entry's key starts with (answers, and the lists' totals beside them). The
# number is the format of what is stored (an answer's headers as JSON, a newline, its body; a
# total in ASCII digits, after a `~` when estimated): a change of format changes it, so that no
# process reads an entry written in another format (during a rolling deploy, say).
ENTRY_FORMAT = 2
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


AUTH_GENERATION_PREFIX = "gen:auth:"


def auth_generation(user_id: int) -> str:
    """Bumped when the user's role or active flag changes or one of their sessions is revoked:
    it guards what a process remembers of that user's sessions (app.auth.session_memory)."""
    return f"{AUTH_GENERATION_PREFIX}{user_id}"


def guards_sessions(generations: Sequence[str]) -> bool:
    """Whether bumping these counters ends or alters sessions that processes remember."""
    return any(
        name == GLOBAL_GENERATION or name.startswith(AUTH_GENERATION_PREFIX) for name in generations
    )


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
        self._bump_failed_at = 0.0  # time.monotonic() of the last failed try of a write's bump
        self._replayer: threading.Thread | None = None  # retrying the owed global bump
        self._lock = threading.Lock()

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

    def _failed(self, exc: CacheUnavailable, retrying: bool = False) -> None:
        """Record a failure; logged if it starts an outage, unless it is a retry's (the first
        try's was)."""
        with self._lock:
            if not retrying and time.monotonic() >= self._down_until:
                log.warning("cache %s unavailable, bypassing it: %s", self.backend.name, exc)
            self._down_until = time.monotonic() + self._retry_after
            # Writes (here or in other processes) may have lost their bumps during this outage:
            # invalidate everything on recovery.
            self._failures += 1

    def _replay_missed_bumps(self, retrying: bool = False) -> bool:
        failures = self._failures
        try:
            self.backend.incr_many([GLOBAL_GENERATION])
        except CacheUnavailable as exc:
            self._failed(exc, retrying)
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
        """The current values of the global counter and then of each of `generations` (a
        missing one created at a random value); None when the store is unavailable (bypass the
        cache)."""
        if not self._available():
            return None
        try:
            return self.backend.counters([GLOBAL_GENERATION, *generations])
        except CacheUnavailable as exc:
            self._failed(exc)
            return None

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

    # --- bumps -----------------------------------------------------------------------------

    def bump(self, generations: Sequence[str]) -> None:
        """Make every answer guarded by these counters unreachable, and every remembered session
        they guard untrusted. Retried until it lands, the caller (the write) waiting for it up to
        its patience; past that, owed as a global bump replayed in the background. See the
        module's docstring."""
        names = list(generations)
        started = time.monotonic()
        if self._try_bump(names):
            return
        revokes = guards_sessions(names)
        if not revokes and self._replaying():
            return  # a known outage: the running replay covers this bump, no use waiting
        patience = REVOCATION_PATIENCE_SECONDS if revokes else BUMP_PATIENCE_SECONDS
        if self._retry_bump(names, deadline=started + patience):
            return
        log.warning(
            "cache %s: a bump of %s did not land within %.1f s; replaying it in the background",
            self.backend.name,
            ", ".join(names),
            patience,
        )
        self._replay_in_background()

    def _try_bump(self, names: Sequence[str], retrying: bool = False) -> bool:
        """One try of a write's bump, with the global bump this process owes, if any."""
        failures = self._failures
        replay = self._missed_bumps
        try:
            self.backend.incr_many([*names, GLOBAL_GENERATION] if replay else list(names))
        except CacheUnavailable as exc:
            self._bump_failed_at = time.monotonic()
            self._failed(exc, retrying)
            return False
        if replay:
            self._replayed(failures)
        return True

    def _retry_bump(self, names: Sequence[str], deadline: float) -> bool:
        """Try again until the bump lands (True) or `deadline` (time.monotonic()) has passed
        (False): a write that gives up has waited until its deadline."""
        delay = FIRST_RETRY_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(delay, remaining))
            if self._try_bump(names, retrying=True):
                return True
            delay = min(2 * delay, LONGEST_RETRY_SECONDS)
        return False

    def _replaying(self) -> bool:
        replayer = self._replayer
        # A thread started before a fork is not alive in the child: the child starts its own.
        return replayer is not None and replayer.is_alive()

    def _replay_in_background(self) -> None:
        with self._lock:
            if self._replaying():
                return
            self._replayer = threading.Thread(
                target=self._keep_replaying, name="cache-bump-replay", daemon=True
            )
            self._replayer.start()

    def _keep_replaying(self) -> None:
        """Retry the owed global bump until it lands, without waiting for this process's next
        request: the other processes stop serving what it guards as soon as the store answers
        again. Given up once every answer cached before the last failed bump has expired (its
        TTL; sessions are trusted for far less): then nothing is left for it to protect, and the
        process replays on its next use of the cache as after any failure."""
        delay = FIRST_RETRY_SECONDS
        while True:
            with self._lock:
                expired = time.monotonic() > self._bump_failed_at + self.ttl_seconds
                if not self._missed_bumps or expired:
                    self._replayer = None
                    return
            time.sleep(delay)
            self._replay_missed_bumps(retrying=True)
            delay = min(2 * delay, LONGEST_RETRY_SECONDS)
