"""Queries on accounts."""

from __future__ import annotations

from flask_sqlalchemy.pagination import Pagination
from sqlalchemy import func, select

from app.extensions import db
from app.models import Role, User
from app.repositories.write_lock import lock_sqlite_for_writing


def get_user(user_id: int) -> User | None:
    return db.session.get(User, user_id)


def first_active_admin() -> User | None:
    return db.session.scalar(
        select(User)
        .where(User.role == Role.ADMIN, User.is_active.is_(True))
        .order_by(User.id)
        .limit(1)
    )


def get_user_by_username(username: str) -> User | None:
    return db.session.scalar(select(User).where(User.username == username))


def username_taken(username: str) -> bool:
    return db.session.scalar(select(User.id).where(User.username == username)) is not None


def add_user(user: User) -> User:
    db.session.add(user)
    db.session.flush()
    return user


def page_users(page: int, per_page: int, role: Role | None, is_active: bool | None) -> Pagination:
    stmt = select(User).order_by(User.id)
    if role is not None:
        stmt = stmt.where(User.role == role)
    if is_active is not None:
        stmt = stmt.where(User.is_active == is_active)
    return db.paginate(stmt, page=page, per_page=per_page, error_out=False)


def active_admin_ids_for_update() -> set[int]:
    """The active admins' ids, locked until the transaction ends, so that two changes taking
    admin rights away cannot race past the last-admin rule. PostgreSQL locks their rows (an
    admin demoted by a transaction that committed meanwhile drops out of the answer). SQLite
    ignores FOR UPDATE: the database's write lock is taken first (BEGIN IMMEDIATE), so the
    answer is read after every other writer has committed and before any other can write."""
    lock_sqlite_for_writing()
    ids = db.session.scalars(
        select(User.id)
        .where(User.role == Role.ADMIN, User.is_active.is_(True))
        .order_by(User.id)  # one locking order for every transaction: no deadlock
        .with_for_update()
    ).all()
    return set(ids)


def count_users_by_role() -> dict[str, int]:
    rows = db.session.execute(select(User.role, func.count()).group_by(User.role)).all()
    counts = {role.value: 0 for role in Role}
    counts.update({row[0].value: row[1] for row in rows})
    return counts
