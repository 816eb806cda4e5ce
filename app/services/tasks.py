"""Task rules: who sees and changes what, soft delete and restore, and the audit trail."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any

from flask_sqlalchemy.pagination import Pagination

from app.cache.invalidation import bump, list_generations, task_generations
from app.extensions import db
from app.models import AuditAction, Role, Task, TaskPriority, TaskStatus
from app.models.types import MAX_ID, utcnow
from app.repositories import tasks as task_repo
from app.repositories import users as user_repo
from app.repositories.packed_ids import ID_BYTES, ids_at
from app.repositories.tasks import TaskFilters, TaskScope
from app.services.actor import Actor
from app.services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
)
from app.services.pages import Page, counted, remembered_ids

# Fields a client may set; everything else (id, created_by, timestamps, deleted_at) is the server's.
EDITABLE_FIELDS = ("task_name", "description", "status", "priority", "assigned_user_id", "due_date")
TASK_NOT_FOUND = "task not found"
LIST_IDS = "list-ids"  # the kind of value a list remembers (app.services.pages.remembered_ids)


class DeletedFilter(StrEnum):
    EXCLUDE = "exclude"
    INCLUDE = "include"
    ONLY = "only"


def scope_for(actor: Actor, *, with_deleted: bool = False) -> TaskScope:
    """A `user` sees tasks assigned to or created by them; moderators and admins see all; only
    admins see soft-deleted tasks."""
    if actor.role == Role.USER:
        return TaskScope(owner_id=actor.id)
    return TaskScope(owner_id=None, include_deleted=with_deleted and actor.role == Role.ADMIN)


def _json_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _audit_entry(actor: Actor, action: AuditAction, changes: dict[str, Any]) -> dict[str, Any]:
    """An audit row's fields, the task's id aside (app.repositories.tasks.write_task_row)."""
    return {"actor_id": actor.id, "action": action, "changes": changes, "created_at": utcnow()}


def _audit(task: Task, actor: Actor, action: AuditAction, changes: dict[str, Any]) -> None:
    task_repo.add_audit_entry({"task_id": task.id, **_audit_entry(actor, action, changes)})


def _write_in_session(
    task: dict[str, Any], values: dict[str, Any], audit: dict[str, Any]
) -> dict[str, Any] | None:
    """Write `values` and the audit row in the session's transaction and end it: committed, or
    rolled back (None) if the task has moved on since it was read."""
    written = task_repo.write_task_row(task, values, audit)
    if written is None:
        db.session.rollback()
    else:
        db.session.commit()
    return written


def _write_locked(
    task: dict[str, Any],
    values: dict[str, Any],
    audit: dict[str, Any],
    if_match: Collection[str] | None,
) -> dict[str, Any]:
    """Write `values` and the audit row to a task read with its row locked (on SQLite, under the
    database's write lock), and commit. Under the lock the version cannot have moved; should
    the write still find it moved, that is a 412 for a client that asked for a precondition,
    else a 409 to retry."""
    written = _write_in_session(task, values, audit)
    if written is None:
        if if_match is not None:
            raise PreconditionFailed("the task has changed since it was read")
        raise Conflict("the task was changed by a concurrent request; retry")
    return written


def _write_unlocked(
    task: dict[str, Any], values: dict[str, Any], audit: dict[str, Any]
) -> dict[str, Any] | None:
    """Write `values` and the audit row to a task read without a lock, committed when this
    returns; None (nothing written) if the task has moved on since it was read."""
    if not task_repo.writes_at_once():
        return _write_in_session(task, values, audit)
    written = task_repo.write_task_row_at_once(task, values, audit)
    if written is not None:  # committed outside the session, whose hooks do not see it
        owners = task_repo.owners_of_write(task, values)
        bump(task_generations(task["id"], owners, deletion="deleted_at" in values))
    return written


def _check_assignee(actor: Actor, assigned_user_id: int | None) -> None:
    if assigned_user_id is None:
        return
    if actor.role == Role.USER and assigned_user_id != actor.id:
        raise PermissionDenied("a user can only assign tasks to themselves")
    if user_repo.get_user(assigned_user_id) is None:
        raise InvalidInput(
            "assigned user does not exist", errors={"assigned_user_id": ["no such user"]}
        )


@dataclass(frozen=True)
class NewTask:
    task_name: str
    description: str | None = None
    status: TaskStatus = TaskStatus.ACTIVE
    priority: TaskPriority = TaskPriority.MEDIUM
    assigned_user_id: int | None = None
    due_date: date | None = None


def create_task(actor: Actor, new: NewTask) -> Task:
    _check_assignee(actor, new.assigned_user_id)
    now = utcnow()
    task = task_repo.add_task(
        Task(
            task_name=new.task_name,
            description=new.description,
            status=new.status,
            priority=new.priority,
            assigned_user_id=new.assigned_user_id,
            due_date=new.due_date,
            created_by_id=actor.id,
            created_at=now,
            updated_at=now,
        )
    )
    changes = {
        name: {"old": None, "new": _json_value(getattr(task, name))} for name in EDITABLE_FIELDS
    }
    _audit(task, actor, AuditAction.CREATED, changes)
    _commit_answered()
    return task


def get_task(actor: Actor, task_id: int) -> Task:
    task = task_repo.get_visible_task(task_id, scope_for(actor, with_deleted=True))
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    return task


def visible_task_fields(actor: Actor, task_id: int) -> dict[str, Any] | None:
    """`get_task`'s task as its column values (None where `get_task` raises NotFound), read
    without the ORM session, for the hot read path."""
    if task_id > MAX_ID:
        return None
    return task_repo.visible_task_row(task_id, scope_for(actor, with_deleted=True))


def version_tag(task: Task | Mapping[str, Any]) -> str:
    """The task's entity tag (unquoted): it changes with every write to the task. Takes the
    task or its column values."""
    if isinstance(task, Task):
        return f"task-{task.id}-v{task.version}"
    return f"task-{task['id']}-v{task['version']}"


def _check_precondition(task: Mapping[str, Any], if_match: Collection[str] | None) -> None:
    """`If-Match`: proceed only if the client's tag is the task's current one (or `*`)."""
    if if_match is not None and "*" not in if_match and version_tag(task) not in if_match:
        raise PreconditionFailed("the task has changed since it was read; fetch it again")


def _commit_answered() -> None:
    """Commit, keeping the written objects' state loaded: the task as written (its new version
    included) is the answer, and expiring it would cost a query to read back what was just
    written. Only this commit does so: elsewhere (jobs) objects expire as usual."""
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def update_task(
    actor: Actor, task_id: int, changes: dict[str, Any], if_match: Collection[str] | None = None
) -> dict[str, Any]:
    """Apply a partial update: only the given fields change, and only real changes are audited.
    With `if_match`, only if the task is still at one of those versions. The task as written.

    Optimistic first: the task is read without a lock and written only if it is still at the
    version read (on PostgreSQL in one statement with its audit row, in autocommit: two round
    trips in all). If another write got in between, a client's `If-Match` tag no longer holds
    (412); without one (or with `*`), the update is decided again on the task read with its row
    locked, so concurrent updates all apply, one after the other."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput("unknown fields", errors={name: ["cannot be set"] for name in unknown})
    scope = scope_for(actor, with_deleted=True)
    for locked in (False, True):
        task = task_repo.task_row_for_write(task_id, scope, locked=locked)
        if task is None:
            raise NotFound(TASK_NOT_FOUND)
        _check_precondition(task, if_match)
        if task["deleted_at"] is not None:  # only admins get here: they see deleted tasks
            raise Conflict("task is deleted; restore it before changing it")
        new_assignee = changes.get("assigned_user_id", task["assigned_user_id"])
        if new_assignee != task["assigned_user_id"]:
            _check_assignee(actor, new_assignee)
        diff: dict[str, Any] = {}
        values: dict[str, Any] = {}
        for name, new_value in changes.items():
            if task[name] != new_value:
                diff[name] = {"old": _json_value(task[name]), "new": _json_value(new_value)}
                values[name] = new_value
        if not diff:
            db.session.commit()  # ends the lock, if any
            return task
        values["updated_at"] = utcnow()
        audit = _audit_entry(actor, AuditAction.UPDATED, diff)
        if locked:
            return _write_locked(task, values, audit, if_match)
        written = _write_unlocked(task, values, audit)
        if written is not None:
            return written
        if if_match is not None and "*" not in if_match:  # `*` asks only that the task exist
            raise PreconditionFailed("the task has changed since it was read; fetch it again")
    raise AssertionError("unreachable: the locked attempt returns or raises")


def soft_delete_task(actor: Actor, task_id: int, if_match: Collection[str] | None = None) -> None:
    """Moderators and admins soft-delete. A `user` gets 403 on a task it can see (no existence
    leak for the others: 404)."""
    scope = scope_for(actor, with_deleted=True)
    task = task_repo.task_row_for_write(task_id, scope, locked=True)
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    if actor.role == Role.USER:
        raise PermissionDenied("only moderators and admins can delete tasks")
    _check_precondition(task, if_match)
    if task["deleted_at"] is not None:
        raise Conflict("task is already deleted")
    now = utcnow()
    changes = {"deleted_at": {"old": None, "new": now.isoformat()}}
    audit = _audit_entry(actor, AuditAction.DELETED, changes)
    _write_locked(task, {"deleted_at": now, "updated_at": now}, audit, if_match)


def restore_task(actor: Actor, task_id: int) -> dict[str, Any]:
    scope = scope_for(actor, with_deleted=True)
    task = task_repo.task_row_for_write(task_id, scope, locked=True)
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    old = task["deleted_at"]
    if old is None:
        raise Conflict("task is not deleted")
    changes = {"deleted_at": {"old": old.isoformat(), "new": None}}
    audit = _audit_entry(actor, AuditAction.RESTORED, changes)
    return _write_locked(task, {"deleted_at": None, "updated_at": utcnow()}, audit, None)


def purge_task(actor: Actor, task_id: int) -> None:
    """Delete a task row for good; the database cascades to its audit and daily-log rows."""
    task = task_repo.get_task_any_state(task_id)
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    task_repo.delete_task_row(task)
    db.session.commit()


def list_scope(
    actor: Actor, filters: TaskFilters, deleted: DeletedFilter
) -> tuple[TaskScope, TaskFilters]:
    """Scope and filters of a list (tasks or a day's log): only admins may ask for deleted ones."""
    if deleted != DeletedFilter.EXCLUDE and actor.role != Role.ADMIN:
        raise PermissionDenied("only admins can list deleted tasks")
    scope = scope_for(actor, with_deleted=deleted != DeletedFilter.EXCLUDE)
    if deleted == DeletedFilter.ONLY:
        filters = replace(filters, deleted_only=True)
    return scope, filters


def list_tasks(
    actor: Actor, filters: TaskFilters, deleted: DeletedFilter, page: int, per_page: int
) -> Page[Task | dict[str, Any]]:
    """A page of the tasks the actor sees (as objects or as their column values)."""
    scope, filters = list_scope(actor, filters, deleted)
    result: Page[Task | dict[str, Any]] = Page([], page, per_page, 0)
    generations = list_generations(scope)
    ordered_ids = _ordered_ids(scope, filters, generations)
    if ordered_ids is not None:
        result.total = len(ordered_ids) // ID_BYTES
        page_ids = ids_at(ordered_ids, 0, result.offset, per_page)
        if page_ids:
            result.items = list(task_repo.task_rows_of_ids(scope, filters, page_ids))
        return result
    result.total = counted(
        ("tasks", scope, replace(filters, sort=())),  # the order does not change the total
        generations,
        lambda: task_repo.count_tasks(scope, filters),
    )
    if result.offset < result.total:
        rows = task_repo.task_rows_page(scope, filters, result.offset, per_page)
        if rows is None:
            result.items = list(task_repo.tasks_page(scope, filters, result.offset, per_page))
        else:
            result.items = list(rows)
    return result


def _ordered_ids(
    scope: TaskScope, filters: TaskFilters, generations: list[str]
) -> memoryview | None:
    """The list's task ids in order (app.services.pages.remembered_ids): its pages are then read
    by id. Guarded by the list's counters, which every write to a task it could hold bumps
    (app.cache.invalidation), whatever the write changes: the list's members, or its order."""
    if not task_repo.lists_by_ids(filters):
        return None
    return remembered_ids(
        LIST_IDS,
        ("tasks", scope, filters),
        generations,
        lambda limit: task_repo.list_task_ids(scope, filters, limit),
    )


def task_history(actor: Actor, task_id: int, page: int, per_page: int) -> Pagination:
    get_task(actor, task_id)  # visibility check: 404 for tasks the caller cannot see
    return task_repo.page_audit_entries(task_id, page, per_page)
