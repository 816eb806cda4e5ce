"""Reading the daily task log, scoped by role exactly like tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

from flask_sqlalchemy.pagination import Pagination

from app.cache.invalidation import list_generations, log_generations
from app.models.task_log import TaskLogEntry
from app.repositories import task_logs as log_repo
from app.repositories.tasks import TaskFilters
from app.services.actor import Actor
from app.services.context import settings
from app.services.errors import NotFound
from app.services.pages import CursorPage, Page, counted, cursor_page
from app.services.tasks import DeletedFilter, get_task, keyset_position, list_scope, scope_for

LOG_ENTRY_NOT_FOUND = "log entry not found"


def logged_task(entry: TaskLogEntry) -> dict[str, Any]:
    """The task's fields plus its snapshot of that day: the item shape of the date view."""
    task = entry.task
    return {
        **{column.key: getattr(task, column.key) for column in task.__table__.columns},
        "log": entry,
    }


def log_view(
    actor: Actor,
    log_date: date,
    filters: TaskFilters,
    deleted: DeletedFilter,
    page: int,
    per_page: int,
) -> Page[dict[str, Any]]:
    """The tasks logged on `log_date` (same scoping, filters and pagination as the task list)."""
    scope, filters = list_scope(actor, filters, deleted)
    # A total found on the log alone changes only with the day's log and with deletions, not
    # with every edit of a task (which bumps the lists' counters).
    if log_repo.answerable_from_log(scope, filters):
        generations = log_generations(log_date.isoformat())
    else:
        generations = list_generations(scope, log_date)
    total = counted(
        ("log", log_date, scope, replace(filters, sort=())),  # the order does not change it
        generations,
        lambda: log_repo.count_log_for_date(log_date, scope, filters, settings().count_exact_up_to),
    )
    result: Page[dict[str, Any]] = Page([], page, per_page, total.value, total.estimated)
    if result.offset < result.total:
        entries = log_repo.log_entries_for_date(log_date, scope, filters, result.offset, per_page)
        result.items = [logged_task(entry) for entry in entries]
    return result


def log_view_after(
    actor: Actor,
    log_date: date,
    filters: TaskFilters,
    deleted: DeletedFilter,
    after: Sequence[Any] | None,
    limit: int,
) -> CursorPage[dict[str, Any]]:
    """A keyset page of the tasks logged on `log_date` (same scoping, filters and order as the
    task list's keyset pages): up to `limit` after `after`, without OFFSET or count."""
    scope, filters = list_scope(actor, filters, deleted)
    position = keyset_position(filters.sort, after)
    rows = log_repo.log_entries_after(log_date, scope, filters, position, limit + 1)
    page = cursor_page(rows, limit)
    return CursorPage([logged_task(entry) for entry in page.items], page.next_after)


def get_log_entry(actor: Actor, log_id: int) -> dict[str, Any]:
    entry = log_repo.get_log_entry(log_id, scope_for(actor, with_deleted=True))
    if entry is None:
        raise NotFound(LOG_ENTRY_NOT_FOUND)
    return logged_task(entry)


def task_log(actor: Actor, task_id: int, page: int, per_page: int) -> Pagination:
    get_task(actor, task_id)  # 404 for tasks the caller cannot see
    return log_repo.page_task_log(task_id, page, per_page)
