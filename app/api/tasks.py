"""Tasks: create, read, partial update, soft delete, restore, history and the list."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import url_for
from werkzeug.datastructures import MultiDict

from app.api.caching import (
    CACHE_DOC,
    CACHE_HEADERS,
    IF_MATCH_DOC,
    cached,
    if_match,
    quote_etag,
    scope_generations,
)
from app.api.current_user import current_user
from app.api.cursors import issue_cursor, read_cursor
from app.api.idempotency import idempotent
from app.api.openapi_parts import string_header
from app.api.pagination import Pagination, cursor_paginated, paginated
from app.api.spec.errors import route_responses
from app.cache.invalidation import log_generations
from app.cache.store import task_generation
from app.extensions import token_auth
from app.models import Role
from app.repositories.tasks import TaskFilters
from app.schemas.common import PageQuery
from app.schemas.tasks import (
    AuditPage,
    TaskCreateIn,
    TaskListPage,
    TaskListQuery,
    TaskOut,
    TaskUpdateIn,
)
from app.services import task_logs as log_service
from app.services import tasks as task_service
from app.services.actor import Actor
from app.services.pages import CursorPage

bp = APIBlueprint(
    "tasks", __name__, tag={"name": "Tasks", "description": "Tasks, their history and the list"}
)

# Response-header docs as OpenAPI header objects, for `doc(responses=...)` (see CACHE_HEADERS).
LINK_HEADER: Any = {
    "Link": string_header(
        "RFC 8288 links: first/prev/next/last for numbered pages; next for cursor pages, absent"
        " on the last one"
    )
}
LOCATION_HEADER: Any = {"Location": string_header("The new task's URL")}
LIST_HEADERS: Any = {**LINK_HEADER, **CACHE_HEADERS}
TASK_HEADERS: Any = {"ETag": string_header("The task's version; send it as If-Match")}

PAGING_DOC = (
    " Two ways to page: numbered pages (`page`, `per_page`; the body has `total` and `pages`)"
    " reach any page directly but cost more the deeper the page; cursor pages (`limit` for the"
    " first, then `cursor` from `next_cursor` or the `next` link, with the same other"
    " parameters) cost the same at any depth, have no total, and visit each task exactly once"
    " while tasks are added or deleted between pages. Use one way per request."
)
VISIBILITY = (
    "A `user` sees only tasks assigned to or created by them (others' tasks answer 404); "
    "moderators and admins see all tasks."
)


def _list_generations(user: Actor, args: MultiDict[str, str]) -> list[str]:
    day = args.get("date")
    return scope_generations(user) + (log_generations(day) if day else [])


def _filters(query: TaskListQuery) -> TaskFilters:
    assigned = query.assigned_user
    return TaskFilters(
        status=query.status,
        priority=query.priority,
        assigned_user_id=int(assigned) if assigned and assigned != "none" else None,
        unassigned=assigned == "none",
        q=query.q,
        created_from=query.created_from,
        created_to=query.created_to,
        due_from=query.due_from,
        due_to=query.due_to,
        sort=query.sort_terms(),
    )


def _tasks_page(actor: Actor, query: TaskListQuery) -> Pagination:
    """The numbered page of tasks, or of the date view with `date`, that the query asks for."""
    filters = _filters(query)
    if query.date is not None:
        return log_service.log_view(
            actor, query.date, filters, query.deleted, query.page, query.per_page
        )
    return task_service.list_tasks(actor, filters, query.deleted, query.page, query.per_page)


def _cursor_page(actor: Actor, query: TaskListQuery) -> tuple[list[Any], str | None]:
    """The cursor page of tasks, or of the date view with `date`, that the query asks for: its
    items and the cursor of the next page (None on the last)."""
    question = query.question()
    after = read_cursor(query.cursor, question) if query.cursor is not None else None
    filters = _filters(query)
    page: CursorPage[Any]
    if query.date is not None:
        page = log_service.log_view_after(
            actor, query.date, filters, query.deleted, after, query.limit
        )
    else:
        page = task_service.list_tasks_after(actor, filters, query.deleted, after, query.limit)
    next_cursor = None if page.next_after is None else issue_cursor(page.next_after, question)
    return page.items, next_cursor


@bp.get("/tasks")
@bp.auth_required(token_auth)
@cached(_list_generations)
@bp.input(TaskListQuery, location="query", arg_name="query")
@bp.output(TaskListPage)
@bp.doc(
    summary="List tasks",
    description=VISIBILITY
    + " Soft-deleted tasks are excluded. With `date=YYYY-MM-DD`, lists the tasks the daily loader"
    " logged on that day instead, each with its snapshot in `log`; `status`, `priority` and"
    " `assigned_user` then filter on the snapshot." + PAGING_DOC + CACHE_DOC,
    responses=route_responses(
        {
            200: {
                "description": "A numbered page (`TaskPage`) or, with `limit` or `cursor`, a cursor"
                " page (`TaskCursorPage`)",
                "headers": LIST_HEADERS,
            },
            304: "Not Modified",
            400: "A cursor that is not one this API issued, was altered, or belongs to another"
            " sort, filter or date",
            403: "`deleted` other than `exclude`, asked by someone other than an admin",
            422: "Invalid parameters, or numbered and cursor paging parameters together",
        }
    ),
)
def list_tasks(query: TaskListQuery) -> Any:
    actor = current_user()
    if query.cursor_mode:
        return cursor_paginated(*_cursor_page(actor, query))
    return paginated(_tasks_page(actor, query))


@bp.post("/task")
@bp.auth_required(token_auth)
@bp.input(TaskCreateIn, arg_name="body")
@idempotent(bp)
@bp.output(TaskOut, status_code=201)
@bp.doc(
    summary="Create a task",
    description="A `user` can only assign a task to themselves. Safe to retry with an "
    "`Idempotency-Key`.",
    responses=route_responses(
        {
            201: {"description": "The new task", "headers": LOCATION_HEADER},
            403: "A `user` assigning the task to someone else",
            422: "Some fields are invalid, or the assignee does not exist (see `errors`)",
        }
    ),
)
def create_task(body: TaskCreateIn) -> Any:
    task = task_service.create_task(current_user(), task_service.NewTask(**body.model_dump()))
    return task, 201, {"Location": url_for("tasks.get_task", task_id=task.id)}


@bp.get("/task/<int:task_id>")
@bp.auth_required(token_auth)
@cached(lambda _user, _args, task_id: [task_generation(task_id)])
@bp.output(TaskOut)
@bp.doc(
    summary="Get a task",
    description=VISIBILITY + CACHE_DOC,
    responses=route_responses(
        {
            200: {"description": "The task", "headers": {**TASK_HEADERS, **CACHE_HEADERS}},
            304: "Not Modified",
        }
    ),
)
def get_task(task_id: int) -> Any:
    task = task_service.get_task(current_user(), task_id)
    return task, 200, {"ETag": quote_etag(task_service.version_tag(task))}


@bp.put("/task/<int:task_id>")
@bp.auth_required(token_auth)
@bp.input(TaskUpdateIn, arg_name="body")
@bp.output(TaskOut)
@bp.doc(
    summary="Update a task (partial)",
    description="Only the fields in the body change; each change is recorded in the history. "
    + VISIBILITY
    + IF_MATCH_DOC,
    responses=route_responses(
        {
            200: {"description": "The task as changed", "headers": TASK_HEADERS},
            403: "A `user` assigning the task to someone else",
            409: "The task is deleted: restore it first",
            412: "If-Match does not match the task's current ETag",
            422: "Some fields are invalid, or the assignee does not exist (see `errors`)",
        }
    ),
)
def update_task(task_id: int, body: TaskUpdateIn) -> Any:
    task = task_service.update_task(
        current_user(), task_id, body.model_dump(exclude_unset=True), if_match()
    )
    return task, 200, {"ETag": quote_etag(task_service.version_tag(task))}


@bp.delete("/task/<int:task_id>")
@bp.auth_required(token_auth)
@bp.doc(
    summary="Soft-delete a task",
    description="Moderators and admins only; a `user` gets 403 on its own task, 404 on others'."
    + IF_MATCH_DOC,
    responses={
        204: "Deleted",
        403: "A `user` (on a task they may see)",
        409: "Already deleted",
        412: "If-Match does not match the task's current ETag",
    },
)
def delete_task(task_id: int) -> tuple[str, int]:
    task_service.soft_delete_task(current_user(), task_id, if_match())
    return "", 204


@bp.post("/task/<int:task_id>/restore")
@bp.auth_required(token_auth, roles=[Role.ADMIN.value])
@bp.output(TaskOut)
@bp.doc(summary="Restore a soft-deleted task (admin)", responses={409: "The task is not deleted"})
def restore_task(task_id: int) -> Any:
    return task_service.restore_task(current_user(), task_id)


@bp.get("/task/<int:task_id>/history")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(AuditPage)
@bp.doc(summary="A task's audit trail, newest first")
def task_history(task_id: int, query: PageQuery) -> Any:
    return paginated(task_service.task_history(current_user(), task_id, query.page, query.per_page))
