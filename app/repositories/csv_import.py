"""Bulk statements of the CSV import."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db
from app.models import Role, Task, TaskAuditEntry, User
from app.models.types import utcnow


def _dialect() -> Any:
    return postgresql if db.engine.dialect.name == "postgresql" else sqlite


def user_ids_by_username(names: Collection[str]) -> dict[str, int]:
    rows = db.session.execute(select(User.username, User.id).where(User.username.in_(names)))
    return {row.username: row.id for row in rows}


def create_placeholder_users(names: Collection[str], email_domain: str) -> int:
    """Inactive accounts with no password for unknown assignees; returns how many were made
    (a name taken meanwhile, by a concurrent import, is skipped)."""
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
        .returning(User.id)
    )
    return len(db.session.execute(stmt).all())


def insert_tasks_skipping_duplicates(
    rows: list[dict[str, Any]],
) -> list[tuple[int, dict[str, Any]]]:
    """One multi-row INSERT; rows whose import_key exists are skipped. Returns (id, row) of the
    rows inserted."""
    if not rows:
        return []
    stmt = (
        _dialect()
        .insert(Task)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["import_key"])
        .returning(Task.id, Task.import_key)
    )
    by_key = {row["import_key"]: row for row in rows}
    return [(r.id, by_key[r.import_key]) for r in db.session.execute(stmt)]


def insert_audit_entries(entries: list[dict[str, Any]]) -> None:
    if entries:
        db.session.execute(insert(TaskAuditEntry), entries)
