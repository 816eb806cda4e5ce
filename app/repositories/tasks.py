"""Queries on tasks and their audit trail."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    CompoundSelect,
    Date,
    Integer,
    Select,
    Table,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql import Subquery

from app.extensions import db
from app.models import Task, TaskAuditEntry, TaskPriority, TaskStatus
from app.repositories.counts import Total, bounded_count
from app.repositories.keyset import keyset_keys, keyset_order, keyset_rows
from app.repositories.task_order import SORTABLE_COLUMNS, SortTerms, ordered
from app.repositories.write_lock import lock_sqlite_for_writing

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
    sort: SortTerms = field(default=(("created_at", True),))


def start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _owned_by(owner: int | BindParameter[int]) -> ColumnElement[bool]:
    return or_(Task.assigned_user_id == owner, Task.created_by_id == owner)


def _scope_conditions(
    include_deleted: bool, owner: int | BindParameter[int] | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [] if include_deleted else [Task.deleted_at.is_(None)]
    if owner is not None:
        conditions.append(_owned_by(owner))
    return conditions


def scoped(stmt: Select[Any], scope: TaskScope) -> Select[Any]:
    return stmt.where(*_scope_conditions(scope.include_deleted, scope.owner_id))


def scope_parts(stmt: Select[Any], scope: TaskScope) -> list[Select[Any]]:
    """`scoped(stmt, scope)` as disjoint selects whose rows together are its rows, each one range
    of an index in the list's default order. A user's scope is two: the tasks assigned to them
    (ix_task_manager_assigned_user_id_created_at_id), and those they created and are not
    assigned to them (ix_task_manager_created_by_id_created_at_id, which holds the assignee).
    Their OR would be a BitmapOr of both, every one of the user's tasks read and sorted before
    the first page: a cost that grows with the user's tasks."""
    live = [] if scope.include_deleted else [Task.deleted_at.is_(None)]
    owner = scope.owner_id
    if owner is None:
        return [stmt.where(*live)]
    return [
        stmt.where(*live, Task.assigned_user_id == owner),
        stmt.where(
            *live, Task.created_by_id == owner, Task.assigned_user_id.is_distinct_from(owner)
        ),
    ]


def _bound_owner(owned: bool) -> BindParameter[int] | None:
    """The owner of a scope as a bound `:owner_id`, for statements built once per shape."""
    return bindparam("owner_id", type_=Integer) if owned else None


def _visible_task_params(task_id: int, scope: TaskScope) -> dict[str, Any]:
    """The values the visible-task statements bind (`:owner_id` only in a scoped one)."""
    if scope.owner_id is None:
        return {"task_id": task_id}
    return {"task_id": task_id, "owner_id": scope.owner_id}


@functools.cache
def _visible_task_statement(owned: bool, include_deleted: bool) -> Select[Any]:
    """`get_visible_task`'s statement, built once per shape with its values bound at execution:
    building a statement and computing its cache key cost more than running it."""
    return select(Task).where(
        Task.id == bindparam("task_id"), *_scope_conditions(include_deleted, _bound_owner(owned))
    )


def get_visible_task(task_id: int, scope: TaskScope) -> Task | None:
    owned = scope.owner_id is not None
    stmt = _visible_task_statement(owned, scope.include_deleted)
    params = _visible_task_params(task_id, scope)
    task: Task | None = db.session.scalar(stmt, params)
    return task


def get_task_any_state(task_id: int) -> Task | None:
    return db.session.get(Task, task_id)


def filtered(stmt: Select[Any], filters: TaskFilters) -> Select[Any]:
    conditions: list[ColumnElement[bool]] = []
    if filters.status is not None:
        conditions.append(Task.status == filters.status)
    if filters.priority is not None:
        conditions.append(Task.priority == filters.priority)
    if filters.unassigned:
        conditions.append(Task.assigned_user_id.is_(None))
    elif filters.assigned_user_id is not None:
        conditions.append(Task.assigned_user_id == filters.assigned_user_id)
    if filters.created_from is not None:
        conditions.append(Task.created_at >= start_of_day(filters.created_from))
    if filters.created_to is not None:  # inclusive: the whole of that day
        conditions.append(Task.created_at < start_of_day(filters.created_to + timedelta(days=1)))
    if filters.due_from is not None:
        conditions.append(Task.due_date >= filters.due_from)
    if filters.due_to is not None:
        conditions.append(Task.due_date <= filters.due_to)
    if filters.deleted_only:
        conditions.append(Task.deleted_at.is_not(None))
    if filters.q:
        conditions.append(
            or_(
                Task.task_name.icontains(filters.q, autoescape=True),
                Task.description.icontains(filters.q, autoescape=True),
            )
        )
    return stmt.where(*conditions)


def count_tasks(scope: TaskScope, filters: TaskFilters, exact_up_to: int) -> Total:
    """How many tasks the list holds: exact up to `exact_up_to`, estimated above."""
    parts = [filtered(part, filters) for part in scope_parts(select(Task.id), scope)]
    rows: Select[Any] | CompoundSelect[Any] = parts[0] if len(parts) == 1 else union_all(*parts)
    return bounded_count(rows, exact_up_to)


def _page_rows(
    scope: TaskScope,
    filters: TaskFilters,
    position: Sequence[Any] | None,
    limit: int,
    offset: int = 0,
) -> Subquery:
    """`keyset_rows` of the list: the page's ids (`row_id`) and sort keys."""
    return keyset_rows(
        [filtered(part, filters) for part in scope_parts(select(Task.id.label("row_id")), scope)],
        lambda stmt: ordered(stmt, filters.sort),
        SORTABLE_COLUMNS,
        filters.sort,
        position,
        limit,
        offset,
    )


def tasks_page(scope: TaskScope, filters: TaskFilters, offset: int, limit: int) -> list[Task]:
    """One page of the list. The page's ids are found first and only those rows read: finding
    them walks (and skips OFFSET) entries of an index that covers the common lists (live tasks,
    status and priority filters, created_at or id order), never the table's rows."""
    page = _page_rows(scope, filters, None, limit, offset)
    stmt = (
        select(Task)
        .join(page, Task.id == page.c.row_id)
        .order_by(*keyset_order(page, filters.sort))
    )
    return list(db.session.scalars(stmt))


def tasks_after(
    scope: TaskScope, filters: TaskFilters, position: Sequence[Any] | None, limit: int
) -> list[tuple[Task, tuple[Any, ...]]]:
    """Up to `limit` tasks of the list after `position` (None: from the start), in the list's
    order, each with its own position: no OFFSET, no count. As `tasks_page`, the page's ids (and
    keys) are found first, on an index, and only those rows read."""
    page = _page_rows(scope, filters, position, limit)
    stmt = (
        select(Task, *keyset_keys(page, filters.sort))
        .join(page, Task.id == page.c.row_id)
        .order_by(*keyset_order(page, filters.sort))
    )
    return [(row[0], tuple(row[1:])) for row in db.session.execute(stmt)]


def add_task(task: Task) -> Task:
    db.session.add(task)
    db.session.flush()
    return task


def delete_task_row(task: Task) -> None:
    db.session.delete(task)
    db.session.flush()


def add_audit_entry(values: dict[str, Any]) -> None:
    """INSERT an audit row (the ORM's unit of work costs more than the statement here)."""
    table: Table = TaskAuditEntry.__table__  # type: ignore[assignment]
    db.session.execute(insert(table), values)


def get_task_for_update(task_id: int, scope: TaskScope) -> Task | None:
    """The visible task with its row locked in the session's transaction until it ends: a write
    decided on it cannot race another one."""
    lock_sqlite_for_writing()
    stmt = _visible_task_statement(scope.owner_id is not None, scope.include_deleted)
    # populate_existing: the row as locked, not an older copy the session may hold.
    locked = stmt.with_for_update().execution_options(populate_existing=True)
    task: Task | None = db.session.scalar(locked, _visible_task_params(task_id, scope))
    return task


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
