"""Reading the daily task log, scoped by role exactly like tasks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from flask_sqlalchemy.pagination import Pagination

from app.cache.invalidation import list_generations, log_generations
from app.models.task_log import TaskLogEntry
from app.repositories import task_logs as log_repo
from app.repositories.tasks import TaskFilters, TaskScope
from app.services.actor import Actor
from app.services.errors import NotFound
from app.services.pages import Page, counted, remembered_ids
from app.services.tasks import DeletedFilter, get_task, list_scope, scope_for


def logged_task(entry: TaskLogEntry) -> dict[str, Any]:
    """The task's fields plus its snapshot of that day: the item shape of the date view."""
    task = entry.task
    return {
        **{column.key: getattr(task, column.key) for column in task.__table__.columns},
        "log": entry,
    }


DAY_ENTRIES = "log-entries"  # the kind of value remembered (app.services.pages.remembered_ids)


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
    result: Page[dict[str, Any]] = Page([], page, per_page, 0)
    entries = _day_entries(log_date, scope, filters)
    if entries is not None:
        result.total = len(entries) // log_repo.ENTRY_BYTES
        pairs = log_repo.logged_rows_at(log_date, entries, result.offset, per_page)
        result.items = [{**task, "log": snapshot} for task, snapshot in pairs]
        return result
    result.total = counted(
        ("log", log_date, scope, replace(filters, sort=())),  # the order does not change it
        list_generations(scope, log_date),
        lambda: log_repo.count_log_for_date(log_date, scope, filters),
    )
    if result.offset < result.total:
        rows = log_repo.log_page_rows(log_date, scope, filters, result.offset, per_page)
        if rows is not None:
            result.items = [{**task, "log": snapshot} for task, snapshot in rows]
        else:
            joined = log_repo.log_entries_for_date(
                log_date, scope, filters, result.offset, per_page
            )
            result.items = [logged_task(entry) for entry in joined]
    return result


def _day_entries(log_date: date, scope: TaskScope, filters: TaskFilters) -> memoryview | None:
    """The date view's entries in order with their snapshots (app.services.pages.remembered_ids,
    app.repositories.task_logs.log_day_entries), when the log alone answers the question: its
    pages then read only their tasks' rows, by id. Guarded by the day's and the deletions'
    counters only: an edit of a task changes its fields on the page, not which tasks the day
    lists, their order or their snapshots, so it does not cost the day again (120-170 ms a day
    of 100,000)."""
    if not log_repo.answerable_from_log(scope, filters):
        return None
    return remembered_ids(
        DAY_ENTRIES,
        ("log", log_date, scope, filters),
        log_generations(log_date.isoformat()),
        lambda limit: log_repo.log_day_entries(log_date, scope, filters, limit),
    )


def get_log_entry(actor: Actor, log_id: int) -> dict[str, Any]:
    entry = log_repo.get_log_entry(log_id, scope_for(actor, with_deleted=True))
    if entry is None:
        raise NotFound("log entry not found")
    return logged_task(entry)


def task_log(actor: Actor, task_id: int, page: int, per_page: int) -> Pagination:
    get_task(actor, task_id)  # 404 for tasks the caller cannot see
    return log_repo.page_task_log(task_id, page, per_page)
