"""The daily task log: one entry, and a task's entries."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint

from app.api.caching import CACHE_HEADERS, cached, scope_generations
from app.api.current_user import current_user
from app.api.pagination import paginated
from app.api.spec.errors import route_responses
from app.extensions import token_auth
from app.schemas.common import PageQuery
from app.schemas.task_logs import LogSnapshotPage
from app.schemas.tasks import TaskListItem
from app.services import task_logs as log_service

bp = APIBlueprint(
    "logs",
    __name__,
    tag={"name": "Daily log", "description": "Daily snapshots of the active tasks"},
)


@bp.get("/logs/<int:log_id>")
@bp.auth_required(token_auth)
@cached(lambda user, _args, log_id: scope_generations(user))
@bp.output(TaskListItem)
@bp.doc(
    summary="One daily-log entry with its task",
    description="Visible to whoever may see the task (others answer 404).",
    responses=route_responses(
        {
            200: {"description": "The entry and its task", "headers": CACHE_HEADERS},
            304: "Not Modified",
        }
    ),
)
def get_log(log_id: int) -> Any:
    return log_service.get_log_entry(current_user(), log_id)


@bp.get("/task/<int:task_id>/logs")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(LogSnapshotPage)
@bp.doc(summary="A task's daily-log entries, newest first")
def task_logs(task_id: int, query: PageQuery) -> Any:
    return paginated(log_service.task_log(current_user(), task_id, query.page, query.per_page))
