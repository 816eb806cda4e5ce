"""Exact invalidation: every committed change to a task bumps the generations that guard it.

It hooks the ORM session, so every write path (services, imports, admin purge) is covered
without each one remembering to invalidate: after a flush the changed tasks' generations are
collected, and after the commit they are bumped. Core statements that bypass the ORM (the
daily loader's INSERT ... SELECT, bulk imports) bump their own generations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from app.cache.store import GLOBAL_GENERATION, ResponseCache, scope_generation, task_generation
from app.models import Task

STAFF_SCOPE = "staff"  # admins and moderators see every task
PENDING_KEY = "pending_cache_generations"


def user_scope(user_id: int) -> str:
    return f"user:{user_id}"


def generations_of_task(task: Task) -> set[str]:
    """The counters guarding every answer that could contain `task`: its own, the staff lists,
    and the lists of each user who sees (or saw, before this change) it."""
    names = {task_generation(task.id), scope_generation(STAFF_SCOPE)}
    state = inspect(task)
    owners: set[Any] = {task.created_by_id, task.assigned_user_id}
    owners.update(state.attrs.assigned_user_id.history.deleted or ())
    owners.update(state.attrs.created_by_id.history.deleted or ())
    names.update(scope_generation(user_scope(uid)) for uid in owners if uid is not None)
    return names


def current_cache() -> ResponseCache | None:
    if not has_app_context():
        return None
    cache: ResponseCache | None = current_app.extensions.get("response_cache")
    return cache


def bump(generations: Iterable[str]) -> None:
    cache = current_cache()
    names = sorted(set(generations))
    if cache is not None and names:
        cache.bump(names)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush: UOWTransaction) -> None:
    pending: set[str] = session.info.setdefault(PENDING_KEY, set())
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Task) and obj.id is not None:
            pending.update(generations_of_task(obj))


@event.listens_for(Session, "do_orm_execute")
def _collect_bulk(state: ORMExecuteState) -> None:
    # A bulk UPDATE/DELETE of tasks (not through objects) may touch any task: bump everything.
    if (state.is_update or state.is_delete) and any(
        mapper.class_ is Task for mapper in state.all_mappers
    ):
        state.session.info.setdefault(PENDING_KEY, set()).add(GLOBAL_GENERATION)


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, None)
    if pending:
        bump(pending)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(PENDING_KEY, None)
