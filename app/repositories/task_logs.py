"""Queries on the daily task log and the loader's bookkeeping (runs and chunks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import ColumnElement, Date, Select, and_, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import contains_eager

from app.extensions import db
from app.models import Task, TaskStatus
from app.models.enums import LoaderRunState
from app.models.task_log import LoaderChunk, LoaderRun, TaskLogEntry
from app.models.types import UTCDateTime
from app.repositories.counts import Total, bounded_count
from app.repositories.tasks import (
    SORTABLE_COLUMNS,
    TaskFilters,
    TaskScope,
    filtered,
    keyset_keys,
    keyset_order,
    keyset_rows,
    ordered,
    scoped,
    start_of_day,
)

# --- the set-based load ---------------------------------------------------------------------


def _active_tasks() -> list[ColumnElement[bool]]:
    return [Task.status == TaskStatus.ACTIVE, Task.deleted_at.is_(None)]


def active_task_id_bounds() -> tuple[int | None, int | None, int]:
    """Smallest and largest id among active tasks, and how many there are."""
    row = db.session.execute(
        select(func.min(Task.id), func.max(Task.id), func.count()).where(*_active_tasks())
    ).one()
    return row[0], row[1], row[2]


def _dialect_insert() -> postgresql.Insert | sqlite.Insert:
    if db.engine.dialect.name == "postgresql":
        return postgresql.insert(TaskLogEntry)
    return sqlite.insert(TaskLogEntry)


def log_active_tasks_in_range(log_date: date, first_id: int, last_id: int, now: datetime) -> int:
    """INSERT ... SELECT the active tasks with ids in [first_id, last_id] for `log_date`, skipping
    pairs already logged (ON CONFLICT DO NOTHING). One statement; returns rows inserted.

    Rows are selected in id order so that two overlapping loads take row locks in the same
    order and cannot deadlock each other."""
    source = (
        select(
            Task.id,
            literal(log_date, Date),
            Task.status,
            Task.priority,
            Task.assigned_user_id,
            literal(now, UTCDateTime),
            Task.created_at,
        )
        .where(Task.id >= first_id, Task.id <= last_id, *_active_tasks())
        .order_by(Task.id)
    )
    columns = [
        "task_id",
        "log_date",
        "status",
        "priority",
        "assigned_user_id",
        "created_at",
        "task_created_at",
    ]
    stmt = (
        _dialect_insert()
        .from_select(columns, source)
        .on_conflict_do_nothing(index_elements=["task_id", "log_date"])
        # SQLAlchemy keeps cursor.rowcount only for UPDATE and DELETE unless asked: without this
        # an INSERT ... SELECT reads -1 on psycopg (the cursor is closed by then).
        .execution_options(preserve_rowcount=True)
    )
    result = db.session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- runs and chunks ------------------------------------------------------------------------

# The error of a run closed by a later run of its day; such a run may still be alive (a slow
# worker, a concurrent run): its chunks keep running and it can still finish (succeed).
SUPERSEDED_BY = "superseded by run "


def _open_run() -> ColumnElement[bool]:
    """Running, or presumed dead by a later run of its day (superseded)."""
    return or_(
        LoaderRun.state == LoaderRunState.RUNNING,
        and_(
            LoaderRun.state == LoaderRunState.FAILED,
            LoaderRun.error.startswith(SUPERSEDED_BY, autoescape=True),
        ),
    )


def is_open(run: LoaderRun) -> bool:
    return run.state == LoaderRunState.RUNNING or (
        run.state == LoaderRunState.FAILED and (run.error or "").startswith(SUPERSEDED_BY)
    )


def latest_running_run(log_date: date) -> LoaderRun | None:
    return db.session.scalar(
        select(LoaderRun)
        .where(LoaderRun.log_date == log_date, LoaderRun.state == LoaderRunState.RUNNING)
        .order_by(LoaderRun.id.desc())
        .limit(1)
    )


def last_progress_at(run: LoaderRun) -> datetime:
    """When the run last finished a chunk (or started)."""
    last_chunk = db.session.scalar(
        select(func.max(LoaderChunk.done_at)).where(LoaderChunk.run_id == run.id)
    )
    return max(run.started_at, last_chunk) if last_chunk else run.started_at


def add_run(run: LoaderRun, chunks: list[LoaderChunk]) -> LoaderRun:
    db.session.add(run)
    db.session.flush()
    for chunk in chunks:
        chunk.run_id = run.id
    db.session.add_all(chunks)
    return run


def get_run(run_id: int) -> LoaderRun | None:
    return db.session.get(LoaderRun, run_id)


def runs_for_job(job_id: str) -> list[LoaderRun]:
    return list(
        db.session.scalars(
            select(LoaderRun).where(LoaderRun.job_id == job_id).order_by(LoaderRun.id)
        )
    )


def pending_chunk_numbers(run_id: int) -> list[int]:
    return list(
        db.session.scalars(
            select(LoaderChunk.chunk_no)
            .where(LoaderChunk.run_id == run_id, LoaderChunk.done_at.is_(None))
            .order_by(LoaderChunk.chunk_no)
        )
    )


def claim_chunk(run_id: int, chunk_no: int, now: datetime) -> LoaderChunk | None:
    """Mark a chunk done inside the current transaction, atomically: None when it was done
    already (or is being done by a transaction that commits first)."""
    result = db.session.execute(
        update(LoaderChunk)
        .where(
            LoaderChunk.run_id == run_id,
            LoaderChunk.chunk_no == chunk_no,
            LoaderChunk.done_at.is_(None),
        )
        .values(done_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return db.session.scalar(
        select(LoaderChunk).where(LoaderChunk.run_id == run_id, LoaderChunk.chunk_no == chunk_no)
    )


def record_chunk_rows(run_id: int, chunk_no: int, rows: int) -> None:
    db.session.execute(
        update(LoaderChunk)
        .where(LoaderChunk.run_id == run_id, LoaderChunk.chunk_no == chunk_no)
        .values(rows_logged=rows)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(LoaderRun)
        .where(LoaderRun.id == run_id)
        .values(chunks_done=LoaderRun.chunks_done + 1, rows_logged=LoaderRun.rows_logged + rows)
        .execution_options(synchronize_session=False)
    )


def finish_run_if_complete(run_id: int, now: datetime) -> bool:
    """Mark the run succeeded once every chunk is done; True for the one caller that did it."""
    result = db.session.execute(
        update(LoaderRun)
        .where(
            LoaderRun.id == run_id,
            _open_run(),
            LoaderRun.chunks_done >= LoaderRun.chunks_total,
        )
        .values(
            state=LoaderRunState.SUCCEEDED,
            error=None,
            finished_at=now,
            rows_skipped=func.max(LoaderRun.rows_eligible - LoaderRun.rows_logged, 0)
            if db.engine.dialect.name == "sqlite"
            else func.greatest(LoaderRun.rows_eligible - LoaderRun.rows_logged, 0),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def fail_run(run_id: int, error: str, now: datetime) -> None:
    db.session.execute(
        update(LoaderRun)
        .where(LoaderRun.id == run_id, _open_run())
        .values(state=LoaderRunState.FAILED, error=error[:2000], finished_at=now)
        .execution_options(synchronize_session=False)
    )


def supersede_older_runs(run: LoaderRun, now: datetime) -> None:
    """Earlier runs of the same day that have not finished are closed: presumably their process
    died. One that was only slow (or concurrent) goes on and still succeeds (see `_open_run`)."""
    db.session.execute(
        update(LoaderRun)
        .where(
            LoaderRun.log_date == run.log_date,
            LoaderRun.id < run.id,
            LoaderRun.state == LoaderRunState.RUNNING,
        )
        .values(state=LoaderRunState.FAILED, error=f"{SUPERSEDED_BY}{run.id}", finished_at=now)
        .execution_options(synchronize_session=False)
    )


def first_succeeded_log_date() -> date | None:
    """The earliest day ever logged successfully."""
    return db.session.scalar(
        select(func.min(LoaderRun.log_date)).where(LoaderRun.state == LoaderRunState.SUCCEEDED)
    )


def succeeded_dates_between(first: date, last: date) -> set[date]:
    return set(
        db.session.scalars(
            select(LoaderRun.log_date).where(
                LoaderRun.state == LoaderRunState.SUCCEEDED,
                LoaderRun.log_date >= first,
                LoaderRun.log_date <= last,
            )
        )
    )


def recent_runs(limit: int) -> list[LoaderRun]:
    return list(db.session.scalars(select(LoaderRun).order_by(LoaderRun.id.desc()).limit(limit)))


def loader_totals() -> tuple[int, datetime | None]:
    """All rows the loader has logged, and when its latest successful run finished."""
    row = db.session.execute(
        select(
            func.coalesce(func.sum(LoaderRun.rows_logged), 0),
            func.max(LoaderRun.finished_at).filter(LoaderRun.state == LoaderRunState.SUCCEEDED),
        )
    ).one()
    last = row[1]
    if isinstance(last, str):  # SQLite hands back aggregate timestamps as text
        last = datetime.fromisoformat(last).replace(tzinfo=UTC)
    elif last is not None and last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return int(row[0]), last


def rows_logged_per_day(since: date) -> dict[date, int]:
    """Rows the loader logged per log date, from its run records (no scan of the big table)."""
    rows = db.session.execute(
        select(LoaderRun.log_date, func.sum(LoaderRun.rows_logged))
        .where(LoaderRun.log_date >= since)
        .group_by(LoaderRun.log_date)
    ).all()
    return {row[0]: int(row[1] or 0) for row in rows}


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


def _log_order(sort: tuple[tuple[str, bool], ...]) -> list[ColumnElement[Any]]:
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
