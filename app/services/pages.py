"""A page of a list whose total is counted separately (and may come from the count cache)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any, Generic, TypeVar

from app.cache.request_counters import noted_counters
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
# first to claim the count in the cache counts, and the others wait for its total (or take the
# claim over if that count fails). How long the others wait for a claimed count before counting
# themselves (the claimer's process died):
COUNT_CLAIM_SECONDS = 5.0
# The pause between polls doubles up to 10 ms: a count takes 10-40 ms, and a longer pause would
# keep a waiter waiting well after the total is there.
_FIRST_POLL_SECONDS, _LAST_POLL_SECONDS = 0.002, 0.01


def counted(what: Any, generations: Sequence[str], count: Callable[[], int]) -> int:
    """`count()`, remembered in the response cache under `what` (a repr-able description of the
    query: scope and filters) and guarded by `generations`, like the answers themselves: an
    exact total that only changes when a write bumps them. A deep list's count is what costs:
    it scans every matching row, where a page reads only its own."""
    cache = response_cache()
    if cache is None:
        return count()
    prefix = f"count:{hashlib.sha256(repr(what).encode()).hexdigest()[:40]}"
    # Under the counters' values this request's answer was looked up with, this process may
    # hold the total already (every other page of the same list): no round trip then.
    known_key = cache.key_for(prefix, generations, noted_counters())
    if known_key is not None and (copy := cache.local_copy(known_key)) is not None:
        return int(copy)
    looked = cache.lookup(prefix, generations)
    if looked is not None and looked.entry is not None:
        return _kept(cache, looked.key, int(looked.entry))
    if looked is None:  # the cache is unavailable
        return count()
    with cache.local_lock(prefix):
        again = cache.lookup(prefix, generations)  # counted while this one waited?
        if again is not None and again.entry is not None:
            return _kept(cache, again.key, int(again.entry))
        key = (again or looked).key
        claim = f"{key}:counting"
        elsewhere = _claim_or_wait(cache, claim, prefix, generations, key)
        if elsewhere is not None:
            return _kept(cache, key, elsewhere)
        try:
            total = count()
        except BaseException:
            cache.release(claim)  # a waiter takes the claim and counts instead
            raise
        cache.set(key, str(total).encode())
    return _kept(cache, key, total)


def _kept(cache: ResponseCache, key: str, total: int) -> int:
    cache.keep_local_copy(key, str(total).encode())
    return total


def _claim_or_wait(
    cache: ResponseCache, claim: str, prefix: str, generations: Sequence[str], key: str
) -> int | None:
    """None once this thread should count: it holds the claim, or waited out the claim's time,
    or the generations moved on (a write: the total being counted would be stale). Else the
    total another process counted and stored under `key`."""
    deadline = time.monotonic() + COUNT_CLAIM_SECONDS
    pause = _FIRST_POLL_SECONDS
    while not cache.claim(claim, COUNT_CLAIM_SECONDS) and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, _LAST_POLL_SECONDS)
        looked = cache.lookup(prefix, generations)
        if looked is None or looked.key != key:
            return None
        if looked.entry is not None:
            return int(looked.entry)
    return None
