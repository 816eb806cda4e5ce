"""Bulk statements of the CSV import."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from app.cache.invalidation import INVALIDATES, invalidate_on_commit, new_task_generations
from app.extensions import db
from app.models import Role, Task, TaskAuditEntry, User
from app.models.enums import AuditAction
from app.models.types import utcnow


def _dialect() -> Any:
    return postgresql if db.engine.dialect.name == "postgresql" else sqlite


def writes_in_parallel() -> bool:
    """Whether several connections may insert tasks at once (SQLite has one writer at a time)."""
    return bool(db.engine.dialect.name == "postgresql")


@dataclass(frozen=True)
class ExistingAccount:
    """What the import's assignee rule needs to know of an account holding an assignee's name."""

    id: int
    created_at: datetime
    # Made by an import for an unknown assignee and untouched since: inactive, no password.
    is_placeholder: bool


def accounts_by_username(names: Collection[str]) -> dict[str, ExistingAccount]:
    is_placeholder = and_(User.password_hash.is_(None), User.is_active.is_(False))
    rows = db.session.execute(
        select(
            User.username, User.id, User.created_at, is_placeholder.label("is_placeholder")
        ).where(User.username.in_(names))
    )
    return {
        row.username: ExistingAccount(row.id, row.created_at, bool(row.is_placeholder))
        for row in rows
    }


def create_placeholder_users(names: Collection[str], email_domain: str) -> dict[str, int]:
    """Inactive accounts with no password for unknown assignees; returns the id of each one made
    by name (a name taken meanwhile, by a registration or a concurrent import, is skipped)."""
    if not names:
        return {}
    now = utcnow()
    stmt = (
        _dialect()
        .insert(User)
        .values(
            [
                {
                    "username": name,
                    "email": f"{name}@{email_domain}",
                    "password_hash": None,
                    "role": Role.USER,
                    "is_active": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for name in names
            ]
        )
        .on_conflict_do_nothing()
        .returning(User.username, User.id)
    )
    return {row.username: row.id for row in db.session.execute(stmt)}


TASK_FIELDS = ("task_name", "description", "status", "priority", "assigned_user_id")
STAGE_TABLE = "csv_import_stage"
# The rows of one batch, numbered in file order (the first of duplicates in a batch wins).
CREATE_STAGE = text(
    f"""
    CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE} (
        n integer NOT NULL, task_name text NOT NULL, description text, status text NOT NULL,
        priority text NOT NULL, assigned_user_id integer, created_at timestamptz NOT NULL,
        import_key text NOT NULL
    ) ON COMMIT DELETE ROWS
    """
)
COPY_STAGE = (
    f"COPY {STAGE_TABLE} (n, task_name, description, status, priority, assigned_user_id, "
    "created_at, import_key) FROM STDIN"
)
_CHANGE = "jsonb_build_object('old', NULL, 'new', {})"
# The fields an imported task may leave empty: left out of its `created` entry when empty.
OPTIONAL_FIELDS = ("description", "assigned_user_id")
_EMPTY_FIELDS = ", ".join(f"CASE WHEN {name} IS NULL THEN '{name}' END" for name in OPTIONAL_FIELDS)
# One statement: the tasks not imported before, and a `created` audit entry for each of them
# with the same `changes` as created_changes() below.
INSERT_FROM_STAGE = text(
    f"""
    WITH inserted AS (
        INSERT INTO task_manager (task_name, description, status, priority, assigned_user_id,
                                  created_by_id, created_at, updated_at, import_key, version)
        SELECT task_name, description, status, priority, assigned_user_id,
               :actor_id, created_at, :now, import_key, 1
        FROM {STAGE_TABLE} ORDER BY n
        ON CONFLICT (import_key) DO NOTHING
        RETURNING id, {", ".join(TASK_FIELDS)}
    )
    INSERT INTO task_audit (task_id, actor_id, action, changes, created_at)
    SELECT id, :actor_id, :action, (jsonb_build_object(
        {", ".join(f"'{name}', {_CHANGE.format(name)}" for name in TASK_FIELDS)},
        'source', {_CHANGE.format("'csv_import'")}
    ) - ARRAY[{_EMPTY_FIELDS}])::json, :now
    FROM inserted
    """
)


def created_changes(row: dict[str, Any]) -> dict[str, Any]:
    """The `changes` of a task's `created` audit entry: the fields it has a value in."""
    changes = {
        name: {"old": None, "new": getattr(row[name], "value", row[name])}
        for name in TASK_FIELDS
        if row[name] is not None
    }
    changes["source"] = {"old": None, "new": "csv_import"}
    return changes


def insert_tasks_with_audit(rows: list[dict[str, Any]], actor_id: int, now: datetime) -> int:
    """Insert the tasks (each row: TASK_FIELDS, created_at and import_key) created by `actor_id`
    at `now`, skipping those whose import_key exists or repeats one earlier in `rows`, each
    with its `created` audit entry. Returns how many were inserted."""
    if not rows:
        return 0
    if db.engine.dialect.name == "postgresql":
        inserted = _insert_postgresql(rows, actor_id, now)
    else:
        inserted = _insert_generic(rows, actor_id, now)
    if inserted:  # the lists the new tasks join, bumped when the import's transaction commits
        owners = {actor_id, *(row["assigned_user_id"] for row in rows)}
        invalidate_on_commit(new_task_generations(owners))
    return inserted


def _insert_postgresql(rows: list[dict[str, Any]], actor_id: int, now: datetime) -> int:
    """COPY the batch into a temporary table, then one INSERT ... SELECT for tasks and audit:
    no statement with a parameter per value to build, send and parse."""
    connection = db.session.connection()
    connection.execute(CREATE_STAGE)
    connection.execute(text(f"TRUNCATE {STAGE_TABLE}"))  # a dry run does not commit
    driver = connection.connection.driver_connection  # the session's psycopg connection
    with driver.cursor() as cursor, cursor.copy(COPY_STAGE) as copy:  # type: ignore[union-attr]
        for number, row in enumerate(rows):
            copy.write_row(
                (
                    number,
                    row["task_name"],
                    row["description"],
                    row["status"].value,
                    row["priority"].value,
                    row["assigned_user_id"],
                    row["created_at"],
                    row["import_key"],
                )
            )
    result = connection.execute(
        INSERT_FROM_STAGE, {"actor_id": actor_id, "now": now, "action": AuditAction.CREATED.value}
    )
    return int(result.rowcount)


def _insert_generic(rows: list[dict[str, Any]], actor_id: int, now: datetime) -> int:
    """One Core INSERT ... ON CONFLICT DO NOTHING RETURNING executed with all the rows
    (SQLAlchemy batches it into multi-row statements), then the audit entries."""
    table = cast(Table, Task.__table__)
    stmt = (
        _dialect()
        .insert(table)
        .on_conflict_do_nothing(index_elements=["import_key"])
        .returning(table.c.id, table.c.import_key)
    )
    values = [{**row, "created_by_id": actor_id, "updated_at": now, "version": 1} for row in rows]
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_key.setdefault(row["import_key"], row)  # the first of duplicates is the one inserted
    # What it invalidates is named once the rows it inserted are known (insert_tasks_with_audit).
    named_later = {INVALIDATES: ()}
    written = db.session.execute(stmt, values, execution_options=named_later)
    inserted = [(r.id, by_key[r.import_key]) for r in written]
    if inserted:
        db.session.execute(
            insert(cast(Table, TaskAuditEntry.__table__)),
            [
                {
                    "task_id": task_id,
                    "actor_id": actor_id,
                    "action": AuditAction.CREATED,
                    "changes": created_changes(row),
                    "created_at": now,
                }
                for task_id, row in inserted
            ],
        )
    return len(inserted)
