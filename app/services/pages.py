"""A page of a list whose total is counted separately, a list's total remembered in the cache
for all of its pages, and a keyset (cursor) page, which has no total."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any, Generic, TypeVar

from app.cache.store import ResponseCache
from app.repositories.counts import Total
from app.services.context import response_cache

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """The shape the API's pagination helpers read (as Flask-SQLAlchemy's Pagination)."""

    items: list[T]
    page: int
    per_page: int
    total: int
    total_is_estimate: bool = False  # the planner's estimate of a large list (repositories.counts)

    @property
    def pages(self) -> int:
        return ceil(self.total / self.per_page) if self.total else 0

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


@dataclass
class CursorPage(Generic[T]):
    """A keyset page: its items and, when more follow, the position (sort key values) of its
    last item, which the next page starts after."""

    items: list[T]
    next_after: tuple[Any, ...] | None


def cursor_page(rows: Sequence[tuple[T, tuple[Any, ...]]], limit: int) -> CursorPage[T]:
    """The page of `rows` (items with their positions) read with one row more than `limit`:
    that extra row, never shown, says whether a next page exists."""
    shown = rows[:limit]
    more = len(rows) > limit
    return CursorPage([item for item, _ in shown], shown[-1][1] if more else None)


# Threads of a process that miss the same count wait for the first one's answer instead of all
# scanning the same rows at once; across processes, the first to claim it in the cache computes
# it, and the others wait for its value (or take the claim over if that fails). How long the
# others wait for a claimed value before computing it themselves (the claimer's process died):
COUNT_CLAIM_SECONDS = 5.0
# The pause between polls doubles up to 10 ms: a count takes 10-40 ms, and a longer pause would
# keep a waiter waiting well after the value is there.
_FIRST_POLL_SECONDS, _LAST_POLL_SECONDS = 0.002, 0.01


TOTALS = "count"  # the kind of value `counted` remembers (see `remembered`)


def counted(what: Any, generations: Sequence[str], count: Callable[[], Total]) -> Total:
    """`count()`, remembered in the response cache under `what` (a repr-able description of the
    query: scope and filters) and guarded by `generations`, like the answers themselves: a
    total that only changes when a write bumps them. Stored as ASCII digits, after a `~` when
    it is an estimate."""
    stored = remembered(TOTALS, what, generations, lambda: _encoded(count()))
    return count() if stored is None else _decoded(stored)


def _encoded(total: Total) -> bytes:
    return f"{'~' if total.estimated else ''}{total.value}".encode()


def _decoded(stored: bytes) -> Total:
    estimated = stored.startswith(b"~")
    return Total(int(stored.removeprefix(b"~")), estimated)


def remembered(
    kind: str, what: Any, generations: Sequence[str], compute: Callable[[], bytes]
) -> bytes | None:
    """`compute()`, stored in the response cache under `kind` and `what` (a repr-able
    description of the query) and guarded by `generations`: computed once per generation by
    one thread of one process while the others wait for it (see COUNT_CLAIM_SECONDS). None when
    there is no cache or it is unavailable: the caller then works without (for a total: counts
    itself)."""
    cache = response_cache()
    if cache is None:
        return None
    prefix = f"{kind}:{hashlib.sha256(repr(what).encode()).hexdigest()[:40]}"
    looked = cache.lookup(prefix, generations)
    if looked is None:  # the cache is unavailable
        return None
    if looked.entry is not None:
        return looked.entry
    with cache.local_lock(prefix):
        again = cache.lookup(prefix, generations)  # computed while this one waited?
        if again is not None and again.entry is not None:
            return again.entry
        key = (again or looked).key
        claim = f"{key}:computing"
        elsewhere = _claim_or_wait(cache, claim, prefix, generations, key)
        if elsewhere is not None:
            return elsewhere
        try:
            value = compute()
        except BaseException:
            cache.release(claim)  # a waiter takes the claim and computes instead
            raise
        cache.set(key, value)
    return value


def _claim_or_wait(
    cache: ResponseCache, claim: str, prefix: str, generations: Sequence[str], key: str
) -> bytes | None:
    """None once this thread should compute: it holds the claim, or waited out the claim's
    time, or the generations moved on (a write: the value being computed would be stale). Else
    the value another process computed and stored under `key`."""
    deadline = time.monotonic() + COUNT_CLAIM_SECONDS
    pause = _FIRST_POLL_SECONDS
    while not cache.claim(claim, COUNT_CLAIM_SECONDS) and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, _LAST_POLL_SECONDS)
        looked = cache.lookup(prefix, generations)
        if looked is None or looked.key != key:
            return None
        if looked.entry is not None:
            return looked.entry
    return None
