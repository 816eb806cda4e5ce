"""Reading the daily task log: the date view, one entry, and a task's history of entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.orm import contains_eager

from app.extensions import db
from app.models import Task
from app.models.task_log import TaskLogEntry
from app.repositories.counts import Total, bounded_count
from app.repositories.keyset import keyset_keys, keyset_order, keyset_rows
from app.repositories.task_order import SORTABLE_COLUMNS, SortTerms, ordered
from app.repositories.tasks import TaskFilters, TaskScope, filtered, scoped, start_of_day

# --- reading the log ------------------------------------------------------------------------


# The date view lists a day's entries like the task list lists tasks. When nothing but the task's
# created_at (copied into the log as task_created_at), its id and whether it is deleted matters,
# the page's entries are found on task_logger's (log_date, task_created_at, task_id) index and
# only those are joined to their tasks; otherwise the day is joined to its tasks.

# Sort keys of the task list that the log carries itself.
_LOG_SORT_KEYS = frozenset({"created_at", "id"})


def answerable_from_log(scope: TaskScope, filters: TaskFilters) -> bool:
    """Whether the date view's page can be found on task_logger alone (deletion aside): every
    owner, filters on the snapshot or on created_at only, sorted on created_at and/or id.

    Written as "everything else is at its default" so that a scope or filter added later takes
    the general path until it is taught here."""
    handled = replace(
        filters,
        status=None,
        priority=None,
        assigned_user_id=None,
        unassigned=False,
        created_from=None,
        created_to=None,
        deleted_only=False,
        sort=TaskFilters().sort,
    )
    return (
        replace(scope, include_deleted=False) == TaskScope(owner_id=None)
        and handled == TaskFilters()
        and all(name in _LOG_SORT_KEYS for name, _ in filters.sort)
    )


def _snapshot_conditions(log_date: date, filters: TaskFilters) -> list[ColumnElement[bool]]:
    """The day, and the status, priority and assignee filters applied to that day's snapshot."""
    conditions = [TaskLogEntry.log_date == log_date]
    if filters.status is not None:
        conditions.append(TaskLogEntry.status == filters.status)
    if filters.priority is not None:
        conditions.append(TaskLogEntry.priority == filters.priority)
    if filters.unassigned:
        conditions.append(TaskLogEntry.assigned_user_id.is_(None))
    elif filters.assigned_user_id is not None:
        conditions.append(TaskLogEntry.assigned_user_id == filters.assigned_user_id)
    return conditions


def _task_is_deleted() -> ColumnElement[bool]:
    """The entry's task is soft-deleted: its id is one of the soft-deleted tasks' (a task id is
    never NULL, so NOT IN means NOT EXISTS). PostgreSQL reads those few ids once per statement
    into a hash (a "hashed SubPlan", from their partial index) and checks each entry walked
    against it, which keeps the index order: a page costs OFFSET + LIMIT hash probes, not a
    sort of the day."""
    return TaskLogEntry.task_id.in_(select(Task.id).where(Task.deleted_at.is_not(None)))


def _log_only_conditions(
    log_date: date, scope: TaskScope, filters: TaskFilters
) -> list[ColumnElement[bool]]:
    """`_joined`'s conditions restated on task_logger, for `answerable_from_log` cases."""
    conditions = _snapshot_conditions(log_date, filters)
    if filters.created_from is not None:
        conditions.append(TaskLogEntry.task_created_at >= start_of_day(filters.created_from))
    if filters.created_to is not None:  # inclusive: the whole of that day
        next_day = start_of_day(filters.created_to + timedelta(days=1))
        conditions.append(TaskLogEntry.task_created_at < next_day)
    if not scope.include_deleted:
        conditions.append(~_task_is_deleted())
    if filters.deleted_only:
        conditions.append(_task_is_deleted())
    return conditions


# The task list's sort keys restated on task_logger (the keys of _LOG_SORT_KEYS).
_LOG_SORT_COLUMNS: dict[str, Any] = {
    "created_at": TaskLogEntry.task_created_at,
    "id": TaskLogEntry.task_id,
}


def _log_order(sort: SortTerms) -> list[ColumnElement[Any]]:
    """`ordered()` restated on task_logger: within a day, task_id is unique and stands for the
    task's id, task_created_at for its created_at, so both orders are the same."""
    columns = _LOG_SORT_COLUMNS
    clauses: list[ColumnElement[Any]] = [
        columns[name].desc() if descending else columns[name].asc() for name, descending in sort
    ]
    if not any(name == "id" for name, _ in sort):
        clauses.append(TaskLogEntry.task_id.desc())
    return clauses


def _joined(
    stmt: Select[Any], log_date: date, scope: TaskScope, filters: TaskFilters
) -> Select[Any]:
    """The general form: the day's entries joined to their tasks, scoped and filtered like the
    task list, except status, priority and assignee, which apply to the snapshot."""
    task_filters = replace(
        filters, status=None, priority=None, assigned_user_id=None, unassigned=False
    )
    stmt = stmt.join(TaskLogEntry.task).where(*_snapshot_conditions(log_date, filters))
    return filtered(scoped(stmt, scope), task_filters)


def count_log_for_date(
    log_date: date, scope: TaskScope, filters: TaskFilters, exact_up_to: int
) -> Total:
    """How many entries the date view lists for `log_date`, on every page together: exact up
    to `exact_up_to`, estimated above."""
    if answerable_from_log(scope, filters):
        conditions = _log_only_conditions(log_date, scope, filters)
        rows = select(TaskLogEntry.task_id).where(*conditions)
    else:
        rows = _joined(select(TaskLogEntry.task_id), log_date, scope, filters)
    return bounded_count(rows, exact_up_to)


def log_entries_for_date(
    log_date: date, scope: TaskScope, filters: TaskFilters, offset: int, limit: int
) -> list[TaskLogEntry]:
    """Entries `offset` to `offset + limit` of the date view for `log_date`, in the task list's
    order, each with its task loaded, in one query. Where the log alone can find them
    (`answerable_from_log`), the page's entries are found on task_logger's index and only those
    joined to their tasks; otherwise the whole day is joined to its tasks and filtered."""
    if answerable_from_log(scope, filters):
        # The page's task ids only: with the day and the order they are the index's own
        # columns, so the entries skipped by OFFSET are read from the index alone.
        page = (
            select(TaskLogEntry.task_id)
            .where(*_log_only_conditions(log_date, scope, filters))
            .order_by(*_log_order(filters.sort))
            .offset(offset)
            .limit(limit)
            .subquery("page")
        )
        stmt = (
            select(TaskLogEntry)
            .join(page, TaskLogEntry.task_id == page.c.task_id)
            .join(TaskLogEntry.task)
            .where(TaskLogEntry.log_date == log_date)
            .order_by(*_log_order(filters.sort))
        )
    else:
        stmt = _joined(select(TaskLogEntry), log_date, scope, filters)
        stmt = ordered(stmt, filters.sort).offset(offset).limit(limit)
    stmt = stmt.options(contains_eager(TaskLogEntry.task))  # the task rides along
    return list(db.session.scalars(stmt))


def log_entries_after(
    log_date: date,
    scope: TaskScope,
    filters: TaskFilters,
    position: Sequence[Any] | None,
    limit: int,
) -> list[tuple[TaskLogEntry, tuple[Any, ...]]]:
    """Up to `limit` entries of the date view for `log_date` after `position` (None: from the
    start), in the task list's order, each with its task loaded and its own position, in one
    query: no OFFSET, no count. The page's entries are found on task_logger's index where the
    log alone can find them (`answerable_from_log`: created_at and id, the position's keys, are
    its columns), else on the day joined to its tasks; only those are then read whole."""
    sort = filters.sort
    if answerable_from_log(scope, filters):
        base = select(TaskLogEntry.task_id.label("row_id")).where(
            *_log_only_conditions(log_date, scope, filters)
        )
        page = keyset_rows(
            [base],
            lambda stmt: stmt.order_by(*_log_order(sort)),
            _LOG_SORT_COLUMNS,
            sort,
            position,
            limit,
        )
        # Within a day task_id is unique: it names the entry.
        found = and_(TaskLogEntry.task_id == page.c.row_id, TaskLogEntry.log_date == log_date)
    else:
        base = _joined(select(TaskLogEntry.id.label("row_id")), log_date, scope, filters)
        page = keyset_rows(
            [base], lambda stmt: ordered(stmt, sort), SORTABLE_COLUMNS, sort, position, limit
        )
        found = TaskLogEntry.id == page.c.row_id
    stmt = (
        select(TaskLogEntry, *keyset_keys(page, sort))
        .join(page, found)
        .join(TaskLogEntry.task)
        .options(contains_eager(TaskLogEntry.task))  # the task rides along
        .order_by(*keyset_order(page, sort))
    )
    return [(row[0], tuple(row[1:])) for row in db.session.execute(stmt)]


def get_log_entry(log_id: int, scope: TaskScope) -> TaskLogEntry | None:
    stmt = (
        select(TaskLogEntry)
        .join(TaskLogEntry.task)
        .options(contains_eager(TaskLogEntry.task))
        .where(TaskLogEntry.id == log_id)
    )
    entry: TaskLogEntry | None = db.session.scalar(scoped(stmt, scope))
    return entry


def page_task_log(task_id: int, page: int, per_page: int) -> Pagination:
    stmt = (
        select(TaskLogEntry)
        .where(TaskLogEntry.task_id == task_id)
        .order_by(TaskLogEntry.log_date.desc(), TaskLogEntry.id.desc())
    )
    return db.paginate(stmt, page=page, per_page=per_page, error_out=False)
