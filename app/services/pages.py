"""A page of a list whose total is counted separately, a list's total remembered in the cache
for all of its pages, and a keyset (cursor) page, which has no total."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from typing import Any, Generic, TypeVar

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


TOTALS = "count"  # the kind of value `counted` remembers (see `remembered`)


def counted(what: Any, generations: Sequence[str], count: Callable[[], Total]) -> Total:
    """`count()`, remembered in the response cache under `what` (a repr-able description of the
    query: scope and filters) and guarded by `generations`, like the answers themselves: a
    total that only changes when a write bumps them, counted on a miss by whichever request
    misses it. Stored as ASCII digits, after a `~` when it is an estimate."""
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
    description of the query) and guarded by `generations`: computed on a miss by whoever
    misses it, and served from the cache until a write bumps one of the generations. Nobody
    waits for another's computation: the values remembered here (lists' totals: a bounded
    count or the planner's estimate) cost less to compute than to coordinate. None when there
    is no cache or it is unavailable: the caller then works without (for a total: counts
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
    value = compute()
    cache.set(looked.key, value)
    return value
