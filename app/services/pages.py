"""A page of a list whose total is counted separately (and may come from the count cache)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any, Generic, TypeVar

from app.cache.store import ResponseCache
from app.services.context import response_cache

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """The shape the API's pagination helpers read (as Flask-SQLAlchemy's Pagination)."""

    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return ceil(self.total / self.per_page) if self.total else 0

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


# Threads of a process that miss the same count wait for the first one's answer instead of all
# scanning the same rows at once (a day of the log: 100,000 rows each); across processes, the
# first to claim the count in the cache counts, and the others wait for its total.
# How long the others wait for a claimed count before counting themselves (its process died).
COUNT_CLAIM_SECONDS = 5.0
_FIRST_POLL_SECONDS, _LAST_POLL_SECONDS = 0.002, 0.05


def counted(what: Any, generations: Sequence[str], count: Callable[[], int]) -> int:
    """`count()`, remembered in the response cache under `what` (a repr-able description of the
    query: scope and filters) and guarded by `generations`, like the answers themselves: an
    exact total that only changes when a write bumps them. A deep list's count is what costs:
    it scans every matching row, where a page reads only its own."""
    cache = response_cache()
    if cache is None:
        return count()
    prefix = f"count:{hashlib.sha256(repr(what).encode()).hexdigest()[:40]}"
    looked = cache.lookup(prefix, generations)
    if looked is not None and looked.entry is not None:
        return int(looked.entry)
    if looked is None:  # the cache is unavailable
        return count()
    with cache.local_lock(prefix):
        again = cache.lookup(prefix, generations)  # counted while this one waited?
        if again is not None and again.entry is not None:
            return int(again.entry)
        key = (again or looked).key
        if not cache.claim(f"{key}:counting", COUNT_CLAIM_SECONDS):
            total = _counted_elsewhere(cache, prefix, generations, key)
            if total is not None:
                return total
        total = count()
        cache.set(key, str(total).encode())
    return total


def _counted_elsewhere(
    cache: ResponseCache, prefix: str, generations: Sequence[str], key: str
) -> int | None:
    """The total another process claimed to count, once it is stored; None if it is not stored
    within the claim's time, or the generations moved on (a write: that total would be stale)."""
    deadline = time.monotonic() + COUNT_CLAIM_SECONDS
    pause = _FIRST_POLL_SECONDS
    while time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, _LAST_POLL_SECONDS)
        looked = cache.lookup(prefix, generations)
        if looked is None or looked.key != key:
            return None
        if looked.entry is not None:
            return int(looked.entry)
    return None
