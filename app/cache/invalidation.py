"""Exact invalidation: every committed change to a task bumps the generations that guard it.

One mechanism for every write: the session. Whatever a transaction writes adds the generations
it could change to the session's pending set, and after its commit they are bumped (after a
rollback, forgotten). Nothing else bumps a generation, so no write path has to remember to.
The bump is made once the transaction has ended and given its connection back, still within
`commit()`: the write goes on only once its bumps have landed, and when the store fails it
retries them for up to a second or two (app.cache.store) without holding a database connection
meanwhile.

- ORM objects: after a flush, the changed tasks' generations (their owners before and after).
- Core statements (the loader's INSERT ... SELECT, a CSV import's batches, bulk UPDATEs) add
  what they could change with `invalidate_on_commit`, or with the execution option
  `invalidates` when run on the session; an INSERT, UPDATE or DELETE of tasks run on the
  session that names nothing bumps everything.

The same hooks guard what processes remember of verified sessions (app.auth.session_memory): a
change to a user's role or active flag, a deleted user, or a revoked token family bumps that
user's auth generation. A bulk UPDATE or DELETE of users or families names the user it is about
with the execution option `sessions_of_user`; one that does not bumps everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction, UOWTransaction

from app.cache.store import (
    DELETIONS_GENERATION,
    GLOBAL_GENERATION,
    ResponseCache,
    auth_generation,
    date_generation,
    scope_generation,
    task_generation,
)
from app.extensions import db
from app.models import Task, TokenFamily, User
from app.repositories.tasks import TaskScope

STAFF_SCOPE = "staff"  # admins and moderators see every task
PENDING_KEY = "pending_cache_generations"
COMMITTED_KEY = "committed_cache_generations"  # committed, to be bumped as the transaction ends
SESSIONS_OF_USER = "sessions_of_user"  # execution option: the user a bulk statement is about
INVALIDATES = "invalidates"  # execution option: the generations a Core statement could change
# What a remembered session holds: a change to these ends or alters the user's sessions.
SESSION_ATTRIBUTES = ("role", "is_active")


def user_scope(user_id: int) -> str:
    return f"user:{user_id}"


def task_generations(
    task_id: int, owners: Iterable[int | None], deletion: bool = False
) -> set[str]:
    """The counters guarding every answer that could contain the task: its own, the staff lists,
    and the lists of each of its `owners` (the users who see it, or saw it before a change);
    with `deletion` (its deleted state changed, or its row went) the deletions' too."""
    names = {task_generation(task_id), scope_generation(STAFF_SCOPE)}
    names.update(scope_generation(user_scope(uid)) for uid in owners if uid is not None)
    if deletion:
        names.add(DELETIONS_GENERATION)
    return names


def generations_of_task(task: Task, gone: bool = False) -> set[str]:
    """`task_generations` of a flushed task, its owners before this change included; `gone`
    when its row was deleted."""
    state = inspect(task)
    owners: set[Any] = {task.created_by_id, task.assigned_user_id}
    owners.update(state.attrs.assigned_user_id.history.deleted or ())
    owners.update(state.attrs.created_by_id.history.deleted or ())
    deletion = gone or state.attrs.deleted_at.history.has_changes()
    return task_generations(task.id, owners, deletion)


def list_generations(scope: TaskScope, log_date: date | None = None) -> list[str]:
    """The counters guarding a list of the tasks `scope` sees (or of their log on `log_date`):
    the staff lists, or the lists of the one user the scope is limited to; for a log, also
    `log_generations`."""
    owner = scope.owner_id
    names = [scope_generation(STAFF_SCOPE if owner is None else user_scope(owner))]
    if log_date is not None:
        names += log_generations(log_date.isoformat())
    return names


def log_generations(day: str) -> list[str]:
    """The counters guarding what is read from a day's log alone, tasks' fields aside: the day's
    (a loader run) and the deletions' (which tasks it lists)."""
    return [date_generation(day), DELETIONS_GENERATION]


def current_cache() -> ResponseCache | None:
    if not has_app_context():
        return None
    cache: ResponseCache | None = current_app.extensions.get("response_cache")
    return cache


def _bump(generations: Iterable[str]) -> None:
    cache = current_cache()
    names = sorted(set(generations))
    if cache is not None and names:
        cache.bump(names)


def _pending(session: Session) -> set[str]:
    pending: set[str] = session.info.setdefault(PENDING_KEY, set())
    return pending


def invalidate_on_commit(generations: Iterable[str]) -> None:
    """Bump `generations` once the app's session commits what it is writing (forgotten if it
    rolls back): for writes the session's hooks cannot see through (Core on its connection)."""
    _pending(db.session()).update(generations)


def new_task_generations(owners: Iterable[int | None]) -> set[str]:
    """The counters guarding every list that new tasks of these `owners` (creators and
    assignees) join: the staff lists and each owner's (a new task has no answers of its own)."""
    names = {scope_generation(STAFF_SCOPE)}
    names.update(scope_generation(user_scope(uid)) for uid in owners if uid is not None)
    return names


def _changes_sessions(obj: object, session: Session) -> int | None:
    """The id of the user whose sessions this flushed object ends or alters, if any."""
    if isinstance(obj, User):
        state = inspect(obj)
        if obj in session.deleted or any(
            state.attrs[name].history.has_changes() for name in SESSION_ATTRIBUTES
        ):
            return obj.id
    elif isinstance(obj, TokenFamily) and (
        obj in session.deleted or inspect(obj).attrs.revoked_at.history.has_changes()
    ):
        return obj.user_id
    return None


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush: UOWTransaction) -> None:
    pending = _pending(session)
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, Task) and obj.id is not None:
            pending.update(generations_of_task(obj, gone=obj in session.deleted))
        elif (user_id := _changes_sessions(obj, session)) is not None:
            pending.add(auth_generation(user_id))


@event.listens_for(Session, "do_orm_execute")
def _collect_statement(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete):
        return
    pending = _pending(state.session)
    named: Iterable[str] | None = state.execution_options.get(INVALIDATES)
    classes = {mapper.class_ for mapper in state.all_mappers}
    if named is not None:
        pending.update(named)
    # Any other write of tasks not through objects may touch any task: bump everything.
    elif Task in classes or getattr(state.statement, "table", None) is Task.__table__:
        pending.add(GLOBAL_GENERATION)
    if classes & {User, TokenFamily}:
        user_id = state.execution_options.get(SESSIONS_OF_USER)
        pending.add(GLOBAL_GENERATION if user_id is None else auth_generation(user_id))


@event.listens_for(Session, "after_commit")
def _keep_after_commit(session: Session) -> None:
    pending = session.info.pop(PENDING_KEY, None)
    if pending:
        session.info.setdefault(COMMITTED_KEY, set()).update(pending)


@event.listens_for(Session, "after_transaction_end")
def _bump_after_commit(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction only: what a savepoint committed is bumped with the rest (and
    # bumped all the same if the outer transaction rolls back: a needless bump is harmless).
    if transaction.parent is not None:
        return
    committed = session.info.pop(COMMITTED_KEY, None)
    if committed:
        _bump(committed)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, _previous: Any) -> None:
    session.info.pop(PENDING_KEY, None)
