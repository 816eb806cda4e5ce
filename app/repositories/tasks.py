"""Queries on tasks and their audit trail."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import ColumnElement, Date, Select, case, cast, func, or_, select

from app.extensions import db
from app.models import Task, TaskAuditEntry, TaskPriority, TaskStatus
from app.models.enums import PRIORITY_ORDER

# Every id column is a 32-bit INTEGER: a larger id matches no row, and binding one overflows the
# driver (SQLite) or the column type (PostgreSQL), so such ids are answered without a query.


@dataclass(frozen=True)
class TaskScope:
    """Which tasks a caller may see: all (owner_id None) or those assigned to or created by
    `owner_id`; soft-deleted ones only when `include_deleted`."""

    owner_id: int | None
    include_deleted: bool = False


@dataclass(frozen=True)
class TaskFilters:
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    assigned_user_id: int | None = None
    unassigned: bool = False
    q: str | None = None
    created_from: date | None = None
    created_to: date | None = None
    due_from: date | None = None
    due_to: date | None = None
    deleted_only: bool = False
    # (field name, descending) pairs; field names are validated by the schema.
    sort: tuple[tuple[str, bool], ...] = field(default=(("created_at", True),))


_PRIORITY_RANK = case({p.value: rank for rank, p in enumerate(PRIORITY_ORDER)}, value=Task.priority)

SORTABLE_COLUMNS: dict[str, Any] = {
    "id": Task.id,
    "task_name": Task.task_name,
    "status": Task.status,
    "priority": _PRIORITY_RANK,  # LOW < MEDIUM < HIGH < CRITICAL, not alphabetical
    "created_at": Task.created_at,
    "updated_at": Task.updated_at,
    "due_date": Task.due_date,
}


NULLABLE_SORT_KEYS = frozenset({"due_date"})


def start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def scoped(stmt: Select[Any], scope: TaskScope) -> Select[Any]:
    if not scope.include_deleted:
        stmt = stmt.where(Task.deleted_at.is_(None))
    if scope.owner_id is not None:
        stmt = stmt.where(
            or_(Task.assigned_user_id == scope.owner_id, Task.created_by_id == scope.owner_id)
        )
    return stmt


def get_visible_task(task_id: int, scope: TaskScope, *, for_update: bool = False) -> Task | None:
    stmt = scoped(select(Task).where(Task.id == task_id), scope)
    if for_update:
        stmt = stmt.with_for_update()
    task: Task | None = db.session.scalar(stmt)
    return task


def get_task_any_state(task_id: int) -> Task | None:
    return db.session.get(Task, task_id)


def filtered(stmt: Select[Any], filters: TaskFilters) -> Select[Any]:
    if filters.status is not None:
        stmt = stmt.where(Task.status == filters.status)
    if filters.priority is not None:
        stmt = stmt.where(Task.priority == filters.priority)
    if filters.unassigned:
        stmt = stmt.where(Task.assigned_user_id.is_(None))
    elif filters.assigned_user_id is not None:
        stmt = stmt.where(Task.assigned_user_id == filters.assigned_user_id)
    if filters.q:
        stmt = stmt.where(
            or_(
                Task.task_name.icontains(filters.q, autoescape=True),
                Task.description.icontains(filters.q, autoescape=True),
            )
        )
    if filters.created_from is not None:
        stmt = stmt.where(Task.created_at >= start_of_day(filters.created_from))
    if filters.created_to is not None:  # inclusive: the whole of that day
        stmt = stmt.where(Task.created_at < start_of_day(filters.created_to + timedelta(days=1)))
    if filters.due_from is not None:
        stmt = stmt.where(Task.due_date >= filters.due_from)
    if filters.due_to is not None:
        stmt = stmt.where(Task.due_date <= filters.due_to)
    if filters.deleted_only:
        stmt = stmt.where(Task.deleted_at.is_not(None))
    return stmt


def ordered(stmt: Select[Any], sort: tuple[tuple[str, bool], ...]) -> Select[Any]:
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


def count_tasks(scope: TaskScope, filters: TaskFilters) -> int:
    stmt = filtered(scoped(select(func.count()).select_from(Task), scope), filters)
    return db.session.scalar(stmt) or 0


def tasks_page(scope: TaskScope, filters: TaskFilters, offset: int, limit: int) -> list[Task]:
    """One page of the list. The page's ids are found first and only those rows read: finding
    them walks (and skips OFFSET) entries of an index that covers the common lists (live tasks,
    status and priority filters, created_at or id order), never the table's rows."""
    page_ids = (
        ordered(filtered(scoped(select(Task.id), scope), filters), filters.sort)
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    stmt = ordered(select(Task).join(page_ids, Task.id == page_ids.c.id), filters.sort)
    return list(db.session.scalars(stmt))


def add_task(task: Task) -> Task:
    db.session.add(task)
    db.session.flush()
    return task


def delete_task_row(task: Task) -> None:
    db.session.delete(task)
    db.session.flush()


def add_audit_entry(entry: TaskAuditEntry) -> None:
    db.session.add(entry)


def page_audit_entries(task_id: int, page: int, per_page: int) -> Pagination:
    stmt = (
        select(TaskAuditEntry)
        .where(TaskAuditEntry.task_id == task_id)
        .order_by(TaskAuditEntry.created_at.desc(), TaskAuditEntry.id.desc())
    )
    return db.paginate(stmt, page=page, per_page=per_page, error_out=False)


# --- dashboard aggregates -------------------------------------------------------------------


def count_live_tasks_by(column_name: str) -> dict[str, int]:
    column = getattr(Task, column_name)
    rows = db.session.execute(
        select(column, func.count()).where(Task.deleted_at.is_(None)).group_by(column)
    ).all()
    return {row[0].value: row[1] for row in rows}


def count_soft_deleted() -> int:
    return db.session.scalar(select(func.count()).where(Task.deleted_at.is_not(None))) or 0


def count_created_per_day(since: date) -> dict[date, int]:
    """Tasks created per UTC day from `since` on (live and soft-deleted alike)."""
    if db.engine.dialect.name == "sqlite":
        day: ColumnElement[Any] = func.date(Task.created_at)  # stored as naive UTC text
    else:
        day = cast(Task.created_at, Date)  # the session time zone is UTC
    rows = db.session.execute(
        select(day.label("day"), func.count())
        .where(Task.created_at >= start_of_day(since))
        .group_by("day")
    ).all()
    return {(r[0] if isinstance(r[0], date) else date.fromisoformat(r[0])): r[1] for r in rows}
