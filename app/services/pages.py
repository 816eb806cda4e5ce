"""A page of a list whose total is counted separately (and may come from the count cache)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any, Generic, TypeVar

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


# Striped locks: threads of a process that miss the same count wait for the first one's answer
# instead of all scanning the same rows at once (a day of the log: 100,000 rows each).
_COUNT_LOCKS = tuple(threading.Lock() for _ in range(64))


def counted(what: Any, generations: Sequence[str], count: Callable[[], int]) -> int:
    """`count()`, remembered in the response cache under `what` (a repr-able description of the
    query: scope and filters) and guarded by `generations`, like the answers themselves: an
    exact total that only changes when a write bumps them. A deep list's count is what costs:
    it scans every matching row, where a page reads only its own."""
    cache = response_cache()
    if cache is None:
        return count()
    digest = hashlib.sha256(repr(what).encode()).hexdigest()[:40]
    looked = cache.lookup(f"count:{digest}", generations)
    if looked is not None and looked.entry is not None:
        return int(looked.entry)
    if looked is None:  # the cache is unavailable
        return count()
    with _COUNT_LOCKS[hash(digest) % len(_COUNT_LOCKS)]:
        again = cache.lookup(f"count:{digest}", generations)  # counted while this one waited?
        if again is not None and again.entry is not None:
            return int(again.entry)
        total = count()
        cache.set((again or looked).key, str(total).encode())
    return total
