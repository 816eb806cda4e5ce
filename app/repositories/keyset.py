"""Keyset (cursor) pages of the task list and of the date view.

A keyset page starts right after the last row the client was given, named by that row's sort
keys (its position): `WHERE <scope, filters> AND <after the position> ORDER BY <sort> LIMIT n`
reads n rows at any depth, where OFFSET walks every row it skips. Inserting or deleting rows
between pages moves no other row's position, so a walk meets every row that stays, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, literal, select, tuple_, union_all
from sqlalchemy.sql import Subquery
from sqlalchemy.types import TypeDecorator

from app.repositories.task_order import NULLABLE_SORT_KEYS, SORTABLE_COLUMNS, SortTerms


def keyset_terms(sort: SortTerms) -> SortTerms:
    """The keys a position is made of: the sort's terms up to `id` (unique, so nothing after it
    decides an order), else the sort's terms and `id` newest first, the tie-breaker `ordered`
    adds."""
    terms: list[tuple[str, bool]] = []
    for name, descending in sort:
        terms.append((name, descending))
        if name == "id":
            return tuple(terms)
    return (*terms, ("id", True))


def _python_type(name: str) -> type:
    sql_type = SORTABLE_COLUMNS[name].type
    if isinstance(sql_type, TypeDecorator):  # UTCDateTime: a datetime, as its impl says
        sql_type = sql_type.impl_instance
    python_type: type = sql_type.python_type
    return python_type


def _key_value(name: str, value: Any) -> Any:
    if value is None:
        if name in NULLABLE_SORT_KEYS:
            return None
        raise ValueError(f"{name} is never null")
    expected = _python_type(name)
    if issubclass(expected, Enum):
        return expected(value)  # ValueError for a name the enum does not have
    # Exact types: a datetime is a date, a bool an int, and neither is the other key's value.
    if type(value) is not expected or (isinstance(value, datetime) and value.tzinfo is None):
        raise ValueError(f"not a value of {name}")
    return value


def keyset_position(sort: SortTerms, values: Sequence[Any]) -> tuple[Any, ...]:
    """A position a client sent back (JSON values, dates and datetimes restored) as the values
    the ORM gives for the sort's keys; ValueError when it cannot be one of this sort's."""
    terms = keyset_terms(sort)
    if len(values) != len(terms):
        raise ValueError(f"expected {len(terms)} sort key values, got {len(values)}")
    return tuple(_key_value(name, value) for (name, _), value in zip(terms, values, strict=True))


@dataclass(frozen=True)
class _Key:
    """One key of a position: its column, direction and the position's value on it."""

    column: ColumnElement[Any]
    descending: bool
    nullable: bool
    value: Any

    def bound(self) -> ColumnElement[Any]:
        # Bound with the column's type, so it is stored as the column stores it (UTCDateTime
        # binds naive UTC text on SQLite, where a compared string must match that form).
        return literal(self.value, self.column.type)

    def equal(self) -> ColumnElement[bool]:
        return self.column.is_(None) if self.value is None else self.column == self.bound()

    def later(self) -> list[ColumnElement[bool]]:
        """Rows whose key sorts strictly after the position's, as disjoint conditions. NULLs go
        last either way, as in `ordered`: after a value come the larger (or smaller) values and
        then the NULLs; after a NULL, nothing."""
        if self.value is None:
            return []
        later = self.column < self.bound() if self.descending else self.column > self.bound()
        return [later, self.column.is_(None)] if self.nullable else [later]


def _row_value_after(keys: Sequence[_Key]) -> ColumnElement[bool] | None:
    """Keys in one direction, none nullable: "after" is one row-value comparison, one range of
    an index in that order. None for other keys."""
    if len({key.descending for key in keys}) != 1 or any(key.nullable for key in keys):
        return None
    row = tuple_(*(key.column for key in keys))
    bound = tuple_(*(key.bound() for key in keys))
    return row < bound if keys[0].descending else row > bound


def after_position(
    columns: Mapping[str, Any], sort: SortTerms, position: Sequence[Any]
) -> list[ColumnElement[bool]]:
    """Rows that come after `position` in the order `ordered` gives `sort`, as disjoint
    conditions (their OR is the whole), each one range of an index on the sort's keys.

    The order compares keys one after the other: a row comes after when it ties the position
    on the first k keys and comes after it on the next one, for some k (an OR of ANDs). From the
    first key on which the rest are all in one direction and none nullable, the remaining ANDs
    are one row-value comparison `(a, b, id) > (:a, :b, :id)` (`<` descending): with every key
    in one direction that is the whole condition. A nullable key's "after" is the values past
    the position's, or NULL (NULLs last), two conditions."""
    keys = [
        _Key(columns[name], descending, name in NULLABLE_SORT_KEYS, value)
        for (name, descending), value in zip(keyset_terms(sort), position, strict=True)
    ]
    alternatives: list[ColumnElement[bool]] = []
    ties: list[ColumnElement[bool]] = []
    for at, key in enumerate(keys):
        rest = _row_value_after(keys[at:])
        if rest is not None:
            return [*alternatives, and_(*ties, rest)]
        alternatives += [and_(*ties, later) for later in key.later()]
        ties.append(key.equal())
    return alternatives  # never empty: the last key, id, is never NULL


KEY_LABEL = "sort_key_{}"


def _key_columns(columns: Mapping[str, Any], sort: SortTerms) -> list[ColumnElement[Any]]:
    return [columns[name] for name, _ in keyset_terms(sort)]


def keyset_rows(
    bases: Sequence[Select[Any]],
    order: Callable[[Select[Any]], Select[Any]],
    columns: Mapping[str, Any],
    sort: SortTerms,
    position: Sequence[Any] | None,
    limit: int,
    offset: int = 0,
) -> Subquery:
    """Rows `offset` to `offset + limit` of `bases` (disjoint selects, together the list) after
    `position` (None: from the start), as a subquery of their columns and the rows' sort keys
    (KEY_LABEL); a select of it has them in no order (see `keyset_order`).

    Each base selects what identifies a row, scoped and filtered; `order` orders a select by the
    sort. Each base with each condition of `after_position` is read as `WHERE <base's> AND
    <condition> ORDER BY <sort> LIMIT :offset + :limit`: one range of an index, which stops
    after that many rows. One OR of them would not: an index in the sort's order serves a
    mixed-direction or nullable order's OR only as a filter, walking every row before the
    position (all of them for a nullable first key, whose NULLs are a range of their own). With
    several parts the page is taken from their rows (UNION ALL), at most offset + limit of each,
    sorted (a few rows).
    """
    keys = [
        column.label(KEY_LABEL.format(n)) for n, column in enumerate(_key_columns(columns, sort))
    ]
    conditions = [None] if position is None else after_position(columns, sort, position)
    parts = [
        order(base.add_columns(*keys).where(*([] if condition is None else [condition])))
        for base in bases
        for condition in conditions
    ]
    if len(parts) == 1:
        return parts[0].offset(offset or None).limit(limit).subquery("page")
    # Each part as a subquery of its own: SQLite takes no ORDER BY or LIMIT in a UNION's parts.
    candidates = union_all(
        *(select(part.limit(offset + limit).subquery()) for part in parts)
    ).subquery("candidates")
    return (
        select(candidates)
        .order_by(*keyset_order(candidates, sort))
        .offset(offset or None)
        .limit(limit)
        .subquery("page")
    )


def keyset_keys(page: Subquery, sort: SortTerms) -> list[ColumnElement[Any]]:
    """The sort key columns of `keyset_rows`' page: each row's own position."""
    return [page.c[KEY_LABEL.format(n)] for n in range(len(keyset_terms(sort)))]


def keyset_order(page: Subquery, sort: SortTerms) -> list[ColumnElement[Any]]:
    """`ordered`'s order on the sort key columns of `keyset_rows`' page."""
    clauses: list[ColumnElement[Any]] = []
    for (name, descending), key in zip(keyset_terms(sort), keyset_keys(page, sort), strict=True):
        clause = key.desc() if descending else key.asc()
        clauses.append(clause.nulls_last() if name in NULLABLE_SORT_KEYS else clause)
    return clauses
