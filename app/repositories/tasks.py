"""Queries on tasks and their audit trail."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Date,
    Integer,
    Select,
    Subquery,
    Table,
    Update,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.dml import ReturningInsert

from app.database import fixed_plan_engine
from app.extensions import db
from app.models import Task, TaskAuditEntry, TaskPriority, TaskStatus
from app.models.enums import PRIORITY_ORDER
from app.repositories.driver_cursor import fetch_all, fetch_one
from app.repositories.packed_ids import (
    ids_value,
    in_order_of,
    is_one_of,
    packed_ids_statement,
    read_packed_ids,
)

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


@functools.cache
def _visible_task_row_statement(owned: bool, include_deleted: bool) -> Select[Any]:
    return select(*Task.__table__.columns).where(
        Task.id == bindparam("task_id"), *_scope_conditions(include_deleted, _bound_owner(owned))
    )


def visible_task_row(task_id: int, scope: TaskScope) -> dict[str, Any] | None:
    """`get_visible_task`'s task as its column values, read on the driver's cursor instead of
    the ORM session (app.repositories.driver_cursor): for the hot-path middleware's misses, where
    the session's and SQLAlchemy's per-statement work cost more than the query."""
    owned = scope.owner_id is not None
    stmt = _visible_task_row_statement(owned, scope.include_deleted)
    params = _visible_task_params(task_id, scope)
    return fetch_one(fixed_plan_engine(), stmt, params)


def get_task_any_state(task_id: int) -> Task | None:
    return db.session.get(Task, task_id)


# The filters that compare a column with a value: (name, the value a filter set asks for or None,
# the condition on a value). Table-driven so that a page's statement can be built once per shape,
# with bound parameters (task_rows_page), and still read the same as `filtered`.
ValueFilter = tuple[str, Callable[[TaskFilters], Any], Callable[[Any], ColumnElement[bool]]]
VALUE_FILTERS: tuple[ValueFilter, ...] = (
    ("status", lambda f: f.status, lambda v: Task.status == v),
    ("priority", lambda f: f.priority, lambda v: Task.priority == v),
    (
        "assigned_user_id",
        lambda f: None if f.unassigned else f.assigned_user_id,
        lambda v: Task.assigned_user_id == v,
    ),
    (
        "created_from",
        lambda f: start_of_day(f.created_from) if f.created_from is not None else None,
        lambda v: Task.created_at >= v,
    ),
    (
        "created_to",  # inclusive: the whole of that day
        lambda f: (
            start_of_day(f.created_to + timedelta(days=1)) if f.created_to is not None else None
        ),
        lambda v: Task.created_at < v,
    ),
    ("due_from", lambda f: f.due_from, lambda v: Task.due_date >= v),
    ("due_to", lambda f: f.due_to, lambda v: Task.due_date <= v),
)


def _flag_conditions(filters: TaskFilters) -> list[ColumnElement[bool]]:
    """The filters without a value to bind."""
    conditions: list[ColumnElement[bool]] = []
    if filters.unassigned:
        conditions.append(Task.assigned_user_id.is_(None))
    if filters.deleted_only:
        conditions.append(Task.deleted_at.is_not(None))
    return conditions


def filtered(stmt: Select[Any], filters: TaskFilters) -> Select[Any]:
    conditions = [
        condition(value)
        for _, value_of, condition in VALUE_FILTERS
        if (value := value_of(filters)) is not None
    ]
    if filters.q:
        conditions.append(
            or_(
                Task.task_name.icontains(filters.q, autoescape=True),
                Task.description.icontains(filters.q, autoescape=True),
            )
        )
    return stmt.where(*conditions, *_flag_conditions(filters))


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


@dataclass(frozen=True)
class _PageShape:
    """What a page's statement depends on, values aside."""

    owned: bool
    include_deleted: bool
    bound_filters: tuple[str, ...]
    unassigned: bool
    deleted_only: bool
    sort: tuple[tuple[str, bool], ...]


def _shape_conditions(shape: _PageShape) -> list[ColumnElement[bool]]:
    """The scope and filters of a list of that shape, with their values bound."""
    conditions = _scope_conditions(shape.include_deleted, _bound_owner(shape.owned))
    conditions += [
        condition(bindparam(name))
        for name, _, condition in VALUE_FILTERS
        if name in shape.bound_filters
    ]
    flags = TaskFilters(unassigned=shape.unassigned, deleted_only=shape.deleted_only)
    return conditions + _flag_conditions(flags)


def _listed_ids(shape: _PageShape) -> Select[Any]:
    """The ids of the list of that shape, in its order."""
    return ordered(select(Task.id).where(*_shape_conditions(shape)), shape.sort)


def _page_ids(shape: _PageShape) -> Subquery:
    """The ids of a page of that shape (see `task_rows_page`)."""
    return (
        _listed_ids(shape)
        .offset(bindparam("offset", type_=Integer))
        .limit(bindparam("limit", type_=Integer))
        .subquery()
    )


def on_page(
    rows: Select[Any],
    column: ColumnElement[int] | InstrumentedAttribute[int],
    page: Subquery,
    page_column: str,
    dialect_name: str,
) -> Select[Any]:
    """`rows` limited to those whose `column` is one of the page's ids (`page_column` of the
    `page` subquery). On PostgreSQL the ids are one array (an InitPlan) that the outer query
    looks up, not a join, so that the plan app.database.fixed_plan_engine keeps for every page
    is the index walk; elsewhere (SQLite plans each statement anew) a join to the page."""
    page_id = page.c[page_column]
    if dialect_name == "postgresql":
        ids = cast(select(func.array_agg(page_id)).scalar_subquery(), ARRAY(Integer))
        return rows.where(column == any_(ids))
    return rows.join(page, column == page_id)


@functools.lru_cache(maxsize=512)
def _page_rows_statement(shape: _PageShape, dialect_name: str) -> Select[Any]:
    """The statement of every page of that shape, its values bound at execution (building a
    statement and computing its cache key cost more than running it on an index), selecting
    the task's columns."""
    rows = on_page(select(*Task.__table__.columns), Task.id, _page_ids(shape), "id", dialect_name)
    return ordered(rows, shape.sort)


def task_rows_page(
    scope: TaskScope, filters: TaskFilters, offset: int, limit: int
) -> list[dict[str, Any]] | None:
    """One page of the list as the tasks' column values, read on the driver's cursor (no ORM
    objects to build for a page that is serialised at once); None for a search (`q`), which
    `tasks_page` answers. The page's ids are found first and only those rows read: finding them
    walks (and skips OFFSET) entries of an index that covers the common lists (live tasks,
    status and priority filters, created_at or id order), never the table's rows."""
    if filters.q:  # a search pattern is not a bound value (escaping)
        return None
    shape, params = _page_shape(scope, filters, offset, limit)
    engine = fixed_plan_engine()
    return fetch_all(engine, _page_rows_statement(shape, engine.dialect.name), params)


def lists_by_ids(filters: TaskFilters) -> bool:
    """Whether the list's ordered ids can be read (`list_task_ids`): every list but a search
    (`q`, whose pattern is not a bound value)."""
    return not filters.q


@functools.lru_cache(maxsize=512)
def _list_ids_statement(shape: _PageShape, dialect_name: str) -> Select[Any]:
    listed = _listed_ids(shape).limit(bindparam("limit", type_=Integer))
    return packed_ids_statement(listed, dialect_name)


def list_task_ids(scope: TaskScope, filters: TaskFilters, limit: int) -> bytes | None:
    """Every id of the list, in its order, packed (app.repositories.packed_ids); None when there
    are more than `limit` or it is a search. It walks the entries a count walks (20-40 ms for
    100,000 in an indexed order, against 8-15 ms for the count), and then every page is read by
    its ids (`task_rows_of_ids`) instead of walking OFFSET entries of them."""
    if not lists_by_ids(filters):
        return None
    shape, params = _page_shape(scope, filters, 0, limit + 1)
    del params["offset"]
    statement = _list_ids_statement(shape, db.engine.dialect.name)
    return read_packed_ids(statement, params, limit)


@functools.lru_cache(maxsize=512)
def _rows_of_ids_statement(shape: _PageShape, dialect_name: str) -> Select[Any]:
    return select(*Task.__table__.columns).where(
        is_one_of(Task.__table__.c.id, dialect_name), *_shape_conditions(shape)
    )


def task_rows_of_ids(
    scope: TaskScope, filters: TaskFilters, task_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The column values of the tasks `task_ids` of the list, in that order (one the list no
    longer holds, e.g. deleted since its ids were read, is left out: the scope and filters are
    applied again), read on the driver's cursor like `task_rows_page`."""
    shape, params = _page_shape(scope, filters, 0, 0)
    del params["offset"], params["limit"]
    engine = fixed_plan_engine()
    dialect_name = engine.dialect.name
    # The order does not change which rows these are: one statement for every sort.
    statement = _rows_of_ids_statement(replace(shape, sort=()), dialect_name)
    params["task_ids"] = ids_value(task_ids, dialect_name)
    return in_order_of(task_ids, fetch_all(engine, statement, params), "id")


def tasks_page(scope: TaskScope, filters: TaskFilters, offset: int, limit: int) -> list[Task]:
    """One page of the list as objects, its statement built for this request with `filtered`:
    the searches (`q`) that `task_rows_page` leaves, and the reference its tests compare with."""
    page_ids = (
        ordered(filtered(scoped(select(Task.id), scope), filters), filters.sort)
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    stmt = ordered(select(Task).join(page_ids, Task.id == page_ids.c.id), filters.sort)
    return list(db.session.scalars(stmt))


def _page_shape(
    scope: TaskScope, filters: TaskFilters, offset: int, limit: int
) -> tuple[_PageShape, dict[str, Any]]:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    for name, value_of, _ in VALUE_FILTERS:
        if (value := value_of(filters)) is not None:
            params[name] = value
    if scope.owner_id is not None:
        params["owner_id"] = scope.owner_id
    shape = _PageShape(
        owned=scope.owner_id is not None,
        include_deleted=scope.include_deleted,
        bound_filters=tuple(name for name in params if name in _BOUND_FILTER_NAMES),
        unassigned=filters.unassigned,
        deleted_only=filters.deleted_only,
        sort=filters.sort,
    )
    return shape, params


_BOUND_FILTER_NAMES = frozenset(name for name, _, _ in VALUE_FILTERS)


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


# Execution option of `write_task_row`'s statement: (task id, the users who see the task before
# and after it, whether its deleted state changes), for app.cache.invalidation, which bumps
# exactly the answers that could contain it.
TASK_WRITTEN = "task_written"
_AUDIT_FIELDS = ("actor_id", "action", "changes", "created_at")  # an audit row's, task_id aside


@functools.cache
def _task_write_statement(columns: tuple[str, ...]) -> Update:
    """UPDATE of those columns (and the version) of the task `:task_id` at `:old_version`."""
    table: Table = Task.__table__  # type: ignore[assignment]
    return (
        update(table)
        .where(table.c.id == bindparam("task_id"), table.c.version == bindparam("old_version"))
        .values(
            {name: bindparam(f"new_{name}", type_=table.c[name].type) for name in columns}
            | {"version": bindparam("new_version")}
        )
    )


@functools.cache
def _task_and_audit_write_statement(columns: tuple[str, ...]) -> ReturningInsert[tuple[int]]:
    """`_task_write_statement` and the audit row of the change, in one statement (PostgreSQL's
    data-modifying CTE): the audit row is inserted if, and only if, the task's row was updated."""
    audit: Table = TaskAuditEntry.__table__  # type: ignore[assignment]
    written = _task_write_statement(columns).returning(Task.__table__.c.id).cte("written")
    # Prefixed: a parameter named like a column of the updated table would be SET on it too.
    entry = [bindparam(f"audit_{name}", type_=audit.c[name].type) for name in _AUDIT_FIELDS]
    return (
        insert(audit)
        .from_select(["task_id", *_AUDIT_FIELDS], select(written.c.id, *entry).select_from(written))
        .returning(audit.c.task_id)  # a row back says the version matched and both were written
    )


@functools.cache
def _locked_task_row_statement(owned: bool, include_deleted: bool) -> Select[Any]:
    return _visible_task_row_statement(owned, include_deleted).with_for_update()


def _lock_for_writing() -> None:
    """SQLite has no row locks (it ignores FOR UPDATE): take the database's write lock instead,
    with BEGIN IMMEDIATE, which holds off every other writer until this transaction ends
    (readers go on: WAL). Without it, a write decided on a read could lose a race to another
    writer that committed in between."""
    connection = db.session.connection()
    dbapi_connection: Any = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:  # a transaction that has written holds it already
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def task_row_for_write(task_id: int, scope: TaskScope, *, locked: bool) -> dict[str, Any] | None:
    """The visible task's column values to decide a write on: read without a lock (as
    `visible_task_row`), or with its row locked in the session's transaction until it ends."""
    if not locked:
        return visible_task_row(task_id, scope)
    if db.engine.dialect.name == "sqlite":
        _lock_for_writing()
    owned = scope.owner_id is not None
    params = _visible_task_params(task_id, scope)
    row = db.session.execute(_locked_task_row_statement(owned, scope.include_deleted), params)
    found = row.mappings().first()
    return dict(found) if found is not None else None


def owners_of_write(task: dict[str, Any], values: dict[str, Any]) -> tuple[int | None, ...]:
    """The users who see the task before or after `values` are written to it."""
    after = values.get("assigned_user_id", task["assigned_user_id"])
    return tuple({task["created_by_id"], task["assigned_user_id"], after})


def _write_parameters(task: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    params = {f"new_{name}": value for name, value in values.items()}
    params.update(task_id=task["id"], old_version=task["version"], new_version=task["version"] + 1)
    return params


def _as_written(task: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return {**task, **values, "version": task["version"] + 1}


def write_task_row(
    task: dict[str, Any], values: dict[str, Any], audit: dict[str, Any]
) -> dict[str, Any] | None:
    """Write `values` to the task's row, its version moved on, and add the audit row of the
    change (`audit`: its fields but the task's id), in the session's transaction, if the row is
    still at the version `task` (its column values) was read at; the task as written, or None
    if a concurrent write got in first. The session's commit invalidates what it wrote
    (app.cache.invalidation: `task_written`)."""
    written = {TASK_WRITTEN: (task["id"], owners_of_write(task, values), "deleted_at" in values)}
    statement = _task_write_statement(tuple(sorted(values)))
    result = db.session.execute(
        statement, _write_parameters(task, values), execution_options=written
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    add_audit_entry({"task_id": task["id"], **audit})
    return _as_written(task, values)


def writes_at_once() -> bool:
    """Whether `write_task_row_at_once` is available: PostgreSQL's data-modifying CTEs."""
    return db.engine.dialect.name == "postgresql"


def write_task_row_at_once(
    task: dict[str, Any], values: dict[str, Any], audit: dict[str, Any]
) -> dict[str, Any] | None:
    """`write_task_row` as one statement on the driver's cursor, committed when it returns (in
    autocommit: no BEGIN and COMMIT round trips, nor the session's per-statement work). Being
    outside the session, its hooks do not see it: the caller invalidates what it wrote
    (`owners_of_write`). PostgreSQL only (`writes_at_once`)."""
    params = _write_parameters(task, values)
    params.update({f"audit_{name}": value for name, value in audit.items()})
    both = _task_and_audit_write_statement(tuple(sorted(values)))
    if fetch_one(fixed_plan_engine(), both, params) is None:
        return None
    return _as_written(task, values)


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
