"""Task rules: who sees and changes what, soft delete and restore, and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any, Protocol

from flask_sqlalchemy.pagination import Pagination

from app.cache.invalidation import list_generations
from app.extensions import db
from app.models import AuditAction, Role, Task, TaskPriority, TaskStatus
from app.models.types import utcnow
from app.repositories import keyset
from app.repositories import tasks as task_repo
from app.repositories import users as user_repo
from app.repositories.task_order import SortTerms
from app.repositories.tasks import TaskFilters, TaskScope
from app.services.actor import Actor
from app.services.context import settings
from app.services.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    UnreadableInput,
)
from app.services.pages import CursorPage, Page, counted, cursor_page

# Fields a client may set; everything else (id, created_by, timestamps, deleted_at) is the server's.
EDITABLE_FIELDS = ("task_name", "description", "status", "priority", "assigned_user_id", "due_date")
TASK_NOT_FOUND = "task not found"


class Preconditions(Protocol):
    """A write's `If-Match` tags (werkzeug's ETags): whether a task's tag is one of them."""

    def contains(self, etag: str) -> bool: ...


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


def _audit(task: Task, actor: Actor, action: AuditAction, changes: dict[str, Any]) -> None:
    task_repo.add_audit_entry(
        {
            "task_id": task.id,
            "actor_id": actor.id,
            "action": action,
            "changes": changes,
            "created_at": utcnow(),
        }
    )


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
    # The fields the new task has a value in: a created entry lists no `null -> null`.
    changes = {
        name: {"old": None, "new": _json_value(value)}
        for name in EDITABLE_FIELDS
        if (value := getattr(task, name)) is not None
    }
    _audit(task, actor, AuditAction.CREATED, changes)
    _commit_answered()
    return task


def get_task(actor: Actor, task_id: int) -> Task:
    task = task_repo.get_visible_task(task_id, scope_for(actor, with_deleted=True))
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    return task


def version_tag(task: Task) -> str:
    """The task's entity tag (unquoted): it changes with every write to the task."""
    return f"task-{task.id}-v{task.version}"


def _check_precondition(task: Task, if_match: Preconditions | None) -> None:
    """`If-Match`: proceed only if the client's tag is the task's current one (or `*`)."""
    if if_match is not None and not if_match.contains(version_tag(task)):
        raise PreconditionFailed("the task has changed since it was read; fetch it again")


def _task_to_write(actor: Actor, task_id: int, if_match: Preconditions | None) -> Task:
    """The visible task, its row locked until the write's commit, once `If-Match` holds."""
    task = task_repo.get_task_for_update(task_id, scope_for(actor, with_deleted=True))
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    _check_precondition(task, if_match)
    return task


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
    actor: Actor, task_id: int, changes: dict[str, Any], if_match: Preconditions | None = None
) -> Task:
    """Apply a partial update: only the given fields change, and only real changes are audited.
    With `if_match`, only if the task is still at one of those versions. Decided on the task
    read with its row locked and committed once, so concurrent updates all apply, one after
    the other, and none is decided on a version another has replaced."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise InvalidInput("unknown fields", errors={name: ["cannot be set"] for name in unknown})
    task = _task_to_write(actor, task_id, if_match)
    if task.deleted_at is not None:  # only admins get here: they see deleted tasks
        raise Conflict("task is deleted; restore it before changing it")
    new_assignee = changes.get("assigned_user_id", task.assigned_user_id)
    if new_assignee != task.assigned_user_id:
        _check_assignee(actor, new_assignee)
    diff = {
        name: {"old": _json_value(getattr(task, name)), "new": _json_value(value)}
        for name, value in changes.items()
        if getattr(task, name) != value
    }
    if diff:
        for name in diff:
            setattr(task, name, changes[name])
        task.updated_at = utcnow()
        _audit(task, actor, AuditAction.UPDATED, diff)
    _commit_answered()  # also ends the lock when nothing changed
    return task


def soft_delete_task(actor: Actor, task_id: int, if_match: Preconditions | None = None) -> None:
    """Moderators and admins soft-delete. A `user` gets 403 on a task it can see (no existence
    leak for the others: 404)."""
    task = task_repo.get_task_for_update(task_id, scope_for(actor, with_deleted=True))
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    if actor.role == Role.USER:
        raise PermissionDenied("only moderators and admins can delete tasks")
    _check_precondition(task, if_match)
    if task.deleted_at is not None:
        raise Conflict("task is already deleted")
    now = utcnow()
    task.deleted_at = task.updated_at = now
    _audit(task, actor, AuditAction.DELETED, {"deleted_at": {"old": None, "new": now.isoformat()}})
    db.session.commit()


def restore_task(actor: Actor, task_id: int) -> Task:
    task = _task_to_write(actor, task_id, None)
    old = task.deleted_at
    if old is None:
        raise Conflict("task is not deleted")
    task.deleted_at = None
    task.updated_at = utcnow()
    _audit(task, actor, AuditAction.RESTORED, {"deleted_at": {"old": old.isoformat(), "new": None}})
    _commit_answered()
    return task


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
) -> Page[Task]:
    """A page of the tasks the actor sees."""
    scope, filters = list_scope(actor, filters, deleted)
    total = counted(
        ("tasks", scope, replace(filters, sort=())),  # the order does not change the total
        list_generations(scope),
        lambda: task_repo.count_tasks(scope, filters, settings().count_exact_up_to),
    )
    result: Page[Task] = Page([], page, per_page, total.value, total.estimated)
    if result.offset < result.total:
        result.items = task_repo.tasks_page(scope, filters, result.offset, per_page)
    return result


def keyset_position(sort: SortTerms, after: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """The position a client sent back (`cursor`) as this sort's key values. One that cannot be
    this sort's (a cursor of another version) is refused like any cursor that is not readable."""
    if after is None:
        return None
    try:
        return keyset.keyset_position(sort, after)
    except ValueError as exc:
        message = "the cursor does not fit this list's sort; start again without it"
        raise UnreadableInput(message, errors={"cursor": [str(exc)]}, location="query") from exc


def list_tasks_after(
    actor: Actor,
    filters: TaskFilters,
    deleted: DeletedFilter,
    after: Sequence[Any] | None,
    limit: int,
) -> CursorPage[Task]:
    """Up to `limit` tasks the actor sees after `after` (the sort key values of the previous
    page's last task; None for the first page): a keyset page, found without OFFSET or count.
    The scope is the actor's own, whoever was given the position."""
    scope, filters = list_scope(actor, filters, deleted)
    position = keyset_position(filters.sort, after)
    # One row more than the page: whether it exists says whether a next page does.
    return cursor_page(task_repo.tasks_after(scope, filters, position, limit + 1), limit)


def task_history(actor: Actor, task_id: int, page: int, per_page: int) -> Pagination:
    get_task(actor, task_id)  # visibility check: 404 for tasks the caller cannot see
    return task_repo.page_audit_entries(task_id, page, per_page)
