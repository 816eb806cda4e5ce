"""Reading the daily task log, scoped by role exactly like tasks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

from flask_sqlalchemy.pagination import Pagination

from app.cache.invalidation import list_generations, log_generations
from app.models.task_log import TaskLogEntry
from app.repositories import task_logs as log_repo
from app.repositories.packed_ids import ID_BYTES, ids_at
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


DAY_IDS = "log-ids"  # the kind of value remembered (app.services.pages.remembered_ids)


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
    ordered_ids = _ordered_ids(log_date, scope, filters)
    if ordered_ids is not None:
        result.total = len(ordered_ids) // ID_BYTES
        page_ids = ids_at(ordered_ids, 0, result.offset, per_page)
        if page_ids:
            pairs = log_repo.log_rows_of_tasks(log_date, page_ids)
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
            entries = log_repo.log_entries_for_date(
                log_date, scope, filters, result.offset, per_page
            )
            result.items = [logged_task(entry) for entry in entries]
    return result


def _ordered_ids(log_date: date, scope: TaskScope, filters: TaskFilters) -> memoryview | None:
    """The date view's task ids in order (app.services.pages.remembered_ids), when the log alone
    answers the question: its pages are then read by id. Guarded by the day's and the
    deletions' counters only: an edit of a task changes its fields on the page, not which tasks
    the day lists nor their order, so it does not cost the day's ids again (~15-20 ms a day of
    100,000)."""
    if not log_repo.answerable_from_log(scope, filters):
        return None
    return remembered_ids(
        DAY_IDS,
        ("log", log_date, scope, filters),
        log_generations(log_date.isoformat()),
        lambda limit: log_repo.log_task_ids(log_date, scope, filters, limit),
    )


def get_log_entry(actor: Actor, log_id: int) -> dict[str, Any]:
    entry = log_repo.get_log_entry(log_id, scope_for(actor, with_deleted=True))
    if entry is None:
        raise NotFound("log entry not found")
    return logged_task(entry)


def task_log(actor: Actor, task_id: int, page: int, per_page: int) -> Pagination:
    get_task(actor, task_id)  # 404 for tasks the caller cannot see
    return log_repo.page_task_log(task_id, page, per_page)
