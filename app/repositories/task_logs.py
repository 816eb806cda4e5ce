"""Queries on the daily task log and the loader's bookkeeping (runs and chunks)."""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    LargeBinary,
    Select,
    SmallInteger,
    String,
    Subquery,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import contains_eager

from app.database import fixed_plan_engine
from app.extensions import db
from app.models import Task, TaskPriority, TaskStatus
from app.models.enums import LoaderRunState
from app.models.task_log import LoaderChunk, LoaderRun, TaskLogEntry
from app.models.types import UTCDateTime
from app.repositories.driver_cursor import fetch_all
from app.repositories.packed_ids import ID_BYTES, ids_at, ids_value, in_order_of, is_one_of
from app.repositories.tasks import (
    TaskFilters,
    TaskScope,
    filtered,
    on_page,
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
# the day is counted and paged from task_logger's (log_date, task_created_at, task_id) index, and
# only the page's entries are joined to their tasks; otherwise the day is joined to its tasks.

# Sort keys of the task list that the log carries itself.
_LOG_SORT_KEYS = frozenset({"created_at", "id"})


def answerable_from_log(scope: TaskScope, filters: TaskFilters) -> bool:
    """Whether the date view can be read from task_logger alone (deletion aside): every owner,
    filters on the snapshot or on created_at only, sorted on created_at and/or id.

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
    never NULL, so NOT IN means NOT EXISTS). PostgreSQL reads those ids once per statement into
    a hash (a "hashed SubPlan", from their small index) and checks each entry walked against
    it, which keeps the index order: a page costs OFFSET + LIMIT hash probes, not a sort of the
    day. As NOT EXISTS it was an anti-join whose per-entry step cost a page of the day 10,000
    entries deep about half of its time (1.4-1.5 ms against 0.9 ms, EXPLAIN ANALYZE)."""
    return TaskLogEntry.task_id.in_(select(Task.id).where(Task.deleted_at.is_not(None)))


def _log_only_values(filters: TaskFilters) -> dict[str, Any]:
    """The values the fast path binds, by the names `_log_only_conditions` gives them (the day,
    offset and limit aside)."""
    values: dict[str, Any] = {
        "status": filters.status,
        "priority": filters.priority,
        "assigned_user_id": None if filters.unassigned else filters.assigned_user_id,
        "created_from": start_of_day(filters.created_from) if filters.created_from else None,
        "created_to": start_of_day(filters.created_to + timedelta(days=1))
        if filters.created_to
        else None,
    }
    return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class _LogShape:
    """What a fast-path statement depends on, values aside."""

    bound: tuple[str, ...]  # names of the filters with a value (`_log_only_values`)
    unassigned: bool
    include_deleted: bool
    deleted_only: bool

    @classmethod
    def of(cls, scope: TaskScope, filters: TaskFilters, values: dict[str, Any]) -> _LogShape:
        return cls(
            tuple(sorted(values)), filters.unassigned, scope.include_deleted, filters.deleted_only
        )


def _log_only_conditions(shape: _LogShape) -> list[ColumnElement[bool]]:
    """`filtered(scoped(...))` restated on task_logger for `answerable_from_log` cases, with the
    day and every value bound (`:log_date`, and the names of `_log_only_values`)."""
    conditions: list[ColumnElement[bool]] = [TaskLogEntry.log_date == bindparam("log_date")]
    for name, column in (
        ("status", TaskLogEntry.status),
        ("priority", TaskLogEntry.priority),
        ("assigned_user_id", TaskLogEntry.assigned_user_id),
    ):
        if name in shape.bound:
            conditions.append(column == bindparam(name))
    if shape.unassigned:
        conditions.append(TaskLogEntry.assigned_user_id.is_(None))
    if "created_from" in shape.bound:
        conditions.append(TaskLogEntry.task_created_at >= bindparam("created_from"))
    if "created_to" in shape.bound:  # inclusive: bound to the start of the next day
        conditions.append(TaskLogEntry.task_created_at < bindparam("created_to"))
    if not shape.include_deleted:
        conditions.append(~_task_is_deleted())
    if shape.deleted_only:
        conditions.append(_task_is_deleted())
    return conditions


# Fast-path statements are built once per shape, their values bound at execution: building a
# statement and computing its cache key cost more than running it.


@functools.lru_cache(maxsize=256)
def _log_count_statement(shape: _LogShape) -> Select[Any]:
    return select(func.count()).select_from(TaskLogEntry).where(*_log_only_conditions(shape))


def _log_page(shape: _LogShape, sort: tuple[tuple[str, bool], ...]) -> Subquery:
    """The page's task ids, from the index alone (no heap row of a skipped entry is read)."""
    return (
        select(TaskLogEntry.task_id)
        .where(*_log_only_conditions(shape))
        .order_by(*_log_order(sort))
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
        .subquery("page")
    )


# A snapshot's fields (the date view's `log`), by their labels in `_log_page_rows_statement`.
_SNAPSHOT_FIELDS = {
    "log_id": TaskLogEntry.id,
    "log_date": TaskLogEntry.log_date,
    "log_status": TaskLogEntry.status,
    "log_priority": TaskLogEntry.priority,
    "log_assigned_user_id": TaskLogEntry.assigned_user_id,
    "logged_at": TaskLogEntry.created_at,
}
_SNAPSHOT_NAMES = {
    "log_status": "status",
    "log_priority": "priority",
    "log_assigned_user_id": "assigned_user_id",
}


@functools.lru_cache(maxsize=256)
def _log_page_rows_statement(
    shape: _LogShape, sort: tuple[tuple[str, bool], ...], dialect_name: str
) -> Select[Any]:
    """The page's entries as columns: the task's, then its snapshot's (labelled)."""
    snapshot = [column.label(label) for label, column in _SNAPSHOT_FIELDS.items()]
    rows = on_page(
        select(*Task.__table__.columns, *snapshot).select_from(TaskLogEntry),
        TaskLogEntry.task_id,
        _log_page(shape, sort),
        "task_id",
        dialect_name,
    )
    return (
        rows.join(Task, Task.id == TaskLogEntry.task_id)
        .where(TaskLogEntry.log_date == bindparam("log_date"))
        .order_by(*_log_order(sort))
    )


def _log_order(
    sort: tuple[tuple[str, bool], ...],
    task_created_at: Any = TaskLogEntry.task_created_at,
    task_id: Any = TaskLogEntry.task_id,
) -> list[ColumnElement[Any]]:
    """`ordered()` restated on task_logger (or on a subquery's copies of those two columns):
    within a day, task_id is unique and stands for the task's id, task_created_at for its
    created_at, so both orders are the same."""
    columns = {"created_at": task_created_at, "id": task_id}
    clauses = [
        columns[name].desc() if descending else columns[name].asc() for name, descending in sort
    ]
    if not any(name == "id" for name, _ in sort):
        clauses.append(task_id.desc())
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


def count_log_for_date(log_date: date, scope: TaskScope, filters: TaskFilters) -> int:
    """How many entries the date view lists for `log_date`, on every page together."""
    if answerable_from_log(scope, filters):
        values = _log_only_values(filters)
        statement = _log_count_statement(_LogShape.of(scope, filters, values))
        return db.session.scalar(statement, {"log_date": log_date, **values}) or 0
    stmt = _joined(select(func.count()).select_from(TaskLogEntry), log_date, scope, filters)
    return db.session.scalar(stmt) or 0


def log_page_rows(
    log_date: date, scope: TaskScope, filters: TaskFilters, offset: int, limit: int
) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
    """Entries `offset` to `offset + limit` of the date view for `log_date`, in the task list's
    order, as (the task's columns, its snapshot's fields) pairs: one query on task_logger's index
    (`_log_page`), read on the driver's cursor (app.repositories.driver_cursor: no ORM objects to
    build for a page that is serialised at once); None when the question needs the join path
    (`log_entries_for_date`)."""
    if not answerable_from_log(scope, filters):
        return None
    values = _log_only_values(filters)
    shape = _LogShape.of(scope, filters, values)
    engine = fixed_plan_engine()
    statement = _log_page_rows_statement(shape, filters.sort, engine.dialect.name)
    params = {"log_date": log_date, "offset": offset, "limit": limit, **values}
    return _task_and_snapshot_pairs(fetch_all(engine, statement, params))


def _task_and_snapshot_pairs(
    rows: list[dict[str, Any]],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    pairs = []
    for row in rows:
        snapshot = {_SNAPSHOT_NAMES.get(label, label): row.pop(label) for label in _SNAPSHOT_FIELDS}
        pairs.append((row, snapshot))
    return pairs


# --- a day's entries, packed (app.repositories.packed_ids) ----------------------------------

# What the date view remembers of a day for its pages (app.services.task_logs): the day's task ids
# in the view's order (ID_BYTES each), then in the same order each entry's snapshot, so that a
# page reads only its tasks' rows (by id) and no entry of task_logger: half the work of reading
# both (PostgreSQL CPU for a page of 20 scattered entries: ~220 us against ~370 us joined).
# A snapshot: the entry's id (a BIGINT), its assignee (-1 for none: ids are positive), status and
# priority (their enums' positions) and logged_at (microseconds since 2000-01-01 UTC), as
# PostgreSQL's int8send, int4send, int2send and timestamptz_send write them.
_SNAPSHOT = struct.Struct(">qihhq")
ENTRY_BYTES = ID_BYTES + _SNAPSHOT.size  # 28
_NO_ASSIGNEE = -1
_STATUSES = tuple(TaskStatus)
_PRIORITIES = tuple(TaskPriority)
_TIMESTAMP_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _position_in(column: Any, members: tuple[Any, ...]) -> ColumnElement[int]:
    """The enum value of `column` as its member's position in `members`."""
    positions = {member.value: at for at, member in enumerate(members)}
    return cast(case(positions, value=type_coerce(column, String)), SmallInteger)


@functools.lru_cache(maxsize=256)
def _log_entries_statement(
    shape: _LogShape, sort: tuple[tuple[str, bool], ...], dialect_name: str
) -> Select[Any]:
    """The day's entries in the date view's order, at most `:limit` of them: on PostgreSQL as
    two packed values (the task ids, then the snapshots: see `packed_ids_statement` for why the
    aggregates read them in order), elsewhere as rows."""
    entries: Select[Any] = (
        select(  # type: ignore[assignment]
            TaskLogEntry.task_id,
            TaskLogEntry.id,
            cast(func.coalesce(TaskLogEntry.assigned_user_id, _NO_ASSIGNEE), Integer).label(
                "assignee"
            ),
            _position_in(TaskLogEntry.status, _STATUSES).label("status"),
            _position_in(TaskLogEntry.priority, _PRIORITIES).label("priority"),
            TaskLogEntry.created_at,
        )
        .where(*_log_only_conditions(shape))
        .order_by(*_log_order(sort))
        .limit(bindparam("limit", type_=Integer))
    )
    if dialect_name != "postgresql":
        return entries
    day = entries.subquery("day")
    snapshot = (
        func.int8send(day.c.id, type_=LargeBinary)
        .op("||")(func.int4send(day.c.assignee))
        .op("||")(func.int2send(day.c.status))
        .op("||")(func.int2send(day.c.priority))
        .op("||")(func.timestamptz_send(day.c.created_at))
    )
    no_bytes = literal(b"", LargeBinary)
    return select(
        func.string_agg(func.int4send(day.c.task_id), no_bytes),
        func.string_agg(snapshot, no_bytes),
    )


def log_day_entries(
    log_date: date, scope: TaskScope, filters: TaskFilters, limit: int
) -> bytes | None:
    """Every entry of the date view for `log_date`, in its order, packed (ENTRY_BYTES each: see
    `entry_task_ids` and `logged_rows_at`); None when there are more than `limit` or the
    question needs the join path."""
    if not answerable_from_log(scope, filters):
        return None
    values = _log_only_values(filters)
    shape = _LogShape.of(scope, filters, values)
    dialect_name = db.engine.dialect.name
    statement = _log_entries_statement(shape, filters.sort, dialect_name)
    params = {"log_date": log_date, "limit": limit + 1, **values}
    if dialect_name == "postgresql":
        ids, snapshots = db.session.execute(statement, params).one()
        ids, snapshots = ids or b"", snapshots or b""
        if len(snapshots) != len(ids) // ID_BYTES * _SNAPSHOT.size:
            # A NULL part (which the schema rules out) would drop a snapshot from the aggregate
            # and shift every later one: the day is paged the other way instead.
            return None
        packed = ids + snapshots
    else:
        rows = db.session.execute(statement, params).all()
        packed = b"".join(struct.pack(">i", row[0]) for row in rows) + b"".join(
            _SNAPSHOT.pack(row[1], row[2], row[3], row[4], _microseconds_since_epoch(row[5]))
            for row in rows
        )
    return packed if len(packed) <= limit * ENTRY_BYTES else None


def _microseconds_since_epoch(moment: datetime) -> int:
    return (moment - _TIMESTAMP_EPOCH) // timedelta(microseconds=1)


def entry_task_ids(packed: bytes | memoryview, offset: int, count: int) -> list[int]:
    """The task ids of entries `offset` to `offset + count` of a day (`log_day_entries`)."""
    count = min(count, len(packed) // ENTRY_BYTES - offset)
    return ids_at(packed, 0, offset, count) if count > 0 else []


def _snapshots_at(
    packed: bytes | memoryview, log_date: date, offset: int, count: int
) -> list[dict[str, Any]]:
    """The snapshots (LogSnapshot's fields) of entries `offset` to `offset + count`."""
    start = len(packed) // ENTRY_BYTES * ID_BYTES + offset * _SNAPSHOT.size
    snapshots = []
    for at in range(count):
        log_id, assignee, status, priority, logged = _SNAPSHOT.unpack_from(
            packed, start + at * _SNAPSHOT.size
        )
        snapshots.append(
            {
                "log_id": log_id,
                "log_date": log_date,
                "status": _STATUSES[status],
                "priority": _PRIORITIES[priority],
                "assigned_user_id": None if assignee == _NO_ASSIGNEE else assignee,
                "logged_at": _TIMESTAMP_EPOCH + timedelta(microseconds=logged),
            }
        )
    return snapshots


@functools.cache
def _task_rows_statement(dialect_name: str) -> Select[Any]:
    """The columns of the tasks `:task_ids`."""
    return select(*Task.__table__.columns).where(is_one_of(Task.__table__.c.id, dialect_name))


def logged_rows_at(
    log_date: date, packed: bytes | memoryview, offset: int, count: int
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Entries `offset` to `offset + count` of a day (`log_day_entries`), as `log_page_rows`
    gives them: only the tasks' rows are read (a task purged since has none, and its entry is
    left out, as its entries went with it)."""
    task_ids = entry_task_ids(packed, offset, count)
    if not task_ids:
        return []
    snapshots = _snapshots_at(packed, log_date, offset, len(task_ids))
    snapshot_of = dict(zip(task_ids, snapshots, strict=True))
    engine = fixed_plan_engine()
    dialect_name = engine.dialect.name
    params = {"task_ids": ids_value(task_ids, dialect_name)}
    rows = fetch_all(engine, _task_rows_statement(dialect_name), params)
    return [(row, snapshot_of[row["id"]]) for row in in_order_of(task_ids, rows, "id")]


def log_entries_for_date(
    log_date: date, scope: TaskScope, filters: TaskFilters, offset: int, limit: int
) -> list[TaskLogEntry]:
    """The same page by the general form (`_joined`), each entry with its task loaded, in one
    query: the questions `log_page_rows` leaves, and the reference its tests compare with."""
    stmt = _joined(select(TaskLogEntry), log_date, scope, filters)
    stmt = ordered(stmt, filters.sort).offset(offset).limit(limit)
    stmt = stmt.options(contains_eager(TaskLogEntry.task))  # the task rides along
    return list(db.session.scalars(stmt))


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
