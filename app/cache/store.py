"""The response cache: versioned keys, exact invalidation, and graceful degradation.

Every cached answer's key embeds the current values of the generation counters that guard it
(a global one, the caller's visibility scope, and e.g. one task or one log date). A write bumps
the counters of everything it could change, so every answer that could contain the written task
becomes unreachable at once: no sweep over keys, no stale read. Unreachable entries expire by TTL.

When the store fails (down, or slower than its timeout) the cache is bypassed for a short while
and requests are answered from the database. A bump that could not be made is remembered, and the
global generation is bumped first thing when the store answers again, so entries written before
the outage cannot be served after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.cache.backends import CacheBackend, CacheUnavailable

log = logging.getLogger(__name__)

GLOBAL_GENERATION = "gen:global"


def scope_generation(scope: str) -> str:
    return f"gen:scope:{scope}"


def task_generation(task_id: int) -> str:
    return f"gen:task:{task_id}"


def date_generation(day: str) -> str:
    return f"gen:date:{day}"


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
        self._missed_bumps = False
        self._lock = threading.Lock()

    # --- health ---------------------------------------------------------------------------

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

    def _replay_missed_bumps(self) -> bool:
        try:
            self.backend.incr_many([GLOBAL_GENERATION])
        except CacheUnavailable as exc:
            self._failed(exc)
            return False
        self._missed_bumps = False
        log.info("cache %s is back; invalidated everything cached before", self.backend.name)
        return True

    def status(self) -> CacheStatus:
        try:
            self.backend.ping()
        except CacheUnavailable as exc:
            self._failed(exc)
            return CacheStatus(self.backend.name, healthy=False)
        return CacheStatus(self.backend.name, healthy=True)

    # --- reads and writes -----------------------------------------------------------------

    def versioned_key(self, prefix: str, generations: Sequence[str]) -> str | None:
        """`prefix` plus the current value of each generation counter (and the global one);
        None when the store is unavailable (bypass the cache)."""
        if not self._available():
            return None
        names = [GLOBAL_GENERATION, *generations]
        try:
            values = self.backend.get_many(names)
        except CacheUnavailable as exc:
            self._failed(exc)
            return None
        versions = ".".join((v or b"0").decode() for v in values)
        return f"resp:{prefix}:v{versions}"

    def get(self, key: str) -> bytes | None:
        try:
            return self.backend.get_many([key])[0]
        except CacheUnavailable as exc:
            self._failed(exc)
            return None

    def set(self, key: str, value: bytes) -> None:
        try:
            self.backend.set(key, value, self.ttl_seconds)
        except CacheUnavailable as exc:
            self._failed(exc)

    def bump(self, generations: Sequence[str]) -> None:
        """Make every answer guarded by these counters unreachable."""
        try:
            self.backend.incr_many(list(generations))
        except CacheUnavailable as exc:
            self._missed_bumps = True
            self._failed(exc)
