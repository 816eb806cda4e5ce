"""The task list's orders: the fields a list may be sorted on, and the ORDER BY they give."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select

from app.models import Task

# (field name, descending) pairs; field names are validated by the schema.
SortTerms = tuple[tuple[str, bool], ...]

SORTABLE_COLUMNS: dict[str, Any] = {
    "id": Task.id,
    "task_name": Task.task_name,
    "status": Task.status,
    # LOW < MEDIUM < HIGH < CRITICAL, not alphabetical: the stored rank an index holds.
    "priority": Task.priority_rank,
    "created_at": Task.created_at,
    "updated_at": Task.updated_at,
    "due_date": Task.due_date,
}


NULLABLE_SORT_KEYS = frozenset({"due_date"})


def ordered(stmt: Select[Any], sort: SortTerms) -> Select[Any]:
    """`stmt` ordered by `sort`, ties broken by id (newest first), tasks without a due date last."""
    clauses: list[ColumnElement[Any]] = []
    for name, descending in sort:
        column = SORTABLE_COLUMNS[name]
        clause = column.desc() if descending else column.asc()
        if name in NULLABLE_SORT_KEYS:
            # Backends disagree on where NULLs go (SQLite first, PostgreSQL last when ascending):
            # tasks without a value go last in both directions, everywhere.
            clause = clause.nulls_last()
        clauses.append(clause)
    if not any(name == "id" for name, _ in sort):
        clauses.append(Task.id.desc())  # a stable order, so pages never overlap
    return stmt.order_by(*clauses)
